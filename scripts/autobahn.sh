#!/usr/bin/env bash
# Runs the Autobahn|Testsuite (../shared/autobahn, beside the project) against
# switchboard's /echo, which runs on the same reader/writer code as /ws.
# Starts a release server on a free port, stops it by its PID, exits non-zero
# on any failed case. The suite sends messages up to 16 MiB (cases 9.*), so the
# server runs with a larger --max-message-size than its default.
set -euo pipefail
cd "$(dirname "$0")/.."
suite=${AUTOBAHN_DIR:-../shared/autobahn}
if [ ! -x "$suite/run.sh" ]; then
    echo "autobahn.sh: no Autobahn suite at $suite" >&2
    exit 2
fi
cargo build --release -q --bin switchboard
out=$(mktemp -d)
./target/release/switchboard --ws 127.0.0.1:0 --http 127.0.0.1:0 --max-message-size 20000000 \
    >"$out/stdout" 2>"$out/stderr" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    ws=$(sed -n 's/^listening ws //p' "$out/stdout")
    [ -n "$ws" ] && break
    sleep 0.1
done
[ -n "$ws" ] || { echo "autobahn.sh: the server did not start" >&2; cat "$out/stderr" >&2; exit 1; }
"$suite/run.sh" "ws://$ws/echo"
if grep -q panicked "$out/stderr"; then
    echo "autobahn.sh: the server panicked" >&2
    exit 1
fi
