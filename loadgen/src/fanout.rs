//! One fan-out trial: publishers send at a fixed total rate for a fixed time to
//! a pool of subscribers that are already connected and quiet; then the
//! deliveries drain and every subscriber's counts are collected.
//!
//! Each publisher follows its own fixed schedule (`t0 + offset + seq·interval`,
//! offsets staggered so the total rate is smooth) and stamps every message with
//! its *scheduled* time. Whenever it wakes it sends everything that is due in
//! one write; if the server pushes back it sends late, and the lateness is in
//! every latency it causes. Nothing is ever skipped to catch up, and the run
//! stops by itself: a publisher gives up at a hard deadline and reports what it
//! could not send.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::http::RestPublisher;
use crate::pool::{settle, ConnectOptions, Pool};
use crate::target::{self, ConnectError, Target};
use crate::token::{self, Marker};
use crate::track::{self, Counts, Trial};
use crate::ws::{self, FrameReader};

/// Most messages one publisher puts into one write.
const MAX_BATCH: usize = 256;

/// How publishers send.
#[derive(Debug, Clone)]
pub enum PublishVia {
    /// WebSocket text frames on a connection to this URL.
    WebSocket(Target),
    /// `POST` to this URL (`/rooms/{room}/messages`), at most `pipeline`
    /// requests unanswered.
    Rest {
        /// Where to post.
        target: Target,
        /// Sent as `Authorization: Bearer KEY` when set.
        api_key: Option<String>,
        /// Unanswered requests allowed per connection.
        pipeline: usize,
    },
}

/// The offered load of one trial.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Messages per second, all publishers together.
    pub rate: f64,
    /// Message size in bytes (the marker padded).
    pub size: usize,
    /// Number of publisher connections.
    pub publishers: usize,
    /// Measured time.
    pub duration: Duration,
    /// Time before the measured window: sent and checked for loss, not timed.
    pub warmup: Duration,
}

/// Time limits and pass criteria of a trial.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Silence that counts as "settled" before publishing starts.
    pub settle_quiet: Duration,
    /// Longest wait for that silence.
    pub settle_timeout: Duration,
    /// Longest wait for deliveries after the last message was sent.
    pub drain_timeout: Duration,
    /// The drain also ends when nothing new arrived for this long.
    pub drain_stall: Duration,
    /// A trial passes only with p99 at or below this.
    pub p99_limit: Duration,
    /// Connect options for the publishers.
    pub connect: ConnectOptions,
}

/// Everything a trial measured.
#[derive(Debug, Clone)]
pub struct TrialResult {
    /// The load that was offered.
    pub rate_offered: f64,
    /// Messages actually sent per second of publishing.
    pub rate_sent: f64,
    /// Messages sent.
    pub sent: u64,
    /// Messages the publishers could not send before their deadline.
    pub unsent: u64,
    /// Subscribers taking part (connected and alive when it started).
    pub subscribers: usize,
    /// Per-subscriber counts, summed.
    pub counts: Counts,
    /// Deliveries that never arrived (sent × subscribers − unique received).
    pub lost: u64,
    /// Timed deliveries per second of the measured window.
    pub delivered_per_sec: f64,
    /// Subscribers of the pool whose connection has ended (during the trial or
    /// before it started).
    pub disconnects: usize,
    /// How they ended.
    pub endings: BTreeMap<String, u64>,
    /// Latency histogram (µs) of the timed deliveries.
    pub latency_us: Histogram<u64>,
    /// Largest delay between a message's scheduled and actual send time.
    pub publisher_max_lag_us: u64,
    /// Error frames or non-2xx answers the publishers got.
    pub publisher_errors: u64,
    /// Publisher connections that failed or ended early.
    pub publisher_failures: BTreeMap<String, u64>,
    /// Whether the pool was quiet before publishing started.
    pub settled: bool,
    /// Time from the last send until deliveries stopped.
    pub drain: Duration,
    /// The p99 limit the pass verdict used.
    pub p99_limit: Duration,
}

impl TrialResult {
    /// p-th percentile latency in milliseconds.
    pub fn latency_ms(&self, percentile: f64) -> f64 {
        self.latency_us.value_at_quantile(percentile / 100.0) as f64 / 1000.0
    }

    /// Whether the publishers kept to their schedule.
    pub fn publisher_behind(&self) -> bool {
        self.unsent > 0
            || self.rate_sent < 0.99 * self.rate_offered
            || self.publisher_max_lag_us
                > u64::try_from(self.p99_limit.as_micros()).unwrap_or(u64::MAX)
    }

    /// Why the trial failed, empty when it passed: p99 over the limit, any
    /// loss, duplicate, disconnect, publisher error or a publisher behind.
    pub fn failures(&self) -> Vec<String> {
        let mut why = Vec::new();
        if self.latency_us.is_empty() {
            why.push("no timed deliveries".to_string());
        } else if self.latency_ms(99.0) > self.p99_limit.as_secs_f64() * 1000.0 {
            why.push(format!("p99 {:.1} ms", self.latency_ms(99.0)));
        }
        if self.lost > 0 {
            why.push(format!("{} lost", self.lost));
        }
        if self.counts.duplicates > 0 {
            why.push(format!("{} duplicated", self.counts.duplicates));
        }
        if self.disconnects > 0 {
            why.push(format!("{} disconnects", self.disconnects));
        }
        if self.publisher_errors > 0 || !self.publisher_failures.is_empty() {
            why.push("publisher errors".to_string());
        }
        if self.publisher_behind() {
            why.push("publisher behind".to_string());
        }
        why
    }

    /// The trial as a JSON object.
    pub fn to_json(&self) -> Value {
        let h = &self.latency_us;
        let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
        json!({
            "rate_offered": self.rate_offered,
            "rate_sent": round2(self.rate_sent),
            "sent": self.sent,
            "unsent": self.unsent,
            "subscribers": self.subscribers,
            "expected_deliveries": self.sent * self.subscribers as u64,
            "delivered": self.counts.unique,
            "delivered_per_sec": round2(self.delivered_per_sec),
            "lost": self.lost,
            "duplicated": self.counts.duplicates,
            "out_of_order": self.counts.out_of_order,
            "stale": self.counts.stale,
            "malformed": self.counts.malformed,
            "disconnects": self.disconnects,
            "disconnect_reasons": self.endings,
            "latency_ms": {
                "p50": ms(h.value_at_quantile(0.50)),
                "p90": ms(h.value_at_quantile(0.90)),
                "p99": ms(h.value_at_quantile(0.99)),
                "p999": ms(h.value_at_quantile(0.999)),
                "max": ms(h.max()),
                "mean": round2(h.mean() / 1000.0),
                "count": h.len(),
            },
            "publisher_max_lag_ms": ms(self.publisher_max_lag_us),
            "publisher_behind": self.publisher_behind(),
            "publisher_errors": self.publisher_errors,
            "publisher_failures": self.publisher_failures,
            "settled": self.settled,
            "drain_ms": self.drain.as_millis() as u64,
            "passed": self.failures().is_empty(),
            "failures": self.failures(),
        })
    }

    /// Rows for the human-readable table.
    pub fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            (
                "offered rate".into(),
                format!("{:.0} msg/s", self.rate_offered),
            ),
            (
                "sent rate".into(),
                format!(
                    "{:.0} msg/s ({} sent, {} unsent)",
                    self.rate_sent, self.sent, self.unsent
                ),
            ),
            ("subscribers".into(), self.subscribers.to_string()),
            (
                "delivered".into(),
                format!(
                    "{:.0} events/s ({} of {})",
                    self.delivered_per_sec,
                    self.counts.unique,
                    self.sent * self.subscribers as u64
                ),
            ),
            (
                "lost / dup / out-of-order".into(),
                format!(
                    "{} / {} / {}",
                    self.lost, self.counts.duplicates, self.counts.out_of_order
                ),
            ),
            (
                "disconnects".into(),
                format!("{} {:?}", self.disconnects, self.endings),
            ),
        ];
        if !self.latency_us.is_empty() {
            rows.push((
                "latency p50/p99/p99.9/max".into(),
                format!(
                    "{:.2} / {:.2} / {:.2} / {:.2} ms",
                    self.latency_ms(50.0),
                    self.latency_ms(99.0),
                    self.latency_ms(99.9),
                    self.latency_us.max() as f64 / 1000.0
                ),
            ));
        }
        rows.push((
            "publisher lag max / errors".into(),
            format!(
                "{:.2} ms / {} {:?}",
                self.publisher_max_lag_us as f64 / 1000.0,
                self.publisher_errors,
                self.publisher_failures
            ),
        ));
        let failures = self.failures();
        rows.push((
            "verdict".into(),
            if failures.is_empty() {
                "pass".into()
            } else {
                format!("fail: {}", failures.join(", "))
            },
        ));
        rows
    }
}

/// Rounds to two decimals for the JSON line.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// What one publisher did.
#[derive(Debug, Default)]
pub(crate) struct PublisherReport {
    pub(crate) sent: u64,
    pub(crate) unsent: u64,
    pub(crate) max_lag_us: u64,
    pub(crate) errors: u64,
    pub(crate) last_send_us: u64,
    pub(crate) failure: Option<String>,
}

/// A publisher's schedule.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub(crate) trial: u32,
    pub(crate) publisher: u32,
    pub(crate) first_us: f64,
    pub(crate) interval_us: f64,
    pub(crate) count: u64,
    pub(crate) size: usize,
    pub(crate) deadline_us: u64,
}

impl Schedule {
    fn due_at(&self, seq: u64) -> u64 {
        (self.first_us + seq as f64 * self.interval_us) as u64
    }

    /// Encodes the messages due by `now_us` (at most `max`) starting at `seq`;
    /// returns how many.
    fn take_due(&self, seq: u64, now_us: u64, max: usize, mut each: impl FnMut(&Marker)) -> u64 {
        let mut n = 0;
        while seq + n < self.count && (n as usize) < max && self.due_at(seq + n) <= now_us {
            each(&Marker {
                trial: self.trial,
                publisher: self.publisher,
                seq: seq + n,
                scheduled_us: self.due_at(seq + n),
            });
            n += 1;
        }
        n
    }

    async fn wait_for(&self, seq: u64) {
        let due = self.due_at(seq);
        if due > token::now_us() {
            tokio::time::sleep_until(token::instant_at(due).into()).await;
        }
    }
}

/// A WebSocket publisher's connection: the write half plus a task that keeps
/// reading (a broadcast server sends the publisher everything too) and answers
/// pings through `pongs`.
pub(crate) struct WsPublisher {
    pub(crate) write: OwnedWriteHalf,
    pongs: mpsc::Receiver<Vec<u8>>,
    reader: JoinHandle<()>,
    pub(crate) errors: Arc<AtomicU64>,
    pub(crate) ended: Arc<Mutex<Option<String>>>,
}

impl Drop for WsPublisher {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

pub(crate) enum PublisherConn {
    Ws(WsPublisher),
    Rest(RestPublisher),
}

pub(crate) async fn open_publisher(
    via: &PublishVia,
    index: usize,
    opts: ConnectOptions,
    bytes: Arc<AtomicU64>,
) -> Result<PublisherConn, ConnectError> {
    match via {
        PublishVia::WebSocket(t) => {
            let mut stream = target::connect(t.addr, opts.timeout).await?;
            let primed = ws::handshake(&mut stream, t, opts.timeout).await?;
            let (mut read, write) = stream.into_split();
            let (tx, pongs) = mpsc::channel(8);
            let errors = Arc::new(AtomicU64::new(0));
            let ended = Arc::new(Mutex::new(None));
            let (task_errors, task_ended) = (errors.clone(), ended.clone());
            let reader = tokio::spawn(async move {
                let mut frames = FrameReader::new(16 * 1024, &primed);
                let mut replies = Vec::new();
                let error_finder = memchr::memmem::Finder::new(br#""type":"error""#);
                let ending = loop {
                    let ending = frames.drain(
                        |m| {
                            if error_finder.find(m).is_some() {
                                task_errors.fetch_add(1, Ordering::Relaxed);
                            }
                        },
                        &mut replies,
                    );
                    if !replies.is_empty() {
                        let _ = tx.try_send(std::mem::take(&mut replies));
                    }
                    if let Some(e) = ending {
                        break e.to_string();
                    }
                    match frames.fill(&mut read).await {
                        Ok(0) => break "eof".to_string(),
                        Ok(n) => {
                            bytes.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Err(e) => break format!("io:{:?}", e.kind()),
                    }
                };
                *track::lock(&task_ended) = Some(ending);
            });
            Ok(PublisherConn::Ws(WsPublisher {
                write,
                pongs,
                reader,
                errors,
                ended,
            }))
        }
        PublishVia::Rest {
            target,
            api_key,
            pipeline,
        } => {
            let mut publisher = RestPublisher::new(
                target.clone(),
                opts.timeout,
                api_key.as_deref(),
                format!("lg-p{index}"),
                *pipeline,
            );
            publisher.connect().await?;
            Ok(PublisherConn::Rest(publisher))
        }
    }
}

pub(crate) async fn publish_ws(conn: &mut WsPublisher, schedule: Schedule) -> PublisherReport {
    let mut report = PublisherReport::default();
    let mut frames = Vec::with_capacity(MAX_BATCH * (schedule.size + 16));
    let mut text = Vec::with_capacity(schedule.size + 32);
    let mut seq = 0;
    let deadline = tokio::time::Instant::from_std(token::instant_at(schedule.deadline_us));
    while seq < schedule.count {
        let now = token::now_us();
        if now > schedule.deadline_us {
            break;
        }
        frames.clear();
        let first_due = schedule.due_at(seq);
        let n = schedule.take_due(seq, now, MAX_BATCH, |marker| {
            text.clear();
            token::encode(&mut text, marker, schedule.size);
            ws::encode_text(&mut frames, &text);
        });
        while let Ok(pong) = conn.pongs.try_recv() {
            frames.extend_from_slice(&pong);
        }
        if !frames.is_empty() {
            // A server that stops reading must not hang the run: writes end at
            // the publisher's deadline.
            match tokio::time::timeout_at(deadline, conn.write.write_all(&frames)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    report.failure = Some(format!("io:{:?}", e.kind()));
                    break;
                }
                Err(_) => {
                    report.failure = Some("write stalled until the deadline".into());
                    break;
                }
            }
        }
        if n > 0 {
            report.max_lag_us = report.max_lag_us.max(now.saturating_sub(first_due));
            report.last_send_us = token::now_us();
            report.sent += n;
            seq += n;
        }
        if (n as usize) < MAX_BATCH {
            tokio::select! {
                _ = schedule.wait_for(seq) => {}
                Some(pong) = conn.pongs.recv() => {
                    if !matches!(tokio::time::timeout_at(deadline, conn.write.write_all(&pong)).await, Ok(Ok(()))) {
                        report.failure = Some("pong write".into());
                        break;
                    }
                }
            }
        } else {
            tokio::task::yield_now().await;
        }
    }
    report.unsent = schedule.count - report.sent;
    // Error frames and the server's close are collected after the drain.
    report
}

pub(crate) async fn publish_rest(conn: &mut RestPublisher, schedule: Schedule) -> PublisherReport {
    let mut report = PublisherReport::default();
    let batch = conn.window().min(MAX_BATCH);
    let mut texts: Vec<Vec<u8>> = Vec::with_capacity(batch);
    let deadline = token::instant_at(schedule.deadline_us);
    let mut seq = 0;
    let mut written = 0;
    while seq < schedule.count {
        let now = token::now_us();
        if now > schedule.deadline_us {
            break;
        }
        let first_due = schedule.due_at(seq);
        texts.clear();
        let n = schedule.take_due(seq, now, batch, |marker| {
            let mut text = Vec::with_capacity(schedule.size + 32);
            token::encode(&mut text, marker, schedule.size);
            texts.push(text);
        });
        if n > 0 {
            let refs: Vec<&[u8]> = texts.iter().map(Vec::as_slice).collect();
            if let Err(e) = conn.send(&refs, deadline).await {
                report.failure = Some(e);
                break;
            }
            // Lag counts from when the batch was written: waiting for room in
            // the window is the server pushing back.
            let written_at = token::now_us();
            report.max_lag_us = report.max_lag_us.max(written_at.saturating_sub(first_due));
            report.last_send_us = written_at;
            seq += n;
            written += n;
        }
        if (n as usize) < batch {
            schedule.wait_for(seq).await;
        }
    }
    let outcome = conn.finish(Duration::from_secs(10)).await;
    report.sent = outcome.accepted;
    report.errors = outcome.rejected + outcome.unanswered;
    report.unsent = schedule.count - written;
    if report.failure.is_none()
        && (outcome.unanswered > 0 || outcome.accepted + outcome.rejected < written)
    {
        report.failure = outcome.failure;
    }
    report
}

/// Runs one trial against the subscribers of `pool`.
pub async fn run_trial(
    pool: &Pool,
    via: &PublishVia,
    load: &Load,
    limits: &Limits,
    trial_id: u32,
) -> TrialResult {
    let publisher_bytes = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    let mut publisher_failures: BTreeMap<String, u64> = BTreeMap::new();
    for index in 0..load.publishers.max(1) {
        match open_publisher(via, index, limits.connect, publisher_bytes.clone()).await {
            Ok(conn) => publishers.push(conn),
            Err(e) => {
                *publisher_failures
                    .entry(format!("connect {e}"))
                    .or_default() += 1
            }
        }
    }
    let settled = settle(
        || pool.bytes_received() + publisher_bytes.load(Ordering::Relaxed),
        limits.settle_quiet,
        limits.settle_timeout,
    )
    .await;

    let participants: Vec<_> = pool.subs.iter().filter(|s| s.is_alive()).cloned().collect();
    let count = publishers.len();
    let per_publisher_rate = load.rate / load.publishers.max(1) as f64;
    let interval_us = 1e6 / per_publisher_rate.max(1e-6);
    let total_secs = (load.warmup + load.duration).as_secs_f64();
    let per_publisher_count = ((total_secs * per_publisher_rate).floor() as u64).max(1);
    let t0_us = token::now_us() + 20_000;
    // A mark for scripts that sample the server while it is under this
    // load alone (`scripts/bench.sh`: CPU time per delivery).
    eprintln!(
        "loadgen: trial {trial_id} publishing for {total_secs:.1} s ({:.1} s of warm-up)",
        load.warmup.as_secs_f64()
    );
    let trial = Arc::new(Trial::new(
        trial_id,
        load.publishers.max(1),
        t0_us + u64::try_from(load.warmup.as_micros()).unwrap_or(u64::MAX),
    ));
    for sub in &participants {
        track::lock(&sub.state).begin(trial.clone());
    }
    let deadline_us = t0_us + (total_secs * 2e6) as u64 + 5_000_000;

    let mut tasks = Vec::with_capacity(count);
    for (index, conn) in publishers.into_iter().enumerate() {
        let schedule = Schedule {
            trial: trial_id,
            publisher: index as u32,
            first_us: t0_us as f64 + index as f64 * interval_us / count as f64,
            interval_us,
            count: per_publisher_count,
            size: load.size,
            deadline_us,
        };
        tasks.push(tokio::spawn(async move {
            let mut conn = conn;
            let report = match &mut conn {
                PublisherConn::Ws(c) => publish_ws(c, schedule).await,
                PublisherConn::Rest(c) => publish_rest(c, schedule).await,
            };
            (report, conn)
        }));
    }
    let mut sent = 0;
    let mut unsent = 0;
    let mut max_lag_us = 0;
    let mut publisher_errors = 0;
    let mut last_send_us = t0_us;
    // Publisher connections stay open (and keep being read) until the drain
    // is over: closing one with broadcasts unread makes the kernel reset it,
    // and a reset throws away whatever the server had not yet read of it.
    let mut open_publishers = Vec::with_capacity(count);
    for task in tasks {
        match task.await {
            Ok((r, conn)) => {
                open_publishers.push(conn);
                sent += r.sent;
                unsent += r.unsent;
                max_lag_us = max_lag_us.max(r.max_lag_us);
                publisher_errors += r.errors;
                last_send_us = last_send_us.max(r.last_send_us);
                if let Some(f) = r.failure {
                    *publisher_failures.entry(f).or_default() += 1;
                }
            }
            Err(_) => *publisher_failures.entry("task".into()).or_default() += 1,
        }
    }
    // Publishers that never connected could not send their share either.
    unsent += (load.publishers.max(1) - count) as u64 * per_publisher_count;

    let drain_started = Instant::now();
    let expected = sent * participants.len() as u64;
    let unique = || -> u64 {
        participants
            .iter()
            .map(|s| track::lock(&s.state).counts().unique)
            .sum()
    };
    let mut last = unique();
    let mut last_progress = Instant::now();
    while last < expected
        && drain_started.elapsed() < limits.drain_timeout
        && last_progress.elapsed() < limits.drain_stall
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = unique();
        if now != last {
            last = now;
            last_progress = Instant::now();
        }
    }
    let drain = drain_started.elapsed();
    for conn in &mut open_publishers {
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
    drop(open_publishers);

    let mut counts = Counts::default();
    let mut lost = 0;
    for sub in &participants {
        let c = track::lock(&sub.state).finish();
        lost += sent.saturating_sub(c.unique);
        counts.add(&c);
    }
    // Every subscriber of the pool that has ended counts, including any that
    // ended while the pool settled (they never took part, which is a failure
    // too).
    let disconnected: Vec<_> = pool.subs.iter().filter(|s| !s.is_alive()).collect();
    let mut endings = BTreeMap::new();
    for sub in &disconnected {
        let why = track::lock(&sub.state).ending.clone().unwrap_or_default();
        *endings.entry(why).or_default() += 1;
    }
    let publish_secs = ((last_send_us.saturating_sub(t0_us)) as f64 / 1e6).max(total_secs);
    TrialResult {
        rate_offered: load.rate,
        rate_sent: sent as f64 / publish_secs,
        sent,
        unsent,
        subscribers: participants.len(),
        counts,
        lost,
        delivered_per_sec: counts.measured as f64 / load.duration.as_secs_f64().max(1e-6),
        disconnects: disconnected.len(),
        endings,
        latency_us: trial.merged_histogram(),
        publisher_max_lag_us: max_lag_us,
        publisher_errors,
        publisher_failures,
        settled,
        drain,
        p99_limit: limits.p99_limit,
    }
}
