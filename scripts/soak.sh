#!/usr/bin/env bash
# The soak (issue 17): minutes of mixed load and bad input against a release
# build on 127.0.0.1, while the server's RSS, threads and open files are
# sampled from /proc. It fails if a healthy client loses, duplicates or
# reorders a message, if a slow reader is dropped but never closed, if a
# resource keeps growing after the warm-up (`loadgen soak`, see
# loadgen/README.md), if the server ever printed `panicked`, or if SIGTERM
# does not end it with status 0 within 10 s. Not part of scripts/test.sh.
#
#   scripts/soak.sh                   # 10 minutes
#   scripts/soak.sh --minutes 2       # a quick one
#   scripts/soak.sh --no-grpc         # without the gRPC publisher (and its
#                                     # build feature and python grpcio)
#   scripts/soak.sh --minutes 30 -- --ws-rate 200 --churn-rate 50
#                                     # more loadgen soak options after --
#
# The server runs with --history 50, so every room's history is full well
# within the warm-up and memory that still grows after it is a leak, not
# history filling up.
#
# Everything goes to 127.0.0.1, is bounded in count and time, and stops by
# itself; the server is the only process it stops, by its PID. The JSON
# result is left in target/soak.json, the server's log in target/soak-server.log.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=10
grpc=yes
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes=$2; shift 2 ;;
        --no-grpc) grpc=no; shift ;;
        --) shift; extra=("$@"); break ;;
        *) echo "usage: scripts/soak.sh [--minutes N] [--no-grpc] [-- loadgen soak options]" >&2; exit 2 ;;
    esac
done

server_options=(--history 50)
if [ "$grpc" = yes ]; then
    # The same python as the test suite's gRPC interop test (scripts/test.sh).
    if [ -z "${SWITCHBOARD_PYTHON:-}" ] && [ -x target/test-venv/bin/python ]; then
        export SWITCHBOARD_PYTHON="$PWD/target/test-venv/bin/python"
    fi
    if ! "${SWITCHBOARD_PYTHON:-python3}" -c "import grpc, grpc_tools" 2>/dev/null; then
        echo "soak: the gRPC publisher needs grpcio and grpcio-tools in ${SWITCHBOARD_PYTHON:-python3}" >&2
        echo "      (scripts/test.sh makes target/test-venv with them), or use --no-grpc" >&2
        exit 2
    fi
    cargo build --release -q -p switchboard -p loadgen --features switchboard/grpc
    server_options+=(--grpc 127.0.0.1:0)
else
    cargo build --release -q -p switchboard -p loadgen
fi
source scripts/server.sh
trap stop_server EXIT
start_server "${server_options[@]}"
grpc_options=()
if [ "$grpc" = yes ]; then
    for _ in $(seq 50); do
        SERVER_GRPC=$(sed -n 's/^listening grpc //p' "$(dirname "$SERVER_ERR")/stdout")
        [ -n "$SERVER_GRPC" ] && break
        sleep 0.1
    done
    grpc_options=(--grpc "$SERVER_GRPC")
fi
echo "soak: server pid $SERVER_PID on http $SERVER_HTTP, ws $SERVER_WS, grpc ${SERVER_GRPC:-off}; $minutes minutes"

verdict=0
./target/release/loadgen soak \
    --ws "ws://$SERVER_WS" --http "http://$SERVER_HTTP" "${grpc_options[@]}" \
    --server-pid "$SERVER_PID" --minutes "$minutes" "${extra[@]}" \
    >target/soak.json || verdict=$?

# SIGTERM, then the exit status within 10 s (by PID: the one process we started).
kill -TERM "$SERVER_PID"
for _ in $(seq 100); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "soak: FAIL: the server did not exit within 10 s of SIGTERM" >&2
    kill -KILL "$SERVER_PID"
    verdict=1
fi
exit_status=0
wait "$SERVER_PID" || exit_status=$?
SERVER_PID=""
trap - EXIT
cp "$SERVER_ERR" target/soak-server.log
if [ "$exit_status" != 0 ]; then
    echo "soak: FAIL: the server exited with status $exit_status after SIGTERM" >&2
    verdict=1
fi
if grep -q panicked "$SERVER_ERR"; then
    echo "soak: FAIL: the server panicked:" >&2
    grep -m 5 panicked "$SERVER_ERR" >&2
    verdict=1
fi
echo "soak: server exit status $exit_status, $(grep -c panicked "$SERVER_ERR" || true) panics; result in target/soak.json, log in target/soak-server.log"
if [ "$verdict" = 0 ]; then
    echo "soak: pass"
else
    echo "soak: FAIL (loadgen and checks above)" >&2
fi
exit "$verdict"
