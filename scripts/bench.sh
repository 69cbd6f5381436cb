#!/usr/bin/env bash
# Side-by-side benchmark: switchboard against the Go hub it follows.
#
# Builds switchboard and the load generator in release, builds gorilla/websocket's
# examples/chat from Debian's packages (the example's source comes from the same
# version's Debian *source* package), then runs every scenario against each
# server: a fresh server per run, the server pinned to CPU 0 and the load
# generator to CPU 1, server RSS and threads sampled from /proc/PID/status, each
# server stopped by its PID. Every figure is repeated (3 runs by default) and
# reported as the median with the spread (min-max). The JSON lines go to
# target/bench/; the side-by-side table goes to stdout and target/bench/.
#
# Usage: scripts/bench.sh [--quick] [--runs N] [--only LIST] [--servers LIST]
#   --quick          one run per figure, short trials (a smoke pass, not figures)
#   --runs N         runs per figure (default 3)
#   --only LIST      comma-separated scenarios (default: all):
#                      fanout100 fanout1000 sse1000 latency rates idle5000 broadcast10k
#                      quiet (= quiet0,quiet5000,quiet10000) nodes3
#                    rates: fixed-rate latency at 1000 subscribers, from 40 msg/s
#                      to half the Go hub's 1000-subscriber saturation rate;
#                    quietN: a 10-subscriber room at 20 msg/s beside N idle
#                      connections in another room (the Go hub, which has one
#                      room, runs quiet0 only)
#                    nodes3: three nodes on one Redis against one in memory
#                      (scripts/bench-nodes3.sh; switchboard only)
#   --servers LIST   comma-separated: switchboard,go (default: both)
#   --no-install     do not apt-get install missing tools
# Environment: SWITCHBOARD_BIN, LOADGEN_BIN use prebuilt binaries.
#
# A full run takes about 40 minutes on 2 cores, --quick about 10. Run it on an
# otherwise idle machine: the server and the load generator each get one core,
# and anything else running there shows up in the figures.
# Traffic goes only to 127.0.0.1. Every load generator run is bounded in time.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT="$ROOT/target/bench"
mkdir -p "$OUT"

RUNS=3
QUICK=0
ONLY="fanout100,fanout1000,sse1000,latency,rates,idle5000,broadcast10k,quiet,nodes3"
SERVERS="switchboard,go"
INSTALL=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; RUNS=1 ;;
        --runs) RUNS="$2"; shift ;;
        --only) ONLY="$2"; shift ;;
        --servers) SERVERS="$2"; shift ;;
        --no-install) INSTALL=0 ;;
        -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
        *) echo "bench: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

has() { case ",$1," in *",$2,"*) return 0 ;; *) return 1 ;; esac; }
# wanted SCENARIO: whether --only asks for it (quiet stands for every quietN).
wanted() {
    has "$ONLY" "$1" && return 0
    case "$1" in quiet*) has "$ONLY" quiet ;; *) return 1 ;; esac
}
log() { echo "bench: $*" >&2; }

# Trial shape: full runs measure 5 s windows; --quick 2 s.
if [ "$QUICK" = 1 ]; then
    DUR=2; WARM=0.5; PRECISION=0.15; HOLD=2; IDLE_HOLD=20; LAT_DUR=4
else
    DUR=5; WARM=1; PRECISION=0.05; HOLD=5; IDLE_HOLD=40; LAT_DUR=10
fi

# ---------------------------------------------------------------- tools
need_pkgs=()
command -v taskset >/dev/null || need_pkgs+=(util-linux)
command -v python3 >/dev/null || need_pkgs+=(python3)
if has "$ONLY" nodes3 && has "$SERVERS" switchboard; then
    command -v redis-server >/dev/null || need_pkgs+=(redis-server)
fi
if has "$SERVERS" go; then
    command -v go >/dev/null || need_pkgs+=(golang-go)
    dpkg -s golang-github-gorilla-websocket-dev >/dev/null 2>&1 || need_pkgs+=(golang-github-gorilla-websocket-dev)
    command -v dpkg-source >/dev/null || need_pkgs+=(dpkg-dev)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
    [ "$INSTALL" = 1 ] || { log "missing: ${need_pkgs[*]}"; exit 1; }
    log "installing ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# ---------------------------------------------------------------- kernel limits
# Each switchboard connection is two threads and each thread four memory maps,
# so the default vm.max_map_count (65530) caps a node near 8000 connections
# (the server refuses more with 503 rather than fail). broadcast10k needs more:
# raise the limit for the run, as a deployment would, and put it back after.
MAPS_BEFORE=$(cat /proc/sys/vm/max_map_count 2>/dev/null || echo 0)
restore_maps() { :; }
if [ "$MAPS_BEFORE" -lt 262144 ] && [ "$(id -u)" = 0 ]; then
    sysctl -q -w vm.max_map_count=262144 && log "vm.max_map_count raised to 262144 for this run"
    restore_maps() { sysctl -q -w vm.max_map_count="$MAPS_BEFORE" || true; }
    trap restore_maps EXIT
fi

# ---------------------------------------------------------------- builds
# SWITCHBOARD_BIN / LOADGEN_BIN run prebuilt binaries instead (e.g. to compare
# two builds of the server); by default both are built here.
build_pkgs=()
[ -n "${LOADGEN_BIN:-}" ] || build_pkgs+=(-p loadgen)
has "$SERVERS" switchboard && [ -z "${SWITCHBOARD_BIN:-}" ] && build_pkgs+=(-p switchboard)
if [ ${#build_pkgs[@]} -gt 0 ]; then
    log "building ${build_pkgs[*]} (release)"
    cargo build --release --quiet "${build_pkgs[@]}"
fi
LOADGEN=$(realpath "${LOADGEN_BIN:-$ROOT/target/release/loadgen}")
SWITCHBOARD=$(realpath "${SWITCHBOARD_BIN:-$ROOT/target/release/switchboard}")

GOHUB_DIR="$OUT/gohub"
GOHUB_BIN="$GOHUB_DIR/chat"
GOHUB_SRC=""
build_gohub() {
    # The same source version as the installed -dev package.
    local spec
    spec=$(dpkg-query -W -f='${source:Package}=${source:Version}' golang-github-gorilla-websocket-dev)
    local name=${spec%%=*} version=${spec#*=}
    local upstream=${version%-*}
    GOHUB_SRC="$GOHUB_DIR/$name-$upstream/examples/chat"
    if [ -x "$GOHUB_BIN" ] && [ -f "$GOHUB_SRC/home.html" ] && [ "$(cat "$GOHUB_DIR/version" 2>/dev/null)" = "$spec" ]; then
        return
    fi
    log "fetching Debian source $spec for the Go hub"
    rm -rf "$GOHUB_DIR"
    mkdir -p "$GOHUB_DIR/apt/parts" "$GOHUB_DIR/apt/lists/partial" "$GOHUB_DIR/dl"
    # A private deb-src list derived from the machine's own sources, so the
    # system's apt configuration is left as it is.
    local found=0 f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        sed 's/^Types:.*/Types: deb-src/' "$f" > "$GOHUB_DIR/apt/parts/$(basename "$f")"
        found=1
    done
    if [ -f /etc/apt/sources.list ]; then
        sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > "$GOHUB_DIR/apt/parts/sources.list"
        found=1
    fi
    [ "$found" = 1 ] || { log "no apt sources to derive deb-src from"; exit 1; }
    local apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$GOHUB_DIR/apt/parts"
        -o "Dir::State::Lists=$GOHUB_DIR/apt/lists" -o "APT::Sandbox::User=root")
    apt-get "${apt_opts[@]}" update -qq
    (cd "$GOHUB_DIR/dl" && apt-get "${apt_opts[@]}" source --download-only -qq "$spec" >/dev/null)
    (cd "$GOHUB_DIR" && dpkg-source --no-check -x dl/*.dsc "$name-$upstream" >/dev/null)
    log "building the Go hub ($GOHUB_SRC)"
    (cd "$GOHUB_SRC" && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$GOHUB_DIR/gocache" \
        GOFLAGS= go build -o "$GOHUB_BIN" .)
    echo "$spec" > "$GOHUB_DIR/version"
}
has "$SERVERS" go && build_gohub

# ---------------------------------------------------------------- servers
SERVER_PID=""
SAMPLER_PID=""
WS_URL_BASE=""
HTTP_URL=""

stop_server() {
    if [ -n "$SAMPLER_PID" ]; then
        kill "$SAMPLER_PID" 2>/dev/null || true
        wait "$SAMPLER_PID" 2>/dev/null || true
        SAMPLER_PID=""
    fi
    if [ -n "$SERVER_PID" ]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
# The several-nodes scenario's servers (n3_stop) are stopped on exit too.
# shellcheck source=scripts/bench-nodes3.sh
source "$ROOT/scripts/bench-nodes3.sh"
trap 'n3_stop; stop_server; restore_maps' EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
    local port=$1
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# start_server NAME: starts it pinned to CPU 0, sets SERVER_PID, WS_URL_BASE
# (ws://host:port) and HTTP_URL.
start_server() {
    local name=$1 logf="$OUT/server-$1.log"
    case "$name" in
        switchboard)
            taskset -c 0 "$SWITCHBOARD" --ws 127.0.0.1:0 --http 127.0.0.1:0 --max-connections 20000 \
                > "$OUT/server-stdout" 2> "$logf" &
            SERVER_PID=$!
            local ws="" http=""
            for _ in $(seq 1 150); do
                ws=$(sed -n 's/^listening ws //p' "$OUT/server-stdout" | head -n1)
                http=$(sed -n 's/^listening http //p' "$OUT/server-stdout" | head -n1)
                [ -n "$ws" ] && [ -n "$http" ] && break
                kill -0 "$SERVER_PID" 2>/dev/null || break
                sleep 0.1
            done
            [ -n "$ws" ] && [ -n "$http" ] || { log "switchboard did not start (see $logf)"; return 1; }
            WS_URL_BASE="ws://$ws"
            HTTP_URL="http://$http"
            ;;
        go)
            local port
            port=$(free_port)
            # The example serves home.html from its working directory.
            (cd "$GOHUB_SRC" && exec taskset -c 0 "$GOHUB_BIN" -addr "127.0.0.1:$port") > "$logf" 2>&1 &
            SERVER_PID=$!
            wait_port "$port" || { log "the Go hub did not start (see $logf)"; return 1; }
            WS_URL_BASE="ws://127.0.0.1:$port"
            HTTP_URL=""
            ;;
    esac
}

ws_url() { # SERVER [ROOM]: the Go hub has one room, whatever is asked
    case "$1" in
        switchboard) echo "$WS_URL_BASE/ws?room=${2:-bench}" ;;
        go) echo "$WS_URL_BASE/ws" ;;
    esac
}

# Samples "rss_kb threads" of SERVER_PID every 0.2 s into $1.
start_sampler() {
    local file=$1 pid=$SERVER_PID
    : > "$file"
    (
        while [ -r "/proc/$pid/status" ]; do
            awk '/^VmRSS:/{r=$2} /^Threads:/{t=$2} END{if (r != "") print r, t}' "/proc/$pid/status" \
                >> "$file" 2>/dev/null || break
            sleep 0.2
        done
    ) &
    SAMPLER_PID=$!
}

# ---------------------------------------------------------------- runs
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="$OUT/results-$STAMP.jsonl"
: > "$RESULTS"

# The server's CPU seconds (utime + stime) and context switches (voluntary
# and not, summed over its threads) now: "cpu switches".
server_cost() {
    local pid=$SERVER_PID cpu
    cpu=$(awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$pid/stat" 2>/dev/null) || return 0
    cat /proc/"$pid"/task/*/status 2>/dev/null |
        awk -v c="$cpu" '/^(non)?voluntary_ctxt_switches:/ {s += $2} END {print c, s}'
}

# steady_cost LOADGEN_LOG LOADGEN_PID: once the loadgen says it publishes,
# waits out the warm-up, then prints "seconds cpu switches" of the server over
# most of the run (the second before the end is left out: draining).
steady_cost() {
    local log=$1 lgpid=$2
    for _ in $(seq 1 600); do
        grep -q '^loadgen: trial .* publishing' "$log" 2>/dev/null && break
        kill -0 "$lgpid" 2>/dev/null || return 0
        sleep 0.1
    done
    sleep "$WARM"
    local span before after
    span=$(awk -v d="$LAT_DUR" 'BEGIN { print (d > 2 ? d - 1 : d / 2) }')
    before=$(server_cost)
    sleep "$span"
    after=$(server_cost)
    [ -n "$before" ] && [ -n "$after" ] || return 0
    echo "$span $before $after" | awk '{print $1, $4 - $2, $5 - $3}'
}

# run_one SCENARIO SERVER RUN LOADGEN-ARGS...: one fresh server, one loadgen
# run; appends its JSON line (with server RSS/threads) to $RESULTS. In the
# arguments @WS@ stands for the server's WebSocket URL, @HTTP@ for its HTTP base.
run_one() {
    local scenario=$1 server=$2 run=$3
    shift 3
    start_server "$server" || return 0
    sleep 0.3
    local base
    base=$(awk '/^VmRSS:/{print $2}' "/proc/$SERVER_PID/status")
    local samples="$OUT/samples-$scenario-$server-$run"
    start_sampler "$samples"
    # The server's addresses are known only now: fill in @WS@ (room bench),
    # @WS_QUIET@ and @WS_IDLE@ (rooms quiet and idle) and @HTTP@.
    local args=() a
    for a in "$@"; do
        a=${a//@WS@/$(ws_url "$server")}
        a=${a//@WS_QUIET@/$(ws_url "$server" quiet)}
        a=${a//@WS_IDLE@/$(ws_url "$server" idle)}
        args+=("${a//@HTTP@/$HTTP_URL}")
    done
    local status=0 lglog="$OUT/loadgen-$scenario-$server-$run.log" lgout="$OUT/loadgen-$scenario-$server-$run.json"
    log "$scenario / $server / run $run: loadgen ${args[*]}"
    timeout 1200 taskset -c 1 "$LOADGEN" --label "$server" "${args[@]}" > "$lgout" 2> "$lglog" &
    local lgpid=$!
    # Idle memory is read once every connection is open and the server has
    # gone quiet: no CPU time spent for 2 s (switchboard first delivers the
    # room's `joined` notices, 12.5 M of them at 5000, and the Go hub has
    # none). If it never goes quiet, it is read 1 s before the hold ends, and
    # the JSON line says so (server_quiet_s is then absent).
    local hold="" hold_rss="" hold_threads="" quiet_after=""
    if [ "${args[0]}" = idle ]; then
        for _ in $(seq 1 1800); do
            hold=$(sed -n 's/.*; holding for \([0-9.]*\) s.*/\1/p' "$lglog" 2>/dev/null)
            [ -n "$hold" ] && break
            kill -0 "$lgpid" 2>/dev/null || break
            sleep 0.1
        done
        if [ -n "$hold" ]; then
            local cpu last="" still=0 waited=0 polls
            polls=$(awk -v h="$hold" 'BEGIN { print int((h - 1) * 2) }')
            for _ in $(seq 1 "$polls"); do
                cpu=$(awk '{print $14 + $15}' "/proc/$SERVER_PID/stat" 2>/dev/null || true)
                if [ -n "$last" ] && [ "$cpu" = "$last" ]; then still=$((still + 1)); else still=0; fi
                last=$cpu
                if [ "$still" -ge 4 ]; then quiet_after=$(awk -v w="$waited" 'BEGIN { print w / 2 }'); break; fi
                sleep 0.5
                waited=$((waited + 1))
            done
            hold_rss=$(awk '/^VmRSS:/{print $2}' "/proc/$SERVER_PID/status" 2>/dev/null || true)
            hold_threads=$(awk '/^Threads:/{print $2}' "/proc/$SERVER_PID/status" 2>/dev/null || true)
        fi
    fi
    # Fixed rates: the server's CPU time and context switches while the
    # load alone runs (after the connects and the warm-up), per delivery.
    local steady=""
    case "$scenario" in rate*) steady=$(steady_cost "$lglog" "$lgpid") ;; esac
    wait "$lgpid" || status=$?
    local line
    line=$(cat "$lgout")
    stop_server
    tail -n 3 "$lglog" | sed 's/^/    /' >&2 || true
    [ -n "$line" ] || line='{"error":"loadgen produced no result"}'
    SCENARIO=$scenario SERVER=$server RUN=$run BASE=$base STATUS=$status SAMPLES=$samples LINE=$line \
        HOLD_RSS=$hold_rss HOLD_THREADS=$hold_threads QUIET_AFTER=$quiet_after STEADY=$steady \
        python3 - >> "$RESULTS" <<'EOF'
import json, os
try:
    d = json.loads(os.environ["LINE"])
except ValueError:
    d = {"error": "unparsable loadgen output"}
rss, thr = [], []
for row in open(os.environ["SAMPLES"]):
    parts = row.split()
    if len(parts) == 2:
        rss.append(int(parts[0])); thr.append(int(parts[1]))
d.update(scenario=os.environ["SCENARIO"], server=os.environ["SERVER"], run=int(os.environ["RUN"]),
         loadgen_exit=int(os.environ["STATUS"]), server_rss_base_kb=int(os.environ["BASE"] or 0),
         server_rss_peak_kb=max(rss, default=0), server_threads_peak=max(thr, default=0))
if os.environ.get("HOLD_RSS"):
    d.update(server_rss_hold_kb=int(os.environ["HOLD_RSS"]), server_threads_hold=int(os.environ["HOLD_THREADS"] or 0))
if os.environ.get("QUIET_AFTER"):
    d.update(server_quiet_s=float(os.environ["QUIET_AFTER"]))
if os.environ.get("STEADY") and d.get("rate_offered") and d.get("subscribers"):
    seconds, cpu_s, switches = map(float, os.environ["STEADY"].split())
    deliveries = d["rate_offered"] * d["subscribers"] * seconds
    if deliveries > 0:
        d.update(server_cpu_us_per_delivery=cpu_s * 1e6 / deliveries,
                 server_switches_per_delivery=switches / deliveries,
                 server_core_share=cpu_s / seconds)
print(json.dumps(d, sort_keys=True))
EOF
}

saturate_args() { # SUBSCRIBERS START_RATE
    echo saturate -s "$1" --start-rate "$2" --size 64 -d "$DUR" --warmup "$WARM" --precision "$PRECISION" --max-trials 16
}

servers_for() { # scenario -> servers to run it against
    local s
    for s in switchboard go; do
        has "$SERVERS" "$s" || continue
        [ "$1" = sse1000 ] && [ "$s" = go ] && continue  # the Go hub has no SSE
        # Neighbours in another room need rooms: the Go hub has one.
        case "$1" in quiet5000|quiet10000) [ "$s" = go ] && continue ;; esac
        echo "$s"
    done
}

# Half the Go hub's 1000-subscriber saturation rate: from this invocation's
# fanout1000 runs, else the last recorded one, else 800.
half_go_rate() {
    RESULTS=$RESULTS OUT=$OUT python3 - <<'EOF'
import glob, json, os, statistics
def go_rates(path):
    rates = []
    for row in open(path):
        try:
            d = json.loads(row)
        except ValueError:
            continue
        if d.get("scenario") == "fanout1000" and d.get("server") == "go" and d.get("saturation_rate"):
            rates.append(d["saturation_rate"])
    return rates
rates = go_rates(os.environ["RESULTS"])
for path in sorted(glob.glob(os.path.join(os.environ["OUT"], "results-*.jsonl")), reverse=True):
    if rates:
        break
    rates = go_rates(path)
print(round(statistics.median(rates) / 2) if rates else 800)
EOF
}

for scenario in fanout100 fanout1000 sse1000 latency rates idle5000 broadcast10k quiet0 quiet5000 quiet10000; do
    wanted "$scenario" || continue
    for server in $(servers_for "$scenario"); do
        for run in $(seq 1 "$RUNS"); do
            case "$scenario" in
                fanout100)
                    # shellcheck disable=SC2046
                    run_one "$scenario" "$server" "$run" $(saturate_args 100 2000) --url @WS@ ;;
                fanout1000)
                    # shellcheck disable=SC2046
                    run_one "$scenario" "$server" "$run" $(saturate_args 1000 400) --url @WS@ ;;
                sse1000)
                    # Connects at a moderate pace: this figure is fan-out, the
                    # connect storms are idle5000's and broadcast10k's. A
                    # connection's REST requests are answered one after another,
                    # each after the hub's round (which writes the fan-out), so
                    # 32 publishers' connections keep their round trips from
                    # bounding the rate (2 capped it near 820 msg/s).
                    # shellcheck disable=SC2046
                    run_one "$scenario" "$server" "$run" $(saturate_args 1000 400) --sse --publishers 32 --pipeline 128 --connect-concurrency 32 \
                        --http @HTTP@ --room bench ;;
                latency)
                    rate=$(half_go_rate)
                    run_one "$scenario" "$server" "$run" fanout -s 1000 -p 1 -r "$rate" --size 64 \
                        -d "$LAT_DUR" --warmup "$WARM" --url @WS@ ;;
                rates)
                    # Fixed rates from 40 msg/s, doubling from 100, up to half
                    # the Go hub's saturation rate, each on a fresh server.
                    half=$(half_go_rate)
                    for rate in 40 100 200 400 800 1600 3200; do
                        [ "$rate" -lt "$half" ] || break
                        run_one "rate$rate" "$server" "$run" fanout -s 1000 -p 1 -r "$rate" --size 64 \
                            -d "$LAT_DUR" --warmup "$WARM" --url @WS@
                    done
                    run_one "rate$half" "$server" "$run" fanout -s 1000 -p 1 -r "$half" --size 64 \
                        -d "$LAT_DUR" --warmup "$WARM" --url @WS@ ;;
                quiet0|quiet5000|quiet10000)
                    # One publisher at 20 msg/s into a room of 10, beside N idle
                    # connections in a room of their own (opened first; the
                    # server goes quiet after their join notices before the
                    # room starts). 10,000 idle are 20,000 server threads.
                    run_one "$scenario" "$server" "$run" fanout -s 10 -p 1 -r 20 --size 64 \
                        -d "$LAT_DUR" --warmup "$WARM" --url @WS_QUIET@ \
                        --idle "${scenario#quiet}" --idle-url @WS_IDLE@ --connect-concurrency 64 ;;
                idle5000)
                    run_one "$scenario" "$server" "$run" idle -n 5000 -d "$IDLE_HOLD" --url @WS@ ;;
                broadcast10k)
                    # Everyone must get everything; latency is reported, not judged.
                    run_one "$scenario" "$server" "$run" fanout -s 10000 -p 1 -r 10 --size 64 -d "$HOLD" \
                        --warmup 1 --p99-limit-ms 60000 --settle-timeout 120 --drain-timeout 30 \
                        --url @WS@ ;;
            esac
        done
    done
done

if has "$ONLY" nodes3 && has "$SERVERS" switchboard; then
    run_nodes3
fi

cp "$RESULTS" "$OUT/latest.jsonl"

# ---------------------------------------------------------------- table
machine="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/^Mem:/{print $2}') GiB, $(uname -sr)"
RESULTS=$RESULTS MACHINE=$machine RUNS=$RUNS QUICK=$QUICK python3 - <<'EOF' | tee "$OUT/summary-${STAMP}.txt"
import json, os, statistics

rows = []
for line in open(os.environ["RESULTS"]):
    try:
        rows.append(json.loads(line))
    except ValueError:
        pass

def values(scenario, server, get):
    out = []
    for d in rows:
        if d.get("scenario") == scenario and d.get("server") == server:
            try:
                v = get(d)
            except (KeyError, TypeError, ZeroDivisionError):
                v = None
            if v is not None:
                out.append(float(v))
    return out

def cell(vs, fmt):
    if not vs:
        return "-"
    med = statistics.median(vs)
    if len(vs) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(vs))}-{fmt.format(max(vs))})"

def ratio(a, b):
    if not a or not b or statistics.median(b) == 0:
        return "-"
    return f"{statistics.median(a) / statistics.median(b):.2f}x"

def rss_per_conn(d):
    held = d.get("held") or 0
    rss = d.get("server_rss_hold_kb") or d["server_rss_peak_kb"]
    return (rss - d["server_rss_base_kb"]) / held if held else None

def complete(d):
    exp = d.get("expected_deliveries") or 0
    return 100.0 * d["delivered"] / exp if exp else None

metrics = [
    ("fanout100", "saturation rate (msg/s), 100 WS subs", lambda d: d["saturation_rate"], "{:.0f}"),
    ("fanout100", "  delivered events/s at saturation", lambda d: d["saturation_delivered_per_sec"], "{:.0f}"),
    ("fanout100", "  p99 ms at saturation", lambda d: d["best"]["latency_ms"]["p99"], "{:.1f}"),
    ("fanout1000", "saturation rate (msg/s), 1000 WS subs", lambda d: d["saturation_rate"], "{:.0f}"),
    ("fanout1000", "  delivered events/s at saturation", lambda d: d["saturation_delivered_per_sec"], "{:.0f}"),
    ("fanout1000", "  p99 ms at saturation", lambda d: d["best"]["latency_ms"]["p99"], "{:.1f}"),
    ("sse1000", "saturation rate (msg/s), 1000 SSE subs", lambda d: d["saturation_rate"], "{:.0f}"),
    ("sse1000", "  delivered events/s at saturation", lambda d: d["saturation_delivered_per_sec"], "{:.0f}"),
    ("latency", "rate (msg/s) = half Go's 1000-sub saturation", lambda d: d["rate_offered"], "{:.0f}"),
    ("latency", "  p50 ms", lambda d: d["latency_ms"]["p50"], "{:.2f}"),
    ("latency", "  p99 ms", lambda d: d["latency_ms"]["p99"], "{:.2f}"),
    ("latency", "  p99.9 ms", lambda d: d["latency_ms"]["p999"], "{:.2f}"),
    ("latency", "  lost + disconnects", lambda d: d["lost"] + d["disconnects"], "{:.0f}"),
    ("idle5000", "idle connections held (of 5000)", lambda d: d["held"], "{:.0f}"),
    ("idle5000", "  server RSS per connection, once quiet (kB)", rss_per_conn, "{:.1f}"),
    ("idle5000", "  server quiet after all connected (s)", lambda d: d.get("server_quiet_s"), "{:.1f}"),
    ("idle5000", "  server RSS peak per connection (kB)",
     lambda d: (d["server_rss_peak_kb"] - d["server_rss_base_kb"]) / d["held"] if d.get("held") else None, "{:.1f}"),
    ("idle5000", "  server threads", lambda d: d.get("server_threads_hold") or d["server_threads_peak"], "{:.0f}"),
    ("idle5000", "  connects/s", lambda d: d["connect"]["per_sec"], "{:.0f}"),
    ("idle5000", "  handshake p99 ms", lambda d: d["connect"]["handshake_ms"]["p99"], "{:.1f}"),
    ("broadcast10k", "10k WS clients: connected", lambda d: d["connect"]["connected"], "{:.0f}"),
    ("broadcast10k", "  refused + disconnects", lambda d: d["connect"]["failed"] + d["disconnects"], "{:.0f}"),
    ("broadcast10k", "  deliveries complete (%)", complete, "{:.2f}"),
    ("broadcast10k", "  p99 ms", lambda d: d["latency_ms"]["p99"], "{:.1f}"),
    ("broadcast10k", "  server RSS peak (MB)", lambda d: d["server_rss_peak_kb"] / 1024, "{:.0f}"),
    ("broadcast10k", "  server threads", lambda d: d["server_threads_peak"], "{:.0f}"),
]

# Fixed-rate latency at 1000 subscribers (`rates`), after `latency`.
rate_scenarios = sorted({d["scenario"] for d in rows if str(d.get("scenario", "")).startswith("rate")
                         and d["scenario"][4:].isdigit()}, key=lambda s: int(s[4:]))
at = next(i for i, m in enumerate(metrics) if m[0] == "idle5000")
for n, sc in enumerate(rate_scenarios):
    metrics[at:at] = [
        (sc, f"p50 ms at {sc[4:]} msg/s, 1000 WS subs", lambda d: d["latency_ms"]["p50"], "{:.2f}"),
        (sc, "  p99 ms", lambda d: d["latency_ms"]["p99"], "{:.2f}"),
        (sc, "  lost + disconnects", lambda d: d["lost"] + d["disconnects"], "{:.0f}"),
        (sc, "  server CPU us per delivery", lambda d: d.get("server_cpu_us_per_delivery"), "{:.2f}"),
        (sc, "  server context switches per delivery", lambda d: d.get("server_switches_per_delivery"), "{:.2f}"),
    ]
    at += 5
# A quiet room beside idle neighbours (`quiet`).
for n in (0, 5000, 10000):
    beside = "alone" if n == 0 else f"beside {n} idle"
    metrics += [
        (f"quiet{n}", f"quiet room (10 subs, 20 msg/s) {beside}: p50 ms", lambda d: d["latency_ms"]["p50"], "{:.2f}"),
        (f"quiet{n}", "  p99 ms", lambda d: d["latency_ms"]["p99"], "{:.2f}"),
        (f"quiet{n}", "  max ms", lambda d: d["latency_ms"]["max"], "{:.2f}"),
    ]
    if n:
        metrics.append((f"quiet{n}", "  idle neighbours held", lambda d: d["idle"]["connect"]["connected"] - d["idle"]["disconnects"], "{:.0f}"))

table = [("figure", "switchboard", "Go hub (gorilla chat)", "ratio")]
for scenario, title, get, fmt in metrics:
    sb = values(scenario, "switchboard", get)
    go = values(scenario, "go", get)
    if not sb and not go:
        continue
    table.append((title, cell(sb, fmt), cell(go, fmt), ratio(sb, go)))

widths = [max(len(r[i]) for r in table) for i in range(4)]
runs = os.environ["RUNS"]
print()
print(f"machine: {os.environ['MACHINE']}; server pinned to CPU 0, loadgen to CPU 1")
print(f"median of {runs} run(s), (min-max) spread; 64-byte messages; saturation = highest rate with "
      "p99 <= 100 ms, no loss, no disconnect, publisher on schedule"
      + ("; QUICK MODE: short trials, not figures" if os.environ["QUICK"] == "1" else ""))
print()
for i, r in enumerate(table):
    print("  ".join(c.ljust(widths[j]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(r)))
    if i == 0:
        print("  ".join("-" * w for w in widths))
print("(ratio = switchboard / Go hub, medians)")

def med(scenario, server, get):
    vs = values(scenario, server, get)
    return statistics.median(vs) if vs else None

def verdict(ok):
    return "n/a (not measured)" if ok is None else ("met" if ok else "MISSED")

def both(a, b, test):
    return None if a is None or b is None else test(a, b)

# A search that found no passing rate counts as 0, not as "not measured".
deliv = lambda d: (d.get("saturation_delivered_per_sec") or 0) if "saturation_rate" in d else None
sb1000, go1000 = med("fanout1000", "switchboard", deliv), med("fanout1000", "go", deliv)
sb100, go100 = med("fanout100", "switchboard", deliv), med("fanout100", "go", deliv)
sse1000 = med("sse1000", "switchboard", deliv)
p99 = lambda d: d["latency_ms"]["p99"]
lat_sb, lat_go = med("latency", "switchboard", p99), med("latency", "go", p99)
rss_sb, rss_go = med("idle5000", "switchboard", rss_per_conn), med("idle5000", "go", rss_per_conn)
b10k = [d for d in rows if d.get("scenario") == "broadcast10k" and d.get("server") == "switchboard"]
b10k_ok = None
if b10k:
    b10k_ok = all(d.get("connect", {}).get("connected") == 10000 and d.get("connect", {}).get("failed") == 0
                  and d.get("disconnects") == 0 and d.get("lost") == 0 and d.get("sent", 0) > 0 for d in b10k)
print()
print("targets (issue 6):")
print(f"  fan-out to 1000 WS subs >= 1.5x the Go hub's delivered/s: {verdict(both(sb1000, go1000, lambda a, b: a >= 1.5 * b))}")
print(f"  fan-out to 100 WS subs >= the Go hub's delivered/s:        {verdict(both(sb100, go100, lambda a, b: a >= b))}")
print(f"  p99 at half the Go hub's 1000-sub rate <= the Go hub's:   {verdict(both(lat_sb, lat_go, lambda a, b: a <= b))}")
print(f"  10,000 WS clients all receiving, none refused or dropped: {verdict(b10k_ok)}")
print(f"  RSS per idle WS connection <= 1.5x the Go hub's:          {verdict(both(rss_sb, rss_go, lambda a, b: a <= 1.5 * b))}")
sse_vs_ws = verdict(both(sse1000, sb1000, lambda a, b: a >= 0.8 * b))
if sb1000 == 0:
    sse_vs_ws = "n/a (no WebSocket rate passed)"
print(f"  SSE fan-out to 1000 within 20 % of WS fan-out to 1000:    {sse_vs_ws}")
print()
print("targets (issue 19):")
for n in (5000, 10000):
    q = med(f"quiet{n}", "switchboard", p99)
    print(f"  quiet room p99 <= 5 ms beside {n:>5} idle connections:    {verdict(None if q is None else q <= 5)}")
pairs = [(sc, med(sc, "switchboard", p99), med(sc, "go", p99)) for sc in rate_scenarios]
pairs = [(sc, a, b) for sc, a, b in pairs if a is not None and b is not None]
missed = [sc[4:] for sc, a, b in pairs if a > b]
rates_ok = None if not pairs else not missed
print(f"  p99 at 1000 subs <= the Go hub's at each fixed rate:      {verdict(rates_ok)}"
      + (f" (missed at {', '.join(missed)} msg/s)" if missed else ""))
print()
print(f"JSON lines: {os.path.relpath(os.environ['RESULTS'])}")
EOF
summary_nodes3 | tee -a "$OUT/summary-${STAMP}.txt"
