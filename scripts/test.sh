#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need
# (headless Chromium for the page test; Python grpcio, in a virtual
# environment of the suite's own, for the gRPC interop test), then checks
# formatting and lints, proves the default build has no
# async runtime, runs every lesson in examples/ to completion and every
# test with every feature (then the suite again with every test server on
# Redis), the Autobahn WebSocket
# compliance suite against /echo, a smoke run of the load generator, and a
# check that an idle connection's thread stacks stay small.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "system packages"
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# The --redis tests start redis-server themselves, one per test (tests/redis_support).
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# Debian's python3 makes virtual environments only with python3-venv.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        sudo apt-get update -qq
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
fi
echo "chromium: $(chromium --version 2>/dev/null || echo missing)"
echo "redis-server: $(redis-server --version 2>/dev/null || echo missing)"

step "python packages (gRPC interop test), in target/test-venv"
# A virtual environment of our own: a stock Debian refuses pip on its own
# Python (externally-managed-environment), and the machine's stays untouched.
[ -x target/test-venv/bin/python ] || python3 -m venv target/test-venv
target/test-venv/bin/python -m pip install -q --disable-pip-version-check grpcio grpcio-tools
export SWITCHBOARD_PYTHON="$PWD/target/test-venv/bin/python"
export SWITCHBOARD_REQUIRE_INTEROP=1

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -q -- -D warnings

step "the default build pulls in no async runtime"
if cargo tree -e normal --prefix none -p switchboard | grep -E '^(tokio|tonic|async-std|smol) '; then
    echo "test.sh: the default build depends on an async runtime" >&2
    exit 1
fi
echo "ok: no tokio, tonic, async-std or smol without --features grpc"

step "build everything (load generator and benchmarks included)"
cargo build --workspace --all-targets --all-features -q

step "every lesson in examples/ runs to completion"
# Built just above. Without SWITCHBOARD_URL / SWITCHBOARD_HTTP each lesson
# starts what it needs in its own process on 127.0.0.1; each must end by
# itself (in well under 10 s), so one that hangs fails here.
for source in examples/*.rs; do
    lesson=$(basename "$source" .rs)
    log="target/lesson-$lesson.log"
    started=$SECONDS
    if env -u SWITCHBOARD_URL -u SWITCHBOARD_HTTP \
        timeout 30 "target/debug/examples/$lesson" >"$log" 2>&1; then
        echo "ok: $lesson ($((SECONDS - started)) s)"
    else
        status=$?
        cat "$log"
        [ "$status" = 124 ] && why="still running after 30 s" || why="exit status $status"
        echo "test.sh: lesson $lesson failed: $why" >&2
        exit 1
    fi
done

step "cargo test, every feature"
cargo test --workspace --all-features
# The patched tiny_http's own unit tests, with the fix's regression test
# (vendor/tiny_http/PATCHES.md).
cargo test -p tiny_http --lib

step "cargo test again, every test server on Redis"
# One node alone on Redis must give the same results as the in-memory
# engine: every server the suite starts on the default engine runs on a
# redis-server of its own (tests/common). The tests about what the memory
# engine does on purpose differently (docs/redis.md) say "skipped on Redis"
# on stderr and return. Built already: this costs only the run.
started=$SECONDS
SWITCHBOARD_TEST_REDIS=1 cargo test -p switchboard --all-features --tests
echo "ok: the suite on Redis ($((SECONDS - started)) s)"

step "Autobahn|Testsuite against /echo"
if [ -d ../shared/autobahn ]; then
    scripts/autobahn.sh
else
    echo "skipped: ../shared/autobahn is not beside the project"
fi

step "load generator smoke run"
cargo build --release -q -p switchboard -p loadgen
source scripts/server.sh
trap stop_server EXIT
start_server
LOADGEN=./target/release/loadgen scripts/loadgen-smoke.sh "$SERVER_WS"
stop_server

step "an idle connection's stacks stay at two pages each (release build)"
start_server
LOADGEN=./target/release/loadgen scripts/stacks.sh "$SERVER_WS" "$SERVER_PID"
stop_server
trap - EXIT
echo
echo "test.sh: all passed"
