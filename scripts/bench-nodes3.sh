# Sourced by scripts/bench.sh: the several-nodes scenario, `nodes3`
# (issue 20, docs/redis.md "Measured").
#
# One redis-server and three switchboard nodes on it (`--redis`), all on
# 127.0.0.1 on free ports and pinned to CPU 0 as bench.sh pins its one server;
# the load generator on CPU 1 spreads 1000 WebSocket subscribers over the
# three nodes (one `--url` per node, round-robin) and publishes on node a.
# Beside it, in the same run, one node in memory on CPU 0 with the same load.
# Each figure is one loadgen run against servers started for the run and
# stopped by their PIDs after it:
#   saturate     the saturation rate (bench.sh's saturate shape)
#   fixed500     p50/p99 at a fixed 500 msgs/s
#   atsat        three nodes at the one-node saturation rate of this run: is
#                Redis (or anything else) the bound there?
# Around every loadgen run the CPU time of redis-server, of the nodes, and of
# the nodes' relay threads (`redis-sub`), command threads (`redis-cmd`) and
# hubs (`hub`) is read from /proc (utime + stime), so that a missed target
# says what bound it. Uses bench.sh's OUT, RESULTS, LOADGEN, SWITCHBOARD, DUR,
# WARM, PRECISION, LAT_DUR, log, free_port, wait_port.

N3_PIDS=()       # nodes and redis-server of the scenario, stopped by PID
N3_REDIS_PID=""
N3_URLS=()       # ws://ADDR/ws?room=bench, one per node
N3_TICK=$(getconf CLK_TCK)

n3_stop() {
    local pid
    # Nodes first (SIGTERM, then SIGKILL after 5 s), Redis last.
    for pid in "${N3_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${N3_PIDS[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    N3_PIDS=()
    if [ -n "$N3_REDIS_PID" ]; then
        kill -TERM "$N3_REDIS_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$N3_REDIS_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$N3_REDIS_PID" 2>/dev/null || true
        wait "$N3_REDIS_PID" 2>/dev/null || true
        N3_REDIS_PID=""
    fi
    N3_URLS=()
}

# n3_node NAME [OPTIONS...]: one switchboard on CPU 0; appends its PID and URL.
n3_node() {
    local name=$1 out="$OUT/nodes3-$1"
    shift
    taskset -c 0 "$SWITCHBOARD" --ws 127.0.0.1:0 --http 127.0.0.1:0 --max-connections 20000 "$@" \
        > "$out.stdout" 2> "$out.log" &
    local pid=$! ws="" http=""
    N3_PIDS+=("$pid")
    for _ in $(seq 1 150); do
        ws=$(sed -n 's/^listening ws //p' "$out.stdout" | head -n1)
        http=$(sed -n 's/^listening http //p' "$out.stdout" | head -n1)
        [ -n "$ws" ] && [ -n "$http" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$ws" ] && [ -n "$http" ] || { log "node $name did not start (see $out.log)"; return 1; }
    # On Redis a node listens at once but publishes only once it has
    # subscribed: wait for /healthz to say 200.
    python3 - "http://$http/healthz" <<'EOF' || { log "node $name never healthy (see $out.log)"; return 1; }
import sys, time, urllib.request
deadline = time.time() + 15
while time.time() < deadline:
    try:
        if urllib.request.urlopen(sys.argv[1], timeout=1).status == 200:
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.1)
sys.exit(1)
EOF
    N3_URLS+=("ws://$ws/ws?room=bench")
}

# n3_start three|memory
n3_start() {
    if [ "$1" = memory ]; then
        n3_node m
        return
    fi
    local port
    port=$(free_port)
    mkdir -p "$OUT/nodes3-redis"
    taskset -c 0 redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$OUT/nodes3-redis" > "$OUT/nodes3-redis.log" 2>&1 &
    N3_REDIS_PID=$!
    wait_port "$port" || { log "redis-server did not start (see $OUT/nodes3-redis.log)"; return 1; }
    local n
    for n in a b c; do
        n3_node "$n" --redis "redis://127.0.0.1:$port" --node-name "$n" || return 1
    done
}

# CPU ticks (utime + stime) of a process, or of its threads named $2.
n3_ticks() {
    local pid=$1 comm=${2:-} t sum=0 v
    if [ -z "$comm" ]; then
        awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || echo 0
        return
    fi
    for t in /proc/"$pid"/task/*; do
        [ "$(cat "$t/comm" 2>/dev/null)" = "$comm" ] || continue
        v=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "$t/stat" 2>/dev/null || echo 0)
        sum=$((sum + v))
    done
    echo "$sum"
}

# "redis nodes relay cmd hub" ticks, the nodes' columns summed over the nodes.
n3_cpu() {
    local redis=0 nodes=0 relay=0 cmd=0 hub=0 pid
    [ -n "$N3_REDIS_PID" ] && redis=$(n3_ticks "$N3_REDIS_PID")
    for pid in "${N3_PIDS[@]}"; do
        nodes=$((nodes + $(n3_ticks "$pid")))
        relay=$((relay + $(n3_ticks "$pid" redis-sub)))
        cmd=$((cmd + $(n3_ticks "$pid" redis-cmd)))
        hub=$((hub + $(n3_ticks "$pid" hub)))
    done
    echo "$redis $nodes $relay $cmd $hub"
}

# n3_run FIGURE SETUP RUN LOADGEN-ARGS...: fresh servers, one loadgen run,
# one JSON line into $RESULTS (scenario nodes3, server = SETUP).
n3_run() {
    local figure=$1 setup=$2 run=$3
    shift 3
    n3_start "$setup" || { n3_stop; return 0; }
    local args=() u
    for u in "${N3_URLS[@]}"; do args+=(--url "$u"); done
    local tag="nodes3-$figure-$setup-$run"
    log "nodes3 $figure / $setup / run $run: loadgen $* ${args[*]}"
    local before after started ended status=0
    before=$(n3_cpu)
    started=$(date +%s.%N)
    timeout 1200 taskset -c 1 "$LOADGEN" --label "$setup" "$@" "${args[@]}" \
        > "$OUT/loadgen-$tag.json" 2> "$OUT/loadgen-$tag.log" || status=$?
    ended=$(date +%s.%N)
    after=$(n3_cpu)
    n3_stop
    tail -n 3 "$OUT/loadgen-$tag.log" | sed 's/^/    /' >&2 || true
    FIGURE=$figure SETUP=$setup RUN=$run STATUS=$status BEFORE=$before AFTER=$after \
        WALL=$(awk -v a="$started" -v b="$ended" 'BEGIN { print b - a }') TICK=$N3_TICK \
        LINE=$(cat "$OUT/loadgen-$tag.json") python3 - >> "$RESULTS" <<'EOF'
import json, os
try:
    d = json.loads(os.environ["LINE"])
except ValueError:
    d = {"error": "loadgen produced no result"}
tick = float(os.environ["TICK"])
before = [int(x) for x in os.environ["BEFORE"].split()]
after = [int(x) for x in os.environ["AFTER"].split()]
wall = float(os.environ["WALL"])
cpu = {k: (a - b) / tick for k, a, b in zip(["redis", "nodes", "relay", "cmd", "hub"], after, before)}
d.update(scenario="nodes3", figure=os.environ["FIGURE"], server=os.environ["SETUP"],
         run=int(os.environ["RUN"]), loadgen_exit=int(os.environ["STATUS"]), wall_s=round(wall, 2),
         cpu_s={k: round(v, 2) for k, v in cpu.items()},
         cpu_share={k: round(v / wall, 3) for k, v in cpu.items()} if wall > 0 else {})
print(json.dumps(d, sort_keys=True))
EOF
}

# The median one-node saturation rate of this run so far (the `atsat` rate).
n3_memory_rate() {
    RESULTS=$RESULTS python3 - <<'EOF'
import json, os, statistics
rates = []
for row in open(os.environ["RESULTS"]):
    try:
        d = json.loads(row)
    except ValueError:
        continue
    if d.get("scenario") == "nodes3" and d.get("figure") == "saturate" and d.get("server") == "memory":
        rates.append(d.get("saturation_rate") or 0)
print(round(statistics.median(rates)) if rates and statistics.median(rates) > 0 else 400)
EOF
}

run_nodes3() {
    command -v redis-server >/dev/null || { log "nodes3 needs redis-server (apt-get install redis-server)"; return 0; }
    local run setup
    for run in $(seq 1 "$RUNS"); do
        for setup in memory three; do
            # shellcheck disable=SC2046
            n3_run saturate "$setup" "$run" $(saturate_args 1000 400)
            n3_run fixed500 "$setup" "$run" fanout -s 1000 -p 1 -r 500 --size 64 -d "$LAT_DUR" --warmup "$WARM"
        done
        n3_run atsat three "$run" fanout -s 1000 -p 1 -r "$(n3_memory_rate)" --size 64 -d "$LAT_DUR" --warmup "$WARM"
    done
}

# The nodes3 table and its targets, from $RESULTS.
summary_nodes3() {
    RESULTS=$RESULTS python3 - <<'EOF'
import json, os, statistics
rows = []
for line in open(os.environ["RESULTS"]):
    try:
        d = json.loads(line)
    except ValueError:
        continue
    if d.get("scenario") == "nodes3":
        rows.append(d)
if not rows:
    raise SystemExit(0)

def vals(figure, setup, get):
    out = []
    for d in rows:
        if d.get("figure") == figure and d.get("server") == setup:
            try:
                v = get(d)
            except (KeyError, TypeError):
                v = None
            if v is not None:
                out.append(float(v))
    return out

def med(vs):
    return statistics.median(vs) if vs else None

def cell(vs, fmt):
    if not vs:
        return "-"
    if len(vs) == 1:
        return fmt.format(vs[0])
    return f"{fmt.format(statistics.median(vs))} ({fmt.format(min(vs))}-{fmt.format(max(vs))})"

sat = lambda d: d.get("saturation_rate") or 0
p = lambda q: (lambda d: d["latency_ms"][q])
share = lambda k: (lambda d: 100 * d["cpu_share"][k])
lines = [
    ("saturation rate (msg/s), 1000 WS subs", "saturate", sat, "{:.0f}"),
    ("  Redis CPU over the search (% of a core)", "saturate", share("redis"), "{:.0f}"),
    ("p50 ms at 500 msg/s", "fixed500", p("p50"), "{:.2f}"),
    ("p99 ms at 500 msg/s", "fixed500", p("p99"), "{:.2f}"),
    ("  lost + disconnects", "fixed500", lambda d: d["lost"] + d["disconnects"], "{:.0f}"),
    ("  Redis CPU (% of a core)", "fixed500", share("redis"), "{:.0f}"),
    ("  nodes' CPU, all threads (% of a core)", "fixed500", share("nodes"), "{:.0f}"),
    ("  nodes' relay threads (% of a core)", "fixed500", share("relay"), "{:.0f}"),
]
table = [("figure", "3 nodes on Redis", "1 node in memory")]
for title, figure, get, fmt in lines:
    table.append((title, cell(vals(figure, "three", get), fmt), cell(vals(figure, "memory", get), fmt)))
at_rate = vals("atsat", "three", lambda d: d["rate_offered"])
if at_rate:
    passed = vals("atsat", "three", lambda d: 1 if d.get("passed") else 0)
    rates = ", ".join(f"{r:.0f}" for r in at_rate)
    table.append((f"3 nodes at each run's 1-node saturation rate ({rates} msg/s): passed",
                   f"{sum(passed):.0f} of {len(passed)}", ""))
    table.append(("  p99 ms", cell(vals("atsat", "three", p("p99")), "{:.2f}"), ""))
    table.append(("  sent msg/s", cell(vals("atsat", "three", lambda d: d["rate_sent"]), "{:.0f}"), ""))
    for k, name in [("redis", "Redis"), ("nodes", "nodes, all threads"), ("relay", "nodes' relay threads"),
                    ("cmd", "nodes' command threads"), ("hub", "nodes' hubs")]:
        table.append((f"  {name} CPU (% of a core)", cell(vals("atsat", "three", share(k)), "{:.0f}"), ""))
widths = [max(len(r[i]) for r in table) for i in range(3)]
print()
print("several nodes (issue 20): redis-server and 3 nodes pinned to CPU 0, or 1 node in memory on CPU 0;")
print("loadgen on CPU 1, 1000 WS subscribers round-robin over the nodes, 1 publisher on node a")
print()
for i, r in enumerate(table):
    print("  ".join(c.ljust(widths[j]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(r)))
    if i == 0:
        print("  ".join("-" * w for w in widths))

def verdict(ok):
    return "n/a (not measured)" if ok is None else ("met" if ok else "MISSED")
p99_3, p99_1 = med(vals("fixed500", "three", p("p99"))), med(vals("fixed500", "memory", p("p99")))
p99_ok = None if p99_3 is None or p99_1 is None else p99_3 <= 2 * p99_1
redis_at = med(vals("atsat", "three", share("redis")))
# Redis is "not the bound" when, at the one-node saturation rate, it used
# less than half of its one core.
redis_ok = None if redis_at is None else redis_at < 50
print()
print("targets (issue 20):")
print(f"  p99 at 500 msg/s, 3 nodes within 2x of 1 node in memory:  {verdict(p99_ok)}")
print(f"  Redis not the bound below the 1-node saturation rate:    {verdict(redis_ok)}")
print("    (met = Redis used under half its core with 3 nodes at that rate)")
EOF
}
