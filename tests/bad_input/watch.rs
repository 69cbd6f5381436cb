//! The healthy clients that watch the server while it is attacked: a
//! publisher that sends `healthy 1`, `healthy 2`, ... into room `watch` over
//! WebSocket every 20 ms, a subscriber in that room that must get every one
//! of them in order with none missing, and a prober that asks `/healthz`
//! four times a second on a fresh connection and times the answers.
//!
//! The subscriber also notes any message in the room that says `SMUGGLED` or
//! `CROSSSITE`: the request-smuggling and cross-site attacks hide a publish
//! of those words, which a correct server refuses.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::wire;

/// Between two healthy messages.
const PUBLISH_EVERY: Duration = Duration::from_millis(20);
/// Between two `/healthz` probes.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// A probe slower than this is a stall.
pub const STALL: Duration = Duration::from_secs(3);

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

/// The watchers while they run.
pub struct Watch {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    publisher: JoinHandle<Vec<String>>,
    subscriber: JoinHandle<Vec<String>>,
    prober: JoinHandle<Probes>,
    smuggled: Arc<Mutex<Vec<String>>>,
}

/// What the `/healthz` prober saw.
#[derive(Debug, Default)]
pub struct Probes {
    /// Probes made.
    pub count: u64,
    /// The slowest answer.
    pub worst: Duration,
    /// Probes slower than [`STALL`], unanswered, or answered anything but
    /// `200 ok` or a prompt `503`, with when they started.
    pub stalls: Vec<String>,
    /// Probes answered with a prompt `503` (a connection limit reached).
    pub refused: u64,
}

/// What the watchers saw in the end.
#[derive(Debug)]
pub struct Seen {
    /// Healthy messages published.
    pub sent: u64,
    /// Of those, received in order by the subscriber.
    pub received: u64,
    /// Everything that went wrong for the healthy clients.
    pub problems: Vec<String>,
    /// The prober's findings.
    pub probes: Probes,
    /// Messages that a refused request published (`SMUGGLED`, `CROSSSITE`).
    pub smuggled: Vec<String>,
}

impl Watch {
    /// Connects the subscriber, then the publisher, and starts all three.
    pub fn start(ws: SocketAddr, http: SocketAddr) -> Result<Watch, String> {
        let mut subscriber = open(ws, "watcher")?;
        welcome(&mut subscriber)?;
        let mut publisher = open(ws, "healthy-pub")?;
        let publisher_id = welcome(&mut publisher)?;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let publisher = {
            let (stop, sent, done) = (stop.clone(), sent.clone(), done.clone());
            spawn("watch-pub", move || publish(publisher, &stop, &sent, &done))
        };
        let smuggled = Arc::new(Mutex::new(Vec::new()));
        let subscriber = {
            let (sent, received, smuggled) = (sent.clone(), received.clone(), smuggled.clone());
            spawn("watch-sub", move || {
                subscribe(
                    subscriber,
                    &publisher_id,
                    &smuggled,
                    &sent,
                    &received,
                    &done,
                )
            })
        };
        let prober = {
            let stop = stop.clone();
            spawn("watch-probe", move || probe(http, &stop))
        };
        Ok(Watch {
            stop,
            sent,
            received,
            publisher,
            subscriber,
            prober,
            smuggled,
        })
    }

    /// Waits until the subscriber has received `at_least` more messages
    /// than now, or `within` passes; returns whether it did.
    pub fn wait_for_more(&self, at_least: u64, within: Duration) -> bool {
        let target = self.received.load(Ordering::SeqCst) + at_least;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.received.load(Ordering::SeqCst) >= target {
                return true;
            }
            thread::sleep(Duration::from_millis(10)); // polling a counter, with a deadline
        }
        false
    }

    /// Stops publishing and probing, lets the subscriber catch up (bounded),
    /// and reports.
    pub fn finish(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        let mut problems = self
            .publisher
            .join()
            .unwrap_or_else(|_| vec!["the publisher thread panicked".into()]);
        problems.extend(
            self.subscriber
                .join()
                .unwrap_or_else(|_| vec!["the subscriber thread panicked".into()]),
        );
        let probes = self.prober.join().unwrap_or_default();
        let (sent, received) = (
            self.sent.load(Ordering::SeqCst),
            self.received.load(Ordering::SeqCst),
        );
        if received < sent {
            problems.push(format!(
                "the healthy subscriber got {received} of {sent} messages"
            ));
        }
        let smuggled =
            std::mem::take(&mut *self.smuggled.lock().unwrap_or_else(|p| p.into_inner()));
        Seen {
            sent,
            received,
            problems,
            probes,
            smuggled,
        }
    }
}

fn spawn<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawn a watcher thread")
}

fn open(ws: SocketAddr, name: &str) -> Result<Ws, String> {
    let url = format!("ws://{ws}/ws?room=watch&name={name}");
    let (socket, _) = tungstenite::connect(&url).map_err(|e| format!("{name} connects: {e}"))?;
    set_timeout(&socket, Duration::from_millis(50));
    if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    }
    Ok(socket)
}

fn set_timeout(socket: &Ws, timeout: Duration) {
    if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
        let _ = stream.set_read_timeout(Some(timeout));
    }
}

/// Reads up to the welcome and returns the connection id in it.
fn welcome(socket: &mut Ws) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match socket.read() {
            Ok(Message::Text(text)) => {
                let event: Value = serde_json::from_str(&text).unwrap_or_default();
                if event["type"] == "welcome" {
                    return Ok(event["id"].as_str().unwrap_or_default().to_owned());
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
            Err(e) => return Err(format!("waiting for the welcome: {e}")),
        }
    }
    Err("no welcome within 5 s".into())
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn publish(mut socket: Ws, stop: &AtomicBool, sent: &AtomicU64, done: &AtomicBool) -> Vec<String> {
    let mut problems = Vec::new();
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        // Read (and drop) what the room sends until the next message is due:
        // a publisher that stops reading would become a slow consumer.
        let now = Instant::now();
        if now < next {
            set_timeout(&socket, next - now);
            match socket.read() {
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
                Err(e) => {
                    problems.push(format!("the healthy publisher's connection failed: {e}"));
                    break;
                }
            }
        }
        let n = sent.load(Ordering::SeqCst) + 1;
        let text = format!(r#"{{"type":"message","room":"watch","text":"healthy {n}"}}"#);
        if let Err(e) = socket.send(Message::text(text)) {
            problems.push(format!("the healthy publisher could not send #{n}: {e}"));
            break;
        }
        sent.store(n, Ordering::SeqCst);
        next += PUBLISH_EVERY;
    }
    done.store(true, Ordering::SeqCst);
    // Keep reading while the subscriber catches up, then say goodbye.
    let until = Instant::now() + Duration::from_millis(300);
    set_timeout(&socket, Duration::from_millis(50));
    while Instant::now() < until && socket.read().is_ok() {}
    let _ = socket.close(None);
    problems
}

fn subscribe(
    mut socket: Ws,
    publisher_id: &str,
    smuggled: &Mutex<Vec<String>>,
    sent: &AtomicU64,
    received: &AtomicU64,
    done: &AtomicBool,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut done_at: Option<Instant> = None;
    loop {
        if done.load(Ordering::SeqCst) {
            let at = *done_at.get_or_insert_with(Instant::now);
            let all = received.load(Ordering::SeqCst) >= sent.load(Ordering::SeqCst);
            if all || at.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        let text = match socket.read() {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(frame)) => {
                problems.push(format!("the healthy subscriber was closed: {frame:?}"));
                break;
            }
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => continue,
            Err(e) => {
                problems.push(format!("the healthy subscriber's connection failed: {e}"));
                break;
            }
        };
        let event: Value = match serde_json::from_str(&text) {
            Ok(event) => event,
            Err(e) => {
                problems.push(format!("the healthy subscriber got non-JSON ({e}): {text}"));
                continue;
            }
        };
        if event["type"] != "message" {
            continue;
        }
        let body = event["text"].as_str().unwrap_or_default();
        for (word, finding) in [
            ("SMUGGLED", "12: request smuggling"),
            ("CROSSSITE", "11: cross-site publishing"),
        ] {
            if body.contains(word) {
                let mut smuggled = smuggled.lock().unwrap_or_else(|p| p.into_inner());
                if smuggled.len() < 3 {
                    smuggled.push(format!(
                        "a refused request was published (issue 17 finding {finding}): {event}"
                    ));
                } else if smuggled.len() == 3 {
                    smuggled.push("(and more)".into());
                }
            }
        }
        if event["from_id"] != publisher_id {
            continue;
        }
        let n: u64 = body
            .strip_prefix("healthy ")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let expected = received.load(Ordering::SeqCst) + 1;
        if n == expected {
            received.store(n, Ordering::SeqCst);
        } else if problems.len() < 10 {
            problems.push(format!(
                "the healthy subscriber expected healthy {expected} and got {body:?}"
            ));
            received.store(n.max(expected - 1), Ordering::SeqCst);
        }
    }
    let _ = socket.close(None);
    problems
}

fn probe(http: SocketAddr, stop: &AtomicBool) -> Probes {
    let started = Instant::now();
    let mut probes = Probes::default();
    while !stop.load(Ordering::SeqCst) {
        let at = Instant::now();
        let answer = wire::get(http, "/healthz", Duration::from_secs(5));
        let took = at.elapsed();
        probes.count += 1;
        probes.worst = probes.worst.max(took);
        let when = at.duration_since(started).as_secs_f32();
        match answer {
            Ok(r) if r.status == 200 && r.body.starts_with(b"ok") && took <= STALL => {}
            // A prompt refusal at a connection limit is an answer, not a freeze.
            Ok(r) if r.status == 503 && took <= STALL => probes.refused += 1,
            Ok(r) => probes
                .stalls
                .push(format!("at {when:.1} s: {} in {took:.1?}", r.status)),
            Err(e) => probes.stalls.push(format!("at {when:.1} s: {e}")),
        }
        let next = at + PROBE_EVERY;
        while Instant::now() < next && !stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(10)); // pacing the prober
        }
    }
    probes
}
