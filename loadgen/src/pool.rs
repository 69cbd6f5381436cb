//! A pool of subscriber connections: opened with bounded concurrency and a
//! timeout, each read by its own task until the pool is dropped.
//!
//! Subscribers must be connected and joined before publishing starts, and a
//! server may still be busy after the last handshake (switchboard tells every
//! member about every join). Instead of knowing each server's welcome ritual,
//! the pool waits for quiet: no subscriber has received a byte for a while.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::http::{open_sse, SseReader};
use crate::target::{self, ConnectError, Target};
use crate::track::{self, SubShared};
use crate::ws::{self, Ending, FrameReader};

/// Read buffer per WebSocket subscriber; grows only for larger frames.
const WS_READ_BUFFER: usize = 16 * 1024;

/// How subscribers receive.
#[derive(Debug, Clone)]
pub enum SubscribeVia {
    /// WebSocket at this URL (path and query included).
    WebSocket(Target),
    /// WebSocket, spread over several servers: subscriber `i` connects to
    /// `targets[i % len]` (the several-nodes bench, one room across nodes).
    WebSocketSpread(Vec<Target>),
    /// Server-Sent Events at this URL.
    Sse(Target),
}

/// How to open connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectOptions {
    /// Connection attempts in flight at once.
    pub concurrency: usize,
    /// Limit for TCP connect plus handshake.
    pub timeout: Duration,
}

/// What opening the pool came to.
pub struct ConnectReport {
    /// Connections asked for.
    pub requested: usize,
    /// Connections that completed the handshake.
    pub connected: usize,
    /// Failures by kind (`timeout`, `http:503`, `io:ConnectionRefused`, ...).
    pub failures: BTreeMap<String, u64>,
    /// Wall time from the first attempt to the last answer.
    pub elapsed: Duration,
    /// TCP connect + handshake time of the successful ones, µs.
    pub handshake_us: Histogram<u64>,
}

impl ConnectReport {
    /// Total failed attempts.
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Successful connections per second of connecting.
    pub fn rate(&self) -> f64 {
        self.connected as f64 / self.elapsed.as_secs_f64().max(1e-6)
    }
}

/// Open subscriber connections and the tasks reading them.
pub struct Pool {
    /// The live (or since ended) subscribers.
    pub subs: Vec<Arc<SubShared>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Pool {
    /// Opens `count` subscribers; returns the pool of those that connected.
    pub async fn open(
        via: &SubscribeVia,
        count: usize,
        opts: ConnectOptions,
    ) -> (Pool, ConnectReport) {
        let gate = Arc::new(Semaphore::new(opts.concurrency.max(1)));
        let started = Instant::now();
        let mut pending = Vec::with_capacity(count);
        let mut subs = Vec::with_capacity(count);
        let mut tasks = Vec::with_capacity(count);
        for index in 0..count {
            let Ok(permit) = gate.clone().acquire_owned().await else {
                break;
            };
            let shared = Arc::new(SubShared::new(index));
            let (tx, rx) = oneshot::channel();
            let via = via.clone();
            let task_shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                let begun = Instant::now();
                match open_one(&via, index, opts.timeout).await {
                    Ok(conn) => {
                        let _ = tx.send(Ok(begun.elapsed()));
                        drop(permit);
                        let ending = match conn {
                            Opened::Ws(stream, primed) => {
                                read_ws(stream, &primed, &task_shared).await
                            }
                            Opened::Sse(stream, reader) => {
                                read_sse(stream, reader, &task_shared).await
                            }
                        };
                        task_shared.ended(ending.to_string());
                    }
                    Err(e) => {
                        task_shared.alive.store(false, Ordering::Release);
                        let _ = tx.send(Err(e));
                    }
                }
            }));
            pending.push(rx);
            subs.push(shared);
        }
        let mut report = ConnectReport {
            requested: count,
            connected: 0,
            failures: BTreeMap::new(),
            elapsed: Duration::ZERO,
            handshake_us: track::new_histogram(),
        };
        let mut connected = Vec::with_capacity(count);
        for (rx, shared) in pending.into_iter().zip(subs) {
            match rx.await {
                Ok(Ok(took)) => {
                    report.connected += 1;
                    report
                        .handshake_us
                        .saturating_record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
                    connected.push(shared);
                }
                Ok(Err(e)) => *report.failures.entry(e.to_string()).or_default() += 1,
                Err(_) => *report.failures.entry("task".into()).or_default() += 1,
            }
        }
        report.elapsed = started.elapsed();
        (
            Pool {
                subs: connected,
                tasks,
            },
            report,
        )
    }

    /// Subscribers whose connection has ended.
    pub fn disconnected(&self) -> usize {
        self.subs.iter().filter(|s| !s.is_alive()).count()
    }

    /// Endings by kind, for the report.
    pub fn endings(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for sub in self.subs.iter().filter(|s| !s.is_alive()) {
            let why = track::lock(&sub.state)
                .ending
                .clone()
                .unwrap_or_else(|| "unknown".into());
            *out.entry(why).or_default() += 1;
        }
        out
    }

    /// Bytes received by all subscribers so far.
    pub fn bytes_received(&self) -> u64 {
        self.subs
            .iter()
            .map(|s| s.bytes.load(Ordering::Relaxed))
            .sum()
    }
}

/// Waits until `bytes()` has not changed for `quiet`, or `limit` has passed;
/// returns whether it got quiet.
pub async fn settle(bytes: impl Fn() -> u64, quiet: Duration, limit: Duration) -> bool {
    let started = Instant::now();
    let mut last = bytes();
    let mut last_change = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50).min(quiet)).await;
        let now = bytes();
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() >= quiet {
            return true;
        }
        if started.elapsed() >= limit {
            return false;
        }
    }
}

enum Opened {
    Ws(TcpStream, Vec<u8>),
    Sse(TcpStream, SseReader),
}

async fn open_one(
    via: &SubscribeVia,
    index: usize,
    timeout: Duration,
) -> Result<Opened, ConnectError> {
    let deadline = Instant::now() + timeout;
    let spread;
    let via = match via {
        SubscribeVia::WebSocketSpread(targets) if !targets.is_empty() => {
            spread = SubscribeVia::WebSocket(targets[index % targets.len()].clone());
            &spread
        }
        other => other,
    };
    match via {
        SubscribeVia::WebSocketSpread(_) => Err(ConnectError::BadResponse),
        SubscribeVia::WebSocket(t) => {
            let mut stream = target::connect(t.addr, timeout).await?;
            let primed = ws::handshake(
                &mut stream,
                t,
                deadline.saturating_duration_since(Instant::now()),
            )
            .await?;
            Ok(Opened::Ws(stream, primed))
        }
        SubscribeVia::Sse(t) => {
            let mut stream = target::connect(t.addr, timeout).await?;
            let reader = open_sse(
                &mut stream,
                t,
                deadline.saturating_duration_since(Instant::now()),
            )
            .await?;
            Ok(Opened::Sse(stream, reader))
        }
    }
}

/// Reads a WebSocket subscriber until it ends, scanning every message.
async fn read_ws(mut stream: TcpStream, primed: &[u8], shared: &SubShared) -> Ending {
    let mut reader = FrameReader::new(WS_READ_BUFFER, primed);
    let mut replies = Vec::new();
    loop {
        let mut ending = None;
        shared.on_batch(|scan| ending = reader.drain(|payload| scan(payload), &mut replies));
        if !replies.is_empty() {
            if let Err(e) = stream.write_all(&replies).await {
                return Ending::Io(e.kind());
            }
            replies.clear();
        }
        if let Some(ending) = ending {
            return ending;
        }
        match reader.fill(&mut stream).await {
            Ok(0) => return Ending::Eof,
            Ok(n) => {
                shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => return Ending::Io(e.kind()),
        }
    }
}

/// Reads an SSE subscriber until it ends, scanning every complete line.
async fn read_sse(mut stream: TcpStream, mut reader: SseReader, shared: &SubShared) -> Ending {
    loop {
        shared.on_batch(|scan| reader.drain(|lines| scan(lines)));
        match reader.fill(&mut stream).await {
            Ok(n) => {
                shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(ending) => return ending,
        }
    }
}
