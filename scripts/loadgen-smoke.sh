#!/usr/bin/env bash
# Smoke run of the load generator against a running server: 20 WebSocket
# subscribers, 2 publishers, 200 msgs/s for 2 s. Fails (non-zero) on any lost,
# duplicated or out-of-order event, any disconnect, a refused connection, a
# publisher error, or nothing delivered. Latency is reported, not judged: a
# shared CI machine may be slow, and this checks correctness, not speed.
#
# Usage: scripts/loadgen-smoke.sh WS_ADDR|WS_URL [extra loadgen fanout options]
#   WS_ADDR  e.g. 127.0.0.1:8081 (becomes ws://127.0.0.1:8081/ws?room=loadgen-smoke)
#   WS_URL   e.g. ws://127.0.0.1:8081/ws?room=smoke
# The load generator is built with cargo unless LOADGEN names a binary.
set -euo pipefail

if [ $# -lt 1 ]; then
    sed -n '2,11p' "$0" >&2
    exit 2
fi
target=$1
shift
case "$target" in
    ws://*) url=$target ;;
    *) url="ws://$target/ws?room=loadgen-smoke" ;;
esac

cd "$(dirname "$0")/.."
loadgen=${LOADGEN:-}
if [ -z "$loadgen" ]; then
    loadgen=$(cargo build -q -p loadgen --message-format=json-render-diagnostics | python3 -c '
import json, sys
exe = [m["executable"] for m in map(json.loads, sys.stdin)
       if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "loadgen" and m.get("executable")]
print(exe[-1] if exe else "")')
fi
[ -x "$loadgen" ] || { echo "loadgen-smoke: no loadgen binary" >&2; exit 2; }

status=0
line=$(timeout 120 "$loadgen" --threads 1 fanout --url "$url" --subscribers 20 --publishers 2 --rate 200 \
    --size 64 --duration 2 --warmup 0.5 --p99-limit-ms 10000 --settle-timeout 20 --drain-timeout 10 "$@") || status=$?
if [ -z "$line" ]; then
    echo "loadgen-smoke: loadgen gave no result (exit $status)" >&2
    exit 1
fi
LINE=$line python3 - <<'EOF'
import json, os, sys
d = json.loads(os.environ["LINE"])
problems = []
for key in ("lost", "duplicated", "out_of_order", "disconnects", "publisher_errors", "unsent"):
    if d.get(key, 1) != 0:
        problems.append(f"{key}={d.get(key)}")
if d["connect"]["failed"] != 0:
    problems.append(f"refused={d['connect']['failures']}")
if d.get("publisher_failures"):
    problems.append(f"publisher_failures={d['publisher_failures']}")
if not d.get("sent") or d.get("delivered") != d.get("expected_deliveries"):
    problems.append(f"delivered {d.get('delivered')} of {d.get('expected_deliveries')}")
lat = d.get("latency_ms", {})
summary = (f"{d.get('subscribers')} subscribers, {d.get('sent')} sent, {d.get('delivered')} delivered, "
           f"p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms")
if problems:
    print("loadgen-smoke: FAIL: " + ", ".join(problems) + f" ({summary})", file=sys.stderr)
    sys.exit(1)
print(f"loadgen-smoke: ok: {summary}", file=sys.stderr)
EOF
