//! `loadgen`: load generator for WebSocket / SSE broadcast hubs.
//!
//! It measures what people choose a hub by: how many events per second it fans
//! out, how late they arrive, whether any are lost, and how many clients it
//! holds. It works against any WebSocket broadcast server (markers are found in
//! whatever frame carries them, see [`token`]), so the same binary measures
//! switchboard and the hubs it is compared with, in the same run.
//!
//! It is a separate workspace member because it uses tokio: ten thousand client
//! connections cannot each have a thread next to a thread-per-connection server
//! under test on a machine capped at 32768 threads, and the server crate itself
//! stays free of an async runtime.
//!
//! Modes (each prints a table on stderr and one JSON line on stdout):
//! - `fanout`: S WebSocket subscribers, P publishers at a fixed total rate;
//! - `sse-fanout`: the same with SSE subscribers and REST publishers;
//! - `idle`: hold N WebSocket connections; connect rate, failures, handshake
//!   latency;
//! - `saturate`: step the rate up until a trial fails, bisect, report the
//!   highest rate that passed;
//! - `soak`: minutes of mixed load and bad input against one server; fails
//!   on any lost message or a resource of the server that keeps growing.
//!
//! Every mode is bounded in count and time and stops by itself; only loopback
//! targets are accepted.

mod attack;
mod churn;
mod fanout;
mod http;
mod pool;
mod sample;
mod soak;
mod target;
mod token;
mod track;
mod ws;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use fanout::{round2, Limits, Load, PublishVia, TrialResult};
use pool::{ConnectOptions, ConnectReport, Pool, SubscribeVia};
use target::Target;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for WebSocket / SSE broadcast hubs (loopback only)"
)]
struct Cli {
    /// Runtime worker threads (default: the CPUs this process may run on).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// A label copied into the JSON line (e.g. the server's name).
    #[arg(long, global = true, default_value = "")]
    label: String,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// WebSocket subscribers, WebSocket publishers, fixed rate.
    Fanout(FanoutArgs),
    /// SSE subscribers, REST publishers, fixed rate.
    SseFanout(SseFanoutArgs),
    /// Hold N WebSocket connections open for a while.
    Idle(IdleArgs),
    /// Find the highest rate that passes (p99, no loss, no disconnect, publisher on time).
    Saturate(SaturateArgs),
    /// Minutes of mixed load and bad input; fails on a lost message or a
    /// resource of the server (RSS, threads, fds) that keeps growing.
    Soak(soak::SoakArgs),
}

#[derive(Args, Debug, Clone)]
struct ConnectArgs {
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// Seconds allowed for TCP connect plus handshake.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
}

impl ConnectArgs {
    fn options(&self) -> ConnectOptions {
        ConnectOptions {
            concurrency: self.connect_concurrency,
            timeout: secs(self.connect_timeout),
        }
    }
}

#[derive(Args, Debug, Clone)]
struct LoadArgs {
    /// Subscriber connections.
    #[arg(long, short = 's', default_value_t = 100)]
    subscribers: usize,
    /// Publisher connections.
    #[arg(long, short = 'p', default_value_t = 1)]
    publishers: usize,
    /// Total messages per second, all publishers together.
    #[arg(long, short = 'r', default_value_t = 1000.0)]
    rate: f64,
    /// Message size in bytes (the marker, padded).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Measured seconds.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up before the measured window (checked for loss, not timed).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds of silence that count as "subscribers settled" before publishing.
    #[arg(long, default_value_t = 0.5)]
    settle_quiet: f64,
    /// Longest wait in seconds for that silence.
    #[arg(long, default_value_t = 60.0)]
    settle_timeout: f64,
    /// Longest wait in seconds for deliveries after the last send.
    #[arg(long, default_value_t = 10.0)]
    drain_timeout: f64,
    /// The drain also ends when nothing new arrived for this many seconds.
    #[arg(long, default_value_t = 5.0)]
    drain_stall: f64,
    /// p99 latency limit in milliseconds for the pass verdict.
    #[arg(long, default_value_t = 100.0)]
    p99_limit_ms: f64,
    #[command(flatten)]
    connect: ConnectArgs,
}

impl LoadArgs {
    fn load(&self, rate: f64) -> Load {
        Load {
            rate,
            size: self.size,
            publishers: self.publishers.max(1),
            duration: secs(self.duration),
            warmup: secs(self.warmup),
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            settle_quiet: secs(self.settle_quiet),
            settle_timeout: secs(self.settle_timeout),
            drain_timeout: secs(self.drain_timeout),
            drain_stall: secs(self.drain_stall),
            p99_limit: Duration::from_secs_f64(self.p99_limit_ms.max(0.0) / 1000.0),
            connect: self.connect.options(),
        }
    }
}

#[derive(Args, Debug, Clone)]
struct WsArgs {
    /// WebSocket URL subscribers connect to, path and query included.
    /// Repeat it to spread the subscribers over several servers, round-robin
    /// (subscriber i connects to the i-th URL modulo their number).
    #[arg(long, default_value = "ws://127.0.0.1:8081/ws?room=bench")]
    url: Vec<String>,
    /// WebSocket URL publishers connect to (default: the first --url).
    #[arg(long)]
    pub_url: Option<String>,
    /// Text frame every connection sends right after its handshake, for
    /// servers that subscribe by message (e.g. '{"type":"join","room":"bench"}').
    #[arg(long)]
    join_message: Option<String>,
}

#[derive(Args, Debug, Clone)]
struct SseArgs {
    /// Base URL of the hub's HTTP listener.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    http: String,
    /// Room to subscribe to and publish into.
    #[arg(long, default_value = "bench")]
    room: String,
    /// REST requests allowed in flight (unanswered) per publisher connection.
    #[arg(long, default_value_t = 64)]
    pipeline: usize,
    /// Bearer key for REST publishing (when the hub requires one).
    #[arg(long, env = "LOADGEN_API_KEY")]
    api_key: Option<String>,
}

#[derive(Args, Debug)]
struct FanoutArgs {
    #[command(flatten)]
    ws: WsArgs,
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    idle: NeighbourArgs,
}

/// Idle neighbours: connections held open elsewhere on the server while the
/// measured room runs (what a quiet room pays for a crowded server).
#[derive(Args, Debug)]
struct NeighbourArgs {
    /// Idle WebSocket connections opened first, and held through the run.
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// Where they connect (a room of their own on a hub that has rooms).
    #[arg(long, default_value = "ws://127.0.0.1:8081/ws?room=idle")]
    idle_url: String,
    /// Longest wait in seconds for the server to go quiet once they are in
    /// (switchboard tells each member of a room about every join).
    #[arg(long, default_value_t = 180.0)]
    idle_settle_timeout: f64,
}

#[derive(Args, Debug)]
struct SseFanoutArgs {
    #[command(flatten)]
    sse: SseArgs,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args, Debug)]
struct IdleArgs {
    /// WebSocket URL, path and query included.
    #[arg(long, default_value = "ws://127.0.0.1:8081/ws?room=bench")]
    url: String,
    /// Connections to open and hold.
    #[arg(long, short = 'n', default_value_t = 1000)]
    connections: usize,
    /// Seconds to hold them after the last one connected.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Args, Debug)]
struct SaturateArgs {
    /// Subscribe over SSE and publish over REST instead of WebSocket.
    #[arg(long)]
    sse: bool,
    #[command(flatten)]
    ws: WsArgs,
    #[command(flatten)]
    sse_args: SseArgs,
    #[command(flatten)]
    load: LoadArgs,
    /// First rate tried (msgs/s); --rate is ignored.
    #[arg(long, default_value_t = 200.0)]
    start_rate: f64,
    /// Highest rate tried.
    #[arg(long, default_value_t = 1_000_000.0)]
    max_rate: f64,
    /// Factor between steps while passing.
    #[arg(long, default_value_t = 2.0)]
    step: f64,
    /// Stop bisecting when the bracket is narrower than this fraction.
    #[arg(long, default_value_t = 0.05)]
    precision: f64,
    /// Most trials in all, retries included (bounds the run's time).
    #[arg(long, default_value_t = 16)]
    max_trials: usize,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 86_400.0))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Ten thousand sockets need more than the usual soft limit of 1024.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("loadgen: cannot raise RLIMIT_NOFILE: {e}");
    }
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let label = cli.label.clone();
    let outcome = runtime.block_on(async move {
        match cli.mode {
            Mode::Fanout(a) => run_fanout(a).await,
            Mode::SseFanout(a) => run_sse_fanout(a).await,
            Mode::Idle(a) => run_idle(a).await,
            Mode::Saturate(a) => run_saturate(a).await,
            Mode::Soak(a) => soak::run(a).await,
        }
    });
    // Dropping the runtime would wait for nothing useful; close sockets now.
    runtime.shutdown_background();
    match outcome {
        Ok((mut line, passed)) => {
            if let Value::Object(map) = &mut line {
                map.insert("label".into(), Value::String(label));
                map.insert("loadgen_threads".into(), json!(threads));
            }
            println!("{line}");
            if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

type Outcome = Result<(Value, bool), String>;

fn ws_targets(ws: &WsArgs) -> Result<(SubscribeVia, PublishVia), String> {
    let mut subs = Vec::with_capacity(ws.url.len());
    for url in &ws.url {
        let mut sub = Target::parse(url, &["ws"])?;
        sub.join_message = ws.join_message.clone();
        subs.push(sub);
    }
    let first = subs.first().cloned().ok_or("--url: at least one")?;
    let mut publ = match &ws.pub_url {
        Some(u) => Target::parse(u, &["ws"])?,
        None => first.clone(),
    };
    publ.join_message = ws.join_message.clone();
    let sub = if subs.len() == 1 {
        SubscribeVia::WebSocket(first)
    } else {
        SubscribeVia::WebSocketSpread(subs)
    };
    Ok((sub, PublishVia::WebSocket(publ)))
}

fn sse_targets(sse: &SseArgs) -> Result<(SubscribeVia, PublishVia), String> {
    let room = &sse.room;
    if room.is_empty()
        || !room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    {
        return Err(format!("--room {room}: use letters, digits, _ - ."));
    }
    let base = Target::parse(sse.http.trim_end_matches('/'), &["http"])?;
    let prefix = base.path.trim_end_matches('/').to_string();
    Ok((
        SubscribeVia::Sse(base.with_path(format!("{prefix}/events?room={room}"))),
        PublishVia::Rest {
            target: base.with_path(format!("{prefix}/rooms/{room}/messages")),
            api_key: sse.api_key.clone(),
            pipeline: sse.pipeline,
        },
    ))
}

fn connect_json(r: &ConnectReport) -> Value {
    let h = &r.handshake_us;
    json!({
        "requested": r.requested,
        "connected": r.connected,
        "failed": r.failed(),
        "failures": r.failures,
        "seconds": round2(r.elapsed.as_secs_f64()),
        "per_sec": round2(r.rate()),
        "handshake_ms": {
            "p50": h.value_at_quantile(0.5) as f64 / 1000.0,
            "p99": h.value_at_quantile(0.99) as f64 / 1000.0,
            "max": h.max() as f64 / 1000.0,
        },
    })
}

fn connect_rows(r: &ConnectReport) -> Vec<(String, String)> {
    let h = &r.handshake_us;
    vec![
        (
            "connected".into(),
            format!(
                "{} of {} in {:.2} s ({:.0}/s), {} failed {:?}",
                r.connected,
                r.requested,
                r.elapsed.as_secs_f64(),
                r.rate(),
                r.failed(),
                r.failures
            ),
        ),
        (
            "handshake p50/p99/max".into(),
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
                h.max() as f64 / 1000.0
            ),
        ),
    ]
}

fn print_table(title: &str, rows: &[(String, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    eprintln!("== {title}");
    for (k, v) in rows {
        eprintln!("  {k:<width$}  {v}");
    }
}

async fn fanout_once(
    mode: &str,
    target: &str,
    sub: SubscribeVia,
    publ: PublishVia,
    args: &LoadArgs,
) -> Outcome {
    eprintln!(
        "loadgen {mode}: connecting {} subscribers to {target}",
        args.subscribers
    );
    let (pool, connected) = Pool::open(&sub, args.subscribers, args.connect.options()).await;
    let result = fanout::run_trial(&pool, &publ, &args.load(args.rate), &args.limits(), 1).await;
    let mut rows = vec![("target".to_string(), target.to_string())];
    rows.extend(connect_rows(&connected));
    rows.extend(result.rows());
    print_table(mode, &rows);
    let passed = result.failures().is_empty() && connected.failed() == 0;
    let mut line = json!({
        "mode": mode,
        "target": target,
        "publishers": args.publishers,
        "size": args.size,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "connect": connect_json(&connected),
        "passed": passed,
    });
    merge(&mut line, result.to_json());
    line["passed"] = json!(passed);
    Ok((line, passed))
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        for (k, v) in b {
            a.entry(k).or_insert(v);
        }
    }
}

async fn run_fanout(a: FanoutArgs) -> Outcome {
    let (sub, publ) = ws_targets(&a.ws)?;
    if a.idle.idle == 0 {
        return fanout_once("fanout", &a.ws.url.join(" "), sub, publ, &a.load).await;
    }
    let via = SubscribeVia::WebSocket(Target::parse(&a.idle.idle_url, &["ws"])?);
    eprintln!(
        "loadgen fanout: opening {} idle neighbours at {}",
        a.idle.idle, a.idle.idle_url
    );
    let (neighbours, opened) = Pool::open(&via, a.idle.idle, a.load.connect.options()).await;
    let quiet = pool::settle(
        || neighbours.bytes_received(),
        secs(1.0),
        secs(a.idle.idle_settle_timeout),
    )
    .await;
    eprintln!(
        "loadgen fanout: {} idle neighbours connected ({} failed){}",
        opened.connected,
        opened.failed(),
        if quiet { "; quiet" } else { "; NOT quiet" }
    );
    let (mut line, passed) = fanout_once("fanout", &a.ws.url.join(" "), sub, publ, &a.load).await?;
    let disconnects = neighbours.disconnected();
    line["idle"] = json!({
        "requested": a.idle.idle,
        "connect": connect_json(&opened),
        "quiet_before_run": quiet,
        "disconnects": disconnects,
    });
    let passed = passed && opened.failed() == 0 && disconnects == 0;
    line["passed"] = json!(passed);
    drop(neighbours);
    Ok((line, passed))
}

async fn run_sse_fanout(a: SseFanoutArgs) -> Outcome {
    let (sub, publ) = sse_targets(&a.sse)?;
    fanout_once("sse-fanout", &a.sse.http, sub, publ, &a.load).await
}

async fn run_idle(a: IdleArgs) -> Outcome {
    let via = SubscribeVia::WebSocket(Target::parse(&a.url, &["ws"])?);
    eprintln!(
        "loadgen idle: opening {} connections to {}",
        a.connections, a.url
    );
    let (pool, connected) = Pool::open(&via, a.connections, a.connect.options()).await;
    eprintln!(
        "loadgen idle: {} connected; holding for {:.0} s",
        connected.connected, a.duration
    );
    let hold_started = Instant::now();
    let hold = secs(a.duration);
    while hold_started.elapsed() < hold {
        tokio::time::sleep(Duration::from_millis(200).min(hold)).await;
    }
    let disconnects = pool.disconnected();
    let endings = pool.endings();
    let mut rows = vec![("target".to_string(), a.url.clone())];
    rows.extend(connect_rows(&connected));
    rows.push((
        "held".into(),
        format!(
            "{} for {:.1} s",
            connected.connected - disconnects,
            hold.as_secs_f64()
        ),
    ));
    rows.push(("disconnects".into(), format!("{disconnects} {endings:?}")));
    let passed = connected.failed() == 0 && disconnects == 0;
    rows.push((
        "verdict".into(),
        if passed { "pass".into() } else { "fail".into() },
    ));
    print_table("idle", &rows);
    let line = json!({
        "mode": "idle",
        "target": a.url,
        "connect": connect_json(&connected),
        "held": connected.connected - disconnects,
        "hold_s": a.duration,
        "disconnects": disconnects,
        "disconnect_reasons": endings,
        "passed": passed,
    });
    Ok((line, passed))
}

async fn run_saturate(a: SaturateArgs) -> Outcome {
    let (sub, publ, target) = if a.sse {
        let (s, p) = sse_targets(&a.sse_args)?;
        (s, p, a.sse_args.http.clone())
    } else {
        let (s, p) = ws_targets(&a.ws)?;
        (s, p, a.ws.url.join(" "))
    };
    let mode = if a.sse { "saturate-sse" } else { "saturate" };
    let limits = a.load.limits();
    let mut pool: Option<Pool> = None;
    let mut trials: Vec<(f64, TrialResult)> = Vec::new();
    let mut best: Option<(f64, TrialResult)> = None;
    let mut first_fail: Option<f64> = None;
    let mut connect_summary = Value::Null;
    let mut rate = a.start_rate.max(1.0);
    let mut halvings = 0;
    let mut retried_rate: Option<f64> = None;

    for trial_id in 1..=a.max_trials.max(1) as u32 {
        // A fresh pool when there is none or the last trial lost subscribers.
        if pool.as_ref().is_none_or(|p| p.disconnected() > 0) {
            drop(pool.take());
            eprintln!(
                "loadgen {mode}: connecting {} subscribers to {target}",
                a.load.subscribers
            );
            let (p, report) = Pool::open(&sub, a.load.subscribers, a.load.connect.options()).await;
            connect_summary = connect_json(&report);
            if report.failed() > 0 {
                print_table(mode, &connect_rows(&report));
                let line = json!({"mode": mode, "target": target, "connect": connect_summary, "passed": false, "error": "subscribers failed to connect"});
                return Ok((line, false));
            }
            pool = Some(p);
        }
        let Some(p) = pool.as_ref() else { break };
        let result = fanout::run_trial(p, &publ, &a.load.load(rate), &limits, trial_id).await;
        let failures = result.failures();
        let verdict = if failures.is_empty() {
            "pass".to_string()
        } else if result.endings.is_empty() {
            format!("FAIL {}", failures.join(", "))
        } else {
            format!("FAIL {} {:?}", failures.join(", "), result.endings)
        };
        eprintln!(
            "  trial {trial_id:>2}: {rate:>9.0} msg/s  sent {:>9.0}/s  delivered {:>11.0}/s  p99 {:>8.2} ms  lost {:>7}  disc {:>4}  {}",
            result.rate_sent,
            result.delivered_per_sec,
            if result.latency_us.is_empty() { f64::NAN } else { result.latency_ms(99.0) },
            result.lost,
            result.disconnects,
            verdict
        );
        let passed = failures.is_empty();
        trials.push((rate, result.clone()));
        // One bad trial (a GC pause, a cold cache) must not cap the search: a
        // rate fails only when it fails twice in a row.
        if !passed && retried_rate != Some(rate) {
            retried_rate = Some(rate);
            eprintln!("            retrying {rate:.0} msg/s once");
            continue;
        }
        if passed {
            if best.as_ref().is_none_or(|(r, _)| rate > *r) {
                best = Some((rate, result));
            }
        } else {
            first_fail = Some(first_fail.map_or(rate, |f: f64| f.min(rate)));
        }
        let lo = best.as_ref().map(|(r, _)| *r);
        rate = match (lo, first_fail) {
            (Some(lo), None) => {
                let next = (lo * a.step.max(1.1)).min(a.max_rate);
                if next <= lo {
                    break;
                }
                next
            }
            (Some(lo), Some(hi)) => {
                if (hi - lo) / lo <= a.precision {
                    break;
                }
                ((lo + hi) / 2.0).round()
            }
            (None, Some(hi)) => {
                halvings += 1;
                if halvings > 4 {
                    break;
                }
                (hi / 2.0).max(1.0)
            }
            (None, None) => break,
        };
    }

    let best_rate = best.as_ref().map_or(0.0, |(r, _)| *r);
    let mut rows = vec![
        ("target".to_string(), target.clone()),
        ("subscribers".into(), a.load.subscribers.to_string()),
        (
            "highest passing rate".into(),
            format!("{best_rate:.0} msg/s"),
        ),
    ];
    if let Some((_, r)) = &best {
        rows.extend(r.rows());
    }
    print_table(mode, &rows);
    let trial_lines: Vec<Value> = trials
        .iter()
        .map(|(rate, r)| {
            json!({
                "rate": rate,
                "passed": r.failures().is_empty(),
                "delivered_per_sec": round2(r.delivered_per_sec),
                "p99_ms": if r.latency_us.is_empty() { Value::Null } else { json!(r.latency_ms(99.0)) },
                "lost": r.lost,
                "disconnects": r.disconnects,
                "disconnect_reasons": r.endings,
                "failures": r.failures(),
            })
        })
        .collect();
    let mut line = json!({
        "mode": mode,
        "target": target,
        "subscribers": a.load.subscribers,
        "publishers": a.load.publishers,
        "size": a.load.size,
        "duration_s": a.load.duration,
        "saturation_rate": best_rate,
        "first_failing_rate": first_fail,
        "connect": connect_summary,
        "trials": trial_lines,
        "passed": best.is_some(),
    });
    if let Some((_, r)) = &best {
        line["best"] = r.to_json();
        line["saturation_delivered_per_sec"] = json!(round2(r.delivered_per_sec));
    }
    let passed = best.is_some();
    Ok((line, passed))
}
