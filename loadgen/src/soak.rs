//! `loadgen soak`: minutes of mixed load against one server, judged on two
//! things only: no healthy client loses, duplicates or reorders a message,
//! and none of the server's resources grows without bound.
//!
//! ```text
//! healthy:  W WebSocket + S SSE subscribers in room `soak`      (checked)
//!           publishers into `soak`: WebSocket, REST, and gRPC with
//!           `--grpc` (a python grpcio client, scripts/soak_grpc.py)
//! noise:    churn (clients come and go), slow readers in `soak` and
//!           `soak-bulk` (must be dropped and closed), a bulk REST publisher
//!           in `soak-bulk`, REST into a rotating set of rooms, bad input
//!           from the suite's generator at a low rate
//! sampled:  /proc/PID/status (VmRSS, Threads) and /proc/PID/fd, every few s
//! ```
//!
//! Every message carries a marker (`token`), so each subscriber knows per
//! publisher which sequence numbers it has seen. Publishers run on a fixed
//! schedule and stop at the end; then deliveries drain (bounded) and every
//! subscriber must have all of them. Everything is bounded in count and
//! time, and stops by itself.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::attack::{self, AttackReport};
use crate::churn::{self, ChurnReport, Targets};
use crate::fanout::{self, PublishVia, PublisherConn, PublisherReport, Schedule};
use crate::pool::{settle, ConnectOptions, Pool, SubscribeVia};
use crate::sample::{self, Sample};
use crate::target::Target;
use crate::track::{self, Counts, Trial};
use crate::{token, ws};

mod grpc;
mod summary;

/// `loadgen soak` options.
#[derive(Args, Debug)]
pub struct SoakArgs {
    /// The WebSocket listener.
    #[arg(long, default_value = "ws://127.0.0.1:8081")]
    ws: String,
    /// The HTTP listener.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    http: String,
    /// The server's process id: its /proc entries are sampled.
    #[arg(long)]
    server_pid: u32,
    /// Minutes of load.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Seconds between samples of the server's resources.
    #[arg(long, default_value_t = 5.0)]
    sample_every: f64,
    /// Seconds at the start not judged for growth (default: a fifth of the
    /// run, at least 30).
    #[arg(long)]
    warmup: Option<f64>,
    /// Healthy WebSocket subscribers.
    #[arg(long, default_value_t = 20)]
    ws_subscribers: usize,
    /// Healthy SSE subscribers.
    #[arg(long, default_value_t = 10)]
    sse_subscribers: usize,
    /// Messages per second from the WebSocket publisher.
    #[arg(long, default_value_t = 50.0)]
    ws_rate: f64,
    /// Messages per second from the REST publisher.
    #[arg(long, default_value_t = 20.0)]
    rest_rate: f64,
    /// Clients per second that connect and leave.
    #[arg(long, default_value_t = 10.0)]
    churn_rate: f64,
    /// Seconds between two slow readers.
    #[arg(long, default_value_t = 10.0)]
    slow_every: f64,
    /// Seconds a slow reader stalls before it drains and checks it was closed.
    #[arg(long, default_value_t = 30.0)]
    slow_stall: f64,
    /// Messages per second of `--bulk-size` bytes into `soak-bulk`.
    #[arg(long, default_value_t = 50.0)]
    bulk_rate: f64,
    /// Bytes per bulk message.
    #[arg(long, default_value_t = 8000)]
    bulk_size: usize,
    /// REST messages per second into the rotating rooms.
    #[arg(long, default_value_t = 10.0)]
    rooms_rate: f64,
    /// How many rotating rooms.
    #[arg(long, default_value_t = 20)]
    rooms: u64,
    /// Bad-input cases per second.
    #[arg(long, default_value_t = 4.0)]
    bad_rate: f64,
    /// The gRPC listener (`127.0.0.1:PORT`): adds a gRPC publisher into
    /// `soak`, run as `PYTHON --grpc-script ADDR ...` (grpcio).
    #[arg(long)]
    grpc: Option<String>,
    /// Messages per second from the gRPC publisher.
    #[arg(long, default_value_t = 10.0)]
    grpc_rate: f64,
    /// The gRPC publisher script.
    #[arg(long, default_value = "scripts/soak_grpc.py")]
    grpc_script: String,
    /// The python that runs it (with grpcio and grpcio-tools).
    #[arg(long, env = "SWITCHBOARD_PYTHON", default_value = "python3")]
    python: String,
    /// Seed of the bad input (decimal or 0x hex).
    #[arg(long, env = "BAD_INPUT_SEED", default_value = "0x5eed0017")]
    seed: String,
}

/// Publisher indices in the markers.
const WS_PUBLISHER: usize = 0;
const REST_PUBLISHER: usize = 1;
const GRPC_PUBLISHER: usize = 2;
/// Marker size of healthy messages.
const SIZE: usize = 64;

/// Runs the soak; returns the JSON line and whether it passed.
pub async fn run(a: SoakArgs) -> Result<(Value, bool), String> {
    let seed = parse_seed(&a.seed)?;
    let duration = Duration::from_secs_f64((a.minutes * 60.0).clamp(10.0, 24.0 * 3600.0));
    let warmup_s = a.warmup.unwrap_or((duration.as_secs_f64() / 5.0).max(30.0));
    let ws_base = Target::parse(&a.ws, &["ws"])?;
    let http_base = Target::parse(&a.http, &["http"])?;
    if sample::read(a.server_pid, Duration::ZERO).is_none() {
        return Err(format!(
            "--server-pid {}: no such process in /proc",
            a.server_pid
        ));
    }
    let started = Instant::now();
    let end = started + duration;
    let opts = ConnectOptions {
        concurrency: 32,
        timeout: Duration::from_secs(10),
    };

    eprintln!(
        "loadgen soak: {:.0} s against {} / {} (pid {}), seed {seed:#x}",
        duration.as_secs_f64(),
        a.ws,
        a.http,
        a.server_pid
    );
    let (ws_pool, ws_connect) = Pool::open(
        &SubscribeVia::WebSocket(ws_base.with_path("/ws?room=soak&name=soak-sub".into())),
        a.ws_subscribers,
        opts,
    )
    .await;
    let (sse_pool, sse_connect) = Pool::open(
        &SubscribeVia::Sse(http_base.with_path("/events?room=soak&name=soak-sse".into())),
        a.sse_subscribers,
        opts,
    )
    .await;
    if ws_connect.failed() + sse_connect.failed() > 0 {
        return Err(format!(
            "healthy subscribers failed to connect: {:?} {:?}",
            ws_connect.failures, sse_connect.failures
        ));
    }
    let publisher_bytes = Arc::new(AtomicU64::new(0));
    let ws_pub = fanout::open_publisher(
        &PublishVia::WebSocket(ws_base.with_path("/ws?room=soak&name=soak-pub".into())),
        WS_PUBLISHER,
        opts,
        publisher_bytes.clone(),
    )
    .await
    .map_err(|e| format!("the WebSocket publisher: {e}"))?;
    let rest_pub = fanout::open_publisher(
        &PublishVia::Rest {
            target: http_base.with_path("/rooms/soak/messages".into()),
            api_key: None,
            pipeline: 8,
        },
        REST_PUBLISHER,
        opts,
        publisher_bytes.clone(),
    )
    .await
    .map_err(|e| format!("the REST publisher: {e}"))?;
    let all_subs: Vec<_> = ws_pool.subs.iter().chain(&sse_pool.subs).cloned().collect();
    settle(
        || {
            all_subs
                .iter()
                .map(|s| s.bytes.load(Ordering::Relaxed))
                .sum::<u64>()
        },
        Duration::from_millis(500),
        Duration::from_secs(10),
    )
    .await;

    // The healthy traffic.
    let t0_us = token::now_us() + 20_000;
    let trial = Arc::new(Trial::new(1, if a.grpc.is_some() { 3 } else { 2 }, t0_us));
    for sub in &all_subs {
        track::lock(&sub.state).begin(trial.clone());
    }
    let publish_s = duration.as_secs_f64();
    let deadline_us = t0_us + (publish_s * 1e6) as u64 + 30_000_000;
    let schedule = |publisher: usize, rate: f64| Schedule {
        trial: 1,
        publisher: publisher as u32,
        first_us: t0_us as f64,
        interval_us: 1e6 / rate.max(0.1),
        count: (publish_s * rate).floor().max(1.0) as u64,
        size: SIZE,
        deadline_us,
    };
    let ws_schedule = schedule(WS_PUBLISHER, a.ws_rate);
    let rest_schedule = schedule(REST_PUBLISHER, a.rest_rate);
    let publishers = [
        tokio::spawn(publish(ws_pub, ws_schedule)),
        tokio::spawn(publish(rest_pub, rest_schedule)),
    ];
    let grpc = a.grpc.clone().map(|addr| {
        let command = grpc::command(&a.python, &a.grpc_script, &addr, a.grpc_rate, publish_s);
        tokio::task::spawn_blocking(move || grpc::run(command))
    });

    // The noise.
    let targets = Targets {
        ws: ws_base.clone(),
        http: http_base.clone(),
    };
    let churn_report = Arc::new(Mutex::new(ChurnReport::default()));
    let churn = tokio::spawn(churn::churn(
        targets.clone(),
        a.churn_rate,
        end,
        churn_report.clone(),
    ));
    let stall = Duration::from_secs_f64(a.slow_stall.max(1.0));
    let slow = tokio::spawn(churn::slow_readers(
        targets.clone(),
        "room=soak&room=soak-bulk".into(),
        Duration::from_secs_f64(a.slow_every.max(1.0)),
        stall,
        end.checked_sub(stall + Duration::from_secs(25))
            .unwrap_or(started),
        churn_report.clone(),
    ));
    let bulk_text = "b".repeat(a.bulk_size.clamp(1, 60_000));
    let bulk = tokio::spawn(churn::rest_loop(
        http_base.clone(),
        a.bulk_rate,
        end,
        |_| "/rooms/soak-bulk/messages".to_string(),
        move |_| bulk_text.clone(),
    ));
    let rooms = a.rooms.max(1);
    let rotating = tokio::spawn(churn::rest_loop(
        http_base.clone(),
        a.rooms_rate,
        end,
        move |n| format!("/rooms/soak-r{}/messages", n % rooms),
        |n| format!("room message {n}"),
    ));
    let bad = tokio::spawn(attack::run(
        ws_base.addr,
        http_base.addr,
        seed,
        Duration::from_secs_f64(1.0 / a.bad_rate.max(0.01)),
        end,
    ));

    // The samples.
    let mut samples: Vec<Sample> = Vec::new();
    let every = Duration::from_secs_f64(a.sample_every.max(0.5));
    let mut server_gone = false;
    while Instant::now() < end {
        match sample::read(a.server_pid, started.elapsed()) {
            Some(s) => {
                eprintln!(
                    "  t={:>6.1}s  rss {:>8} KiB  threads {:>5}  fds {:>5}",
                    s.at_s, s.rss_kib, s.threads, s.fds
                );
                samples.push(s);
            }
            None => {
                eprintln!("loadgen soak: the server (pid {}) is gone", a.server_pid);
                server_gone = true;
                break;
            }
        }
        tokio::time::sleep(every.min(end.saturating_duration_since(Instant::now()))).await;
    }

    // The end: publishers finish, deliveries drain, the noise stops.
    let mut reports = Vec::new();
    let mut open = Vec::new();
    for task in publishers {
        match task.await {
            Ok((report, conn)) => {
                reports.push(report);
                open.push(conn);
            }
            Err(_) => reports.push(PublisherReport {
                failure: Some("task".into()),
                ..PublisherReport::default()
            }),
        }
    }
    if let Some(task) = grpc {
        let report = task.await.unwrap_or_else(|_| PublisherReport {
            failure: Some("grpc task".into()),
            ..PublisherReport::default()
        });
        reports.push(report);
    }
    let sent: u64 = reports.iter().map(|r| r.sent).sum();
    let drain_started = Instant::now();
    let expected = sent * all_subs.len() as u64;
    let unique = || -> u64 {
        all_subs
            .iter()
            .map(|s| track::lock(&s.state).counts().unique)
            .sum()
    };
    while unique() < expected && drain_started.elapsed() < Duration::from_secs(15) && !server_gone {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut publisher_failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut publisher_errors = 0;
    for conn in &mut open {
        if let PublisherConn::Ws(c) = conn {
            publisher_errors += c.errors.load(Ordering::Relaxed);
            if let Some(why) = track::lock(&c.ended).clone() {
                *publisher_failures.entry(why).or_default() += 1;
            }
            let mut close = Vec::new();
            ws::encode_close(&mut close);
            let _ = tokio::time::timeout(Duration::from_secs(1), c.write.write_all(&close)).await;
        }
    }
    drop(open);
    for r in &reports {
        publisher_errors += r.errors;
        if let Some(f) = &r.failure {
            *publisher_failures.entry(f.clone()).or_default() += 1;
        }
    }
    let unsent: u64 = reports.iter().map(|r| r.unsent).sum();
    let (bulk_ok, bulk_refused) = bulk.await.unwrap_or_default();
    let (rooms_ok, rooms_refused) = rotating.await.unwrap_or_default();
    let _ = churn.await;
    let _ = slow.await;
    let attacks: AttackReport = bad.await.unwrap_or_default();
    let mut churned = track::lock(&churn_report).clone();
    churned.bulk_published = bulk_ok;
    churned.rooms_published = rooms_ok;
    churned.rooms_refused = rooms_refused + bulk_refused;

    let mut counts = Counts::default();
    let mut lost = 0;
    for sub in &all_subs {
        let c = track::lock(&sub.state).finish();
        lost += sent.saturating_sub(c.unique);
        counts.add(&c);
    }
    let disconnected: Vec<String> = all_subs
        .iter()
        .filter(|s| !s.is_alive())
        .map(|s| track::lock(&s.state).ending.clone().unwrap_or_default())
        .collect();
    if let Some(s) = sample::read(a.server_pid, started.elapsed()) {
        samples.push(s);
    } else {
        server_gone = true;
    }
    let healthz = healthz(&http_base).await;
    let growth = sample::judge(&samples, warmup_s);
    let latency = trial.merged_histogram();

    let mut failures = Vec::new();
    if server_gone {
        failures.push("the server process is gone".to_string());
    }
    if healthz != Some(200) {
        failures.push(format!("/healthz at the end answered {healthz:?}"));
    }
    if lost > 0 || counts.duplicates > 0 || counts.out_of_order > 0 {
        failures.push(format!(
            "healthy subscribers: {lost} lost, {} duplicated, {} out of order",
            counts.duplicates, counts.out_of_order
        ));
    }
    if !disconnected.is_empty() {
        failures.push(format!(
            "{} healthy subscribers disconnected: {disconnected:?}",
            disconnected.len()
        ));
    }
    if unsent > 0 || publisher_errors > 0 || !publisher_failures.is_empty() {
        failures.push(format!(
            "healthy publishers: {unsent} unsent, {publisher_errors} errors, {publisher_failures:?}"
        ));
    }
    let left_open: u64 = churned.slow_left_open.values().sum();
    if left_open > 0 {
        failures.push(format!(
            "{left_open} slow readers were dropped but never closed (issue 17 finding 9)"
        ));
    }
    let churn_total: u64 =
        churned.churned.values().sum::<u64>() + churned.churn_failures.values().sum::<u64>();
    let churn_failed: u64 = churned.churn_failures.values().sum();
    if churn_failed * 50 > churn_total {
        failures.push(format!(
            "{churn_failed} of {churn_total} churn connections failed: {:?}",
            churned.churn_failures
        ));
    }
    for g in growth.iter().filter(|g| !g.passed) {
        failures.push(format!(
            "{} grew: last third up to {}, first third up to {} (limit {})",
            g.name, g.last, g.first, g.limit
        ));
    }
    let passed = failures.is_empty();
    summary::print(&summary::Summary {
        duration,
        warmup_s,
        seed,
        ws_subs: ws_pool.subs.len(),
        sse_subs: sse_pool.subs.len(),
        reports: &reports,
        sent,
        counts,
        lost,
        disconnected: disconnected.len(),
        latency: &latency,
        churned: &churned,
        attacks: &attacks,
        healthz,
        growth: &growth,
        failures: &failures,
    });
    let line = json!({
        "mode": "soak",
        "seconds": duration.as_secs_f64(),
        "warmup_s": warmup_s,
        "seed": format!("{seed:#x}"),
        "subscribers": {"ws": ws_pool.subs.len(), "sse": sse_pool.subs.len()},
        "published": {"ws": reports.first().map_or(0, |r| r.sent), "rest": reports.get(1).map_or(0, |r| r.sent), "grpc": reports.get(2).map(|r| r.sent)},
        "delivered": counts.unique,
        "lost": lost,
        "duplicated": counts.duplicates,
        "out_of_order": counts.out_of_order,
        "disconnects": disconnected,
        "latency_ms": {
            "p50": latency.value_at_quantile(0.5) as f64 / 1000.0,
            "p99": latency.value_at_quantile(0.99) as f64 / 1000.0,
            "max": latency.max() as f64 / 1000.0,
        },
        "churn": churned.churned,
        "churn_failures": churned.churn_failures,
        "slow_readers": {"started": churned.slow_started, "closed": churned.slow_closed, "left_open": churned.slow_left_open, "kept": churned.slow_kept},
        "rooms_published": churned.rooms_published,
        "bulk_published": churned.bulk_published,
        "bad_input": attacks.sent,
        "samples": samples.iter().map(|s| json!([fanout::round2(s.at_s), s.rss_kib, s.threads, s.fds])).collect::<Vec<_>>(),
        "growth": growth.iter().map(|g| json!({"name": g.name, "min": g.min, "max": g.max, "first_third_max": g.first, "last_third_max": g.last, "limit": g.limit, "passed": g.passed})).collect::<Vec<_>>(),
        "healthz": healthz,
        "failures": failures,
        "passed": passed,
    });
    Ok((line, passed))
}

fn parse_seed(text: &str) -> Result<u64, String> {
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|_| format!("--seed {text}: expected a number, e.g. 0x5eed"))
}

async fn publish(mut conn: PublisherConn, schedule: Schedule) -> (PublisherReport, PublisherConn) {
    let report = match &mut conn {
        PublisherConn::Ws(c) => fanout::publish_ws(c, schedule).await,
        PublisherConn::Rest(c) => fanout::publish_rest(c, schedule).await,
    };
    (report, conn)
}

/// `GET /healthz` on a fresh connection: the status, if one came within 5 s.
async fn healthz(http: &Target) -> Option<u16> {
    use tokio::io::AsyncReadExt;
    let exchange = async {
        let mut stream = crate::target::connect(http.addr, Duration::from_secs(5))
            .await
            .ok()?;
        let request = format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            http.host_header
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.ok()?;
        String::from_utf8_lossy(&got)
            .split(' ')
            .nth(1)?
            .parse()
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}
