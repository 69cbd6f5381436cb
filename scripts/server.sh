# Sourced by the scripts that need a running server: start_server starts the
# release binary on free ports with the given extra options, waits for its
# `listening ws ADDR` line, and sets SERVER_PID, SERVER_WS, SERVER_HTTP,
# SERVER_GRPC (with --grpc) and SERVER_ERR (its stderr file). The caller stops it by that PID (stop_server).

start_server() {
    local out
    out=$(mktemp -d)
    ./target/release/switchboard --ws 127.0.0.1:0 --http 127.0.0.1:0 "$@" \
        >"$out/stdout" 2>"$out/stderr" &
    SERVER_PID=$!
    SERVER_ERR="$out/stderr"
    SERVER_WS=""
    for _ in $(seq 100); do
        SERVER_WS=$(sed -n 's/^listening ws //p' "$out/stdout")
        SERVER_HTTP=$(sed -n 's/^listening http //p' "$out/stdout")
        SERVER_GRPC=$(sed -n 's/^listening grpc //p' "$out/stdout")
        [ -n "$SERVER_WS" ] && return 0
        sleep 0.1
    done
    echo "the server did not start:" >&2
    cat "$SERVER_ERR" >&2
    return 1
}

stop_server() {
    [ -n "${SERVER_PID:-}" ] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
