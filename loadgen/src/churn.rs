//! The background of a soak: clients that come and go, clients too slow to
//! keep up, and publishing that touches many rooms.
//!
//! - **Churn**: WebSocket and SSE clients that connect to one of a few
//!   rooms, take their welcome, maybe say something, and leave (politely or
//!   by dropping the socket).
//! - **Slow readers**: WebSocket and SSE subscribers to a busy room with a
//!   4 KiB receive buffer that never read. The server must drop them (slow
//!   consumer) and *close* them: after a stall the reader drains its socket
//!   and expects the end of the stream (issue 17 finding 9: a dropped SSE
//!   stream that is never closed).
//! - **Bulk**: a REST publisher that keeps that room busy with large
//!   messages, so slow readers fall behind quickly.
//! - **Rooms**: REST messages into a rotating set of rooms, so rooms and
//!   their history are created and filled (a bounded set: after the warm-up
//!   their memory must stop growing).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::http::open_sse;
use crate::target::Target;
use crate::track::lock;
use crate::ws;

/// What the background did, for the report.
#[derive(Debug, Default, Clone)]
pub struct ChurnReport {
    /// Connections opened and closed, by transport.
    pub churned: BTreeMap<&'static str, u64>,
    /// Churn connections that failed, by why.
    pub churn_failures: BTreeMap<String, u64>,
    /// Slow readers started, by transport.
    pub slow_started: BTreeMap<&'static str, u64>,
    /// Slow readers the server ended (dropped and closed), by transport.
    pub slow_closed: BTreeMap<&'static str, u64>,
    /// Slow readers that stopped receiving but were never closed.
    pub slow_left_open: BTreeMap<&'static str, u64>,
    /// Slow readers never dropped (they still received at the end).
    pub slow_kept: BTreeMap<&'static str, u64>,
    /// REST publishes answered 2xx / otherwise, in the rotating rooms.
    pub rooms_published: u64,
    /// REST publishes refused or unanswered.
    pub rooms_refused: u64,
    /// Bulk messages accepted.
    pub bulk_published: u64,
}

/// Where the background traffic goes.
#[derive(Debug, Clone)]
pub struct Targets {
    /// The WebSocket listener, e.g. `ws://127.0.0.1:8081`.
    pub ws: Target,
    /// The HTTP listener.
    pub http: Target,
}

/// Clients per second that connect and leave.
pub async fn churn(
    targets: Targets,
    per_second: f64,
    until: Instant,
    report: Arc<Mutex<ChurnReport>>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second.max(0.1)));
    let mut tasks = Vec::new();
    let mut n: u64 = 0;
    while Instant::now() < until {
        tick.tick().await;
        n += 1;
        let (targets, report) = (targets.clone(), report.clone());
        tasks.push(tokio::spawn(async move {
            let room = format!("churn{}", n % 20);
            let (kind, result) = if n % 3 == 0 {
                ("sse", churn_sse(&targets.http, &room, n).await)
            } else {
                ("ws", churn_ws(&targets.ws, &room, n).await)
            };
            let mut r = lock(&report);
            match result {
                Ok(()) => *r.churned.entry(kind).or_default() += 1,
                Err(why) => *r.churn_failures.entry(format!("{kind} {why}")).or_default() += 1,
            }
        }));
        tasks.retain(|t| !t.is_finished());
    }
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
}

async fn churn_ws(ws: &Target, room: &str, n: u64) -> Result<(), String> {
    let target = ws.with_path(format!("/ws?room={room}&name=churn{n}"));
    let mut stream = crate::target::connect(target.addr, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    let primed = ws::handshake(&mut stream, &target, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    let mut reader = ws::FrameReader::new(4096, &primed);
    let mut out = Vec::new();
    if n % 2 == 0 {
        ws::encode_text(&mut out, format!("churn {n} was here").as_bytes());
    }
    if n % 5 != 0 {
        ws::encode_close(&mut out); // the others just drop the socket
    }
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("io:{:?}", e.kind()))?;
    // Read what comes for a moment (the welcome, the join notices).
    let linger = tokio::time::sleep(Duration::from_millis(100 + n % 300));
    tokio::pin!(linger);
    let mut replies = Vec::new();
    loop {
        tokio::select! {
            _ = &mut linger => return Ok(()),
            read = reader.fill(&mut stream) => match read {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => {
                    if reader.drain(|_| {}, &mut replies).is_some() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

async fn churn_sse(http: &Target, room: &str, n: u64) -> Result<(), String> {
    let target = http.with_path(format!("/events?room={room}&name=churn{n}"));
    let mut stream = crate::target::connect(target.addr, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    let mut reader = open_sse(&mut stream, &target, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    let linger = tokio::time::sleep(Duration::from_millis(100 + n % 400));
    tokio::pin!(linger);
    loop {
        tokio::select! {
            _ = &mut linger => return Ok(()),
            read = reader.fill(&mut stream) => if read.is_err() { return Ok(()) },
        }
    }
}

/// Starts a slow reader every `every` (WebSocket and SSE in turn) until
/// `start_until`, subscribed to `rooms` (a query: `room=a&room=b`); each
/// stalls for `stall`, then drains for up to 20 s.
pub async fn slow_readers(
    targets: Targets,
    rooms: String,
    every: Duration,
    stall: Duration,
    start_until: Instant,
    report: Arc<Mutex<ChurnReport>>,
) {
    let mut tasks = Vec::new();
    let mut n: u64 = 0;
    while Instant::now() < start_until {
        n += 1;
        let (targets, rooms, report) = (targets.clone(), rooms.clone(), report.clone());
        tasks.push(tokio::spawn(async move {
            let kind = if n % 2 == 0 { "sse" } else { "ws" };
            *lock(&report).slow_started.entry(kind).or_default() += 1;
            let verdict = slow_reader(&targets, &rooms, kind == "ws", stall).await;
            let mut r = lock(&report);
            let counter = match verdict {
                Slow::Closed => &mut r.slow_closed,
                Slow::LeftOpen => &mut r.slow_left_open,
                Slow::Kept => &mut r.slow_kept,
            };
            *counter.entry(kind).or_default() += 1;
        }));
        tokio::time::sleep(every).await;
    }
    for task in tasks {
        let _ = tokio::time::timeout(stall + Duration::from_secs(40), task).await;
    }
}

enum Slow {
    /// The server ended the stream.
    Closed,
    /// Nothing more came, and the stream never ended.
    LeftOpen,
    /// It still received at the end: never dropped.
    Kept,
}

async fn slow_reader(targets: &Targets, rooms: &str, websocket: bool, stall: Duration) -> Slow {
    let target = if websocket {
        targets.ws.with_path(format!("/ws?{rooms}&name=slow"))
    } else {
        targets.http.with_path(format!("/events?{rooms}&name=slow"))
    };
    let Ok(socket) = TcpSocket::new_v4() else {
        return Slow::Kept;
    };
    // A small window: the server's writes back up after a few KiB.
    let _ = socket.set_recv_buffer_size(4096);
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_secs(5), socket.connect(target.addr)).await
    else {
        return Slow::Kept;
    };
    let opened = if websocket {
        ws::handshake(&mut stream, &target, Duration::from_secs(5))
            .await
            .map(|_| ())
    } else {
        open_sse(&mut stream, &target, Duration::from_secs(5))
            .await
            .map(|_| ())
    };
    if opened.is_err() {
        return Slow::Kept;
    }
    tokio::time::sleep(stall).await;
    drain(&mut stream).await
}

/// Reads as fast as possible for up to 20 s: the end of the stream means the
/// server closed it; silence for 5 s while the room is busy means it dropped
/// the reader without closing; data until the end means it was never dropped.
async fn drain(stream: &mut TcpStream) -> Slow {
    let mut sink = vec![0u8; 64 * 1024];
    let started = Instant::now();
    let mut last_data = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Slow::Closed,
            Ok(Ok(_)) => last_data = Instant::now(),
            Err(_) if last_data.elapsed() > Duration::from_secs(5) => return Slow::LeftOpen,
            Err(_) => {}
        }
    }
    Slow::Kept
}

/// Keep-alive REST publishing of `text(n)` to `path(n)` at `per_second`;
/// returns (accepted, refused).
pub async fn rest_loop(
    http: Target,
    per_second: f64,
    until: Instant,
    path: impl Fn(u64) -> String,
    text: impl Fn(u64) -> String,
) -> (u64, u64) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second.max(0.1)));
    let (mut accepted, mut refused) = (0, 0);
    let mut conn: Option<TcpStream> = None;
    let mut n: u64 = 0;
    let mut buf = Vec::with_capacity(4096);
    while Instant::now() < until {
        tick.tick().await;
        n += 1;
        if conn.is_none() {
            conn = crate::target::connect(http.addr, Duration::from_secs(5))
                .await
                .ok();
        }
        let Some(stream) = conn.as_mut() else {
            refused += 1;
            continue;
        };
        let body = text(n);
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            path(n),
            http.host_header,
            body.len()
        );
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            stream.write_all(request.as_bytes()).await.ok()?;
            read_answer(stream, &mut buf).await
        })
        .await;
        match answer {
            Ok(Some((status, close))) => {
                if (200..300).contains(&status) {
                    accepted += 1;
                } else {
                    refused += 1;
                }
                if close {
                    conn = None;
                }
            }
            _ => {
                refused += 1;
                conn = None;
            }
        }
    }
    (accepted, refused)
}

/// Reads one response (head and `Content-Length` body); returns its status
/// and whether the server will close.
async fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(u16, bool)> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = response.parse(buf) {
            let header = |name: &str| {
                response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
            };
            let length: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let close = header("connection").is_some_and(|v| v == "close");
            let status = response.code?;
            while buf.len() < head + length {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some((status, close));
        }
    }
}
