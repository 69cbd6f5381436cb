//! The bad-input suite's generator at a low rate, for a soak: fuzzed
//! WebSocket frames (after a real handshake, on `/ws` and `/echo`), fuzzed
//! handshakes, fuzzed HTTP heads, and now and then one of the attacks issue
//! 17 named (huge lengths, smuggling, slow bodies, idle sockets, endless
//! heads, big bodies, `/events` with 40,000 rooms).
//!
//! The cases come from `tests/bad_input/gen/`, included by path, so the soak
//! sends exactly what the suite sends for the same seed and case number. The
//! suite judges each answer; here only the healthy clients and the server's
//! resources are judged, so an attack is sent, its answer read (bounded), and
//! the connection dropped.

#[path = "../../tests/bad_input/gen/mod.rs"]
mod badgen;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use badgen::{frames, heads, Piece, Rng};

/// What was sent, by kind, and how the server took it.
#[derive(Debug, Default, Clone)]
pub struct AttackReport {
    /// Cases sent, by kind.
    pub sent: BTreeMap<&'static str, u64>,
    /// Connections the server ended (EOF or reset) within the read window.
    pub closed_by_server: u64,
    /// Connections that could not be opened.
    pub connect_failures: u64,
}

/// Sends one case every `every` until `until`, starting from `seed`.
pub async fn run(
    ws: SocketAddr,
    http: SocketAddr,
    seed: u64,
    every: Duration,
    until: Instant,
) -> AttackReport {
    let report = Arc::new(Mutex::new(AttackReport::default()));
    let mut tasks = Vec::new();
    let mut i: u64 = 0;
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    // A case may hold its connection this long (a slow body, an idle socket).
    let longest = Duration::from_secs(15);
    while Instant::now() + longest < until {
        tick.tick().await;
        i += 1;
        let report = report.clone();
        tasks.push(tokio::spawn(async move {
            let (kind, outcome) = one(ws, http, seed, i).await;
            let mut r = crate::track::lock(&report);
            *r.sent.entry(kind).or_default() += 1;
            match outcome {
                Outcome::Closed => r.closed_by_server += 1,
                Outcome::NoConnection => r.connect_failures += 1,
                Outcome::Open => {}
            }
        }));
        tasks.retain(|t| !t.is_finished());
    }
    for task in tasks {
        let _ = tokio::time::timeout(longest + Duration::from_secs(5), task).await;
    }
    let report = crate::track::lock(&report).clone();
    report
}

enum Outcome {
    Closed,
    Open,
    NoConnection,
}

/// Case `i`: every 20th a named attack, the rest fuzz, in turn.
async fn one(ws: SocketAddr, http: SocketAddr, seed: u64, i: u64) -> (&'static str, Outcome) {
    if i % 20 == 0 {
        return named(ws, http, i / 20).await;
    }
    let mut rng = Rng::derive(seed, &format!("soak/{i}"));
    match i % 3 {
        0 => {
            let case = frames::case(&mut rng, i % 2 == 0, 65536);
            let head = format!(
                "GET {} HTTP/1.1\r\nHost: {ws}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                case.path
            );
            let mut pieces = vec![Piece {
                bytes: head.into_bytes(),
                pause_ms: 5,
            }];
            pieces.extend(case.pieces);
            (
                "ws-frames",
                exchange(ws, &pieces, Duration::from_secs(3)).await,
            )
        }
        1 => {
            let case = heads::handshake_case(&mut rng);
            (
                "ws-handshake",
                exchange(ws, &case.pieces, Duration::from_secs(3)).await,
            )
        }
        _ => {
            let case = heads::http_case(&mut rng);
            (
                "http-head",
                exchange(http, &case.pieces, Duration::from_secs(3)).await,
            )
        }
    }
}

/// The attacks issue 17 names, in turn.
async fn named(ws: SocketAddr, http: SocketAddr, n: u64) -> (&'static str, Outcome) {
    let one = |bytes: Vec<u8>| vec![Piece { bytes, pause_ms: 0 }];
    let post = |extra: &str, body: &str| {
        format!(
            "POST /rooms/soak-attack/messages HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n{extra}\r\n{body}"
        )
        .into_bytes()
    };
    match n % 10 {
        0 => (
            "huge-length",
            exchange(
                http,
                &one(
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000000\r\n\r\nhello"
                        .to_vec(),
                ),
                Duration::from_secs(3),
            )
            .await,
        ),
        1 => (
            "max-length",
            exchange(
                http,
                &one(post("Content-Length: 18446744073709551615\r\n", "hello")),
                Duration::from_secs(3),
            )
            .await,
        ),
        2 => {
            let body = "0\r\n\r\nPOST /rooms/soak-attack/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\nSMUGGLED";
            let extra = format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                body.len()
            );
            (
                "smuggling",
                exchange(http, &one(post(&extra, body)), Duration::from_secs(3)).await,
            )
        }
        3 => {
            let mut slow = post("Content-Length: 5000\r\n", "");
            slow.extend_from_slice(&[b'a'; 100]);
            ("slow-body", hold(http, slow, Duration::from_secs(14)).await)
        }
        4 => (
            "idle-http",
            hold(http, Vec::new(), Duration::from_secs(14)).await,
        ),
        5 => (
            "idle-ws",
            hold(
                ws,
                b"GET /ws HTTP/1.1\r\nHost: x\r\n".to_vec(),
                Duration::from_secs(14),
            )
            .await,
        ),
        6 => {
            let mut endless = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: ".to_vec();
            endless.resize(1 << 20, b'e');
            (
                "endless-head",
                exchange(http, &one(endless), Duration::from_secs(3)).await,
            )
        }
        7 => {
            let url = format!(
                "GET /healthz?{} HTTP/1.1\r\nHost: x\r\n\r\n",
                "u".repeat(1 << 20)
            );
            (
                "huge-url",
                exchange(http, &one(url.into_bytes()), Duration::from_secs(3)).await,
            )
        }
        8 => {
            let query: Vec<String> = (0..40_000).map(|i| format!("room=r{i}")).collect();
            let events = format!(
                "GET /events?{} HTTP/1.1\r\nHost: x\r\n\r\n",
                query.join("&")
            );
            (
                "many-rooms",
                exchange(http, &one(events.into_bytes()), Duration::from_secs(3)).await,
            )
        }
        _ => {
            let mut big = post(&format!("Content-Length: {}\r\n", 10 << 20), "");
            big.resize(big.len() + (10 << 20), b'b');
            (
                "big-body",
                exchange(http, &one(big), Duration::from_secs(3)).await,
            )
        }
    }
}

/// Writes the pieces, half-closes, reads until the server closes or `read`
/// passes.
async fn exchange(addr: SocketAddr, pieces: &[Piece], read: Duration) -> Outcome {
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr)).await
    else {
        return Outcome::NoConnection;
    };
    let _ = stream.set_nodelay(true);
    for piece in pieces {
        let write = tokio::time::timeout(Duration::from_secs(3), stream.write_all(&piece.bytes));
        if !matches!(write.await, Ok(Ok(()))) {
            return Outcome::Closed; // the server stopped taking it
        }
        if piece.pause_ms > 0 {
            tokio::time::sleep(Duration::from_millis(piece.pause_ms)).await;
        }
    }
    let _ = stream.shutdown().await;
    read_until_closed(&mut stream, read).await
}

/// Sends `bytes` and then nothing for up to `within`.
async fn hold(addr: SocketAddr, bytes: Vec<u8>, within: Duration) -> Outcome {
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr)).await
    else {
        return Outcome::NoConnection;
    };
    if stream.write_all(&bytes).await.is_err() {
        return Outcome::Closed;
    }
    read_until_closed(&mut stream, within).await
}

async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Outcome {
    let mut sink = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Outcome::Closed,
            Ok(Ok(_)) => {}
            Err(_) => return Outcome::Open,
        }
    }
}
