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
source scripts/server.sh
trap stop_server EXIT
start_server --max-message-size 20000000
"$suite/run.sh" "ws://$SERVER_WS/echo"
if grep -q panicked "$SERVER_ERR"; then
    echo "autobahn.sh: the server panicked" >&2
    exit 1
fi
