#!/usr/bin/env bash
# Guards what an idle connection costs: holds 300 idle WebSockets open on a
# running server and checks, in /proc/PID/smaps, that each connection's two
# thread stacks have touched at most two pages each (8 KiB). A thread keeps
# every stack page it ever touched, so one frame grown past a page boundary
# costs 4 KiB on every connection for good (docs/performance.md, "Idle
# connections keep little"); this has happened three times unnoticed.
# Only the release build's frames matter: run it against one.
#
# Usage: scripts/stacks.sh WS_ADDR SERVER_PID   (LOADGEN names the loadgen binary)
set -euo pipefail
[ $# -eq 2 ] || { sed -n '2,10p' "$0" >&2; exit 2; }
addr=$1 pid=$2
loadgen=${LOADGEN:-./target/release/loadgen}
connections=300

timeout 60 "$loadgen" --threads 1 idle --url "ws://$addr/ws?room=stacks" \
    -n "$connections" -d 4 >/dev/null 2>&1 &
lg=$!
# Wait (with a deadline) until every connection's reader and writer exist.
for _ in $(seq 200); do
    threads=$(awk '/^Threads:/{print $2}' "/proc/$pid/status")
    [ "$threads" -ge $((2 * connections)) ] && break
    sleep 0.05
done
sleep 1 # let the last handshakes finish their opening steps
status=0
python3 - "$pid" "$connections" <<'PY' || status=$?
import re, sys
pid, connections = sys.argv[1], int(sys.argv[2])
# Stack sizes from src/os/threads.rs: readers 256 KiB, writers 128 KiB.
sizes = {256: "reader", 128: "writer"}
rss = {256: [], 128: []}
size = None
for line in open(f"/proc/{pid}/smaps"):
    m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) rw-p 00000000 00:00 0\s*$", line)
    if m:
        size = (int(m.group(2), 16) - int(m.group(1), 16)) // 1024
    elif re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
        size = None
    elif line.startswith("Rss:") and size in rss:
        rss[size].append(int(line.split()[1]))
failed = False
for size, kind in sizes.items():
    touched = sorted(rss[size])
    deep = [kb for kb in touched if kb > 8]
    median = touched[len(touched) // 2] if touched else 0
    print(f"stacks: {len(touched)} {kind} stacks, median {median} kB, {len(deep)} deeper than 8 kB")
    # A handful of long-lived threads (accept loops, the hub) share the sizes.
    if len(touched) < connections or len(deep) > 10:
        failed = True
if failed:
    print("stacks: connection threads touch more than two pages of stack", file=sys.stderr)
    sys.exit(1)
PY
wait "$lg" || true
exit $status
