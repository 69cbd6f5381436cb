//! The attacks issue 17 describes, over raw sockets: each bounded in time,
//! each returning what came back for the test to judge.

use std::io::Write;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use crate::gen;
use crate::wire::{self, End};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn named<'scope, T: Send + 'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    name: &str,
    f: impl FnOnce() -> T + Send + 'scope,
) -> std::thread::ScopedJoinHandle<'scope, T> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn_scoped(s, f)
        .expect("spawn an attacker thread")
}

/// Opens `count` idle connections at once, more than the server's bound on
/// plain connections; returns how many got a `503` and how many were still
/// open after `within`.
pub fn past_the_bound(
    http: SocketAddr,
    count: usize,
    within: Duration,
) -> Result<(usize, usize), String> {
    let mut idle = Vec::new();
    for _ in 0..count {
        idle.push(wire::connect(http)?);
    }
    let at = Instant::now();
    let mut refused = 0;
    let mut open = 0;
    for stream in &mut idle {
        let left = within
            .saturating_sub(at.elapsed())
            .max(Duration::from_millis(1));
        let (got, end) = wire::read_to_end(stream, left);
        if got.starts_with(b"HTTP/1.1 503") {
            refused += 1;
        }
        if end == End::StillOpen {
            open += 1;
        }
    }
    Ok((refused, open))
}

/// Writes `bytes` (then half-closes, if asked), reads until the server
/// closes or `within` passes; returns the statuses and how it ended.
pub fn exchange(
    addr: SocketAddr,
    bytes: &[u8],
    half_close: bool,
    within: Duration,
) -> (Vec<u16>, End) {
    let Ok(mut stream) = wire::connect(addr) else {
        return (Vec::new(), End::Reset);
    };
    let _ = stream.write_all(bytes);
    let (got, end) = if half_close {
        wire::finish(&mut stream, within)
    } else {
        wire::read_to_end(&mut stream, within)
    };
    let statuses = match wire::responses(&got) {
        Ok(all) => all.iter().map(|r| r.status).collect(),
        Err((some, _)) => some.iter().map(|r| r.status).collect(),
    };
    (statuses, end)
}

/// Sends `bytes` and then nothing; returns what came and when it ended.
pub fn hold(addr: SocketAddr, bytes: &[u8], within: Duration) -> (Vec<u16>, End, Duration) {
    let at = Instant::now();
    let (statuses, end) = exchange(addr, bytes, false, within);
    (statuses, end, at.elapsed())
}

/// A head sent one byte a second; returns how it ended and when.
pub fn slowloris(addr: SocketAddr, give_up: Duration) -> (End, Duration) {
    let at = Instant::now();
    let Ok(mut stream) = wire::connect(addr) else {
        return (End::Reset, at.elapsed());
    };
    let head = b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    if stream.write_all(head).is_err() {
        return (End::Reset, at.elapsed());
    }
    while at.elapsed() < give_up {
        if stream.write_all(b"a").is_err() {
            return (End::Reset, at.elapsed());
        }
        // Has the server given up on us? Look for a second, then send again.
        let (_, end) = wire::read_to_end(&mut stream, Duration::from_secs(1));
        if end != End::StillOpen {
            return (end, at.elapsed());
        }
    }
    (End::StillOpen, at.elapsed())
}

/// Opens `fresh` idle connections and `after_one` that go idle after one
/// request; all must be closed by the server within `within`.
pub fn idle_sockets(
    http: SocketAddr,
    fresh: usize,
    after_one: usize,
    within: Duration,
) -> Vec<String> {
    let mut sockets = Vec::new();
    for i in 0..fresh + after_one {
        let Ok(mut stream) = wire::connect(http) else {
            return vec![format!("idle connection #{i} could not connect")];
        };
        if i >= fresh {
            let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        }
        sockets.push(stream);
    }
    let at = Instant::now();
    let mut open = 0;
    for stream in &mut sockets {
        let left = within
            .saturating_sub(at.elapsed())
            .max(Duration::from_millis(1));
        if wire::read_to_end(stream, left).1 == End::StillOpen {
            open += 1;
        }
    }
    if open > 0 {
        vec![format!(
            "{open} of {} idle HTTP connections were still open after {within:?} (finding 4)",
            fresh + after_one
        )]
    } else {
        Vec::new()
    }
}

/// An endless header line, 10,000 headers and a 1 MB URL (finding 5).
pub fn oversized_heads(http: SocketAddr) -> Vec<String> {
    let mut problems = Vec::new();
    // The endless line: 16 MiB at most, in 64 KiB writes; the server must
    // answer 431 (or close) long before.
    if let Ok(mut stream) = wire::connect(http) {
        let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: ");
        let chunk = vec![b'e'; 64 * 1024];
        let mut sent = 0;
        while sent < 16 << 20 && stream.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        let (got, _) = wire::read_to_end(&mut stream, secs(5));
        let statuses: Vec<u16> = wire::responses(&got)
            .map(|r| r.iter().map(|r| r.status).collect())
            .unwrap_or_default();
        if sent >= 16 << 20 {
            problems.push(format!(
                "an endless header line: all 16 MiB were taken, answered {statuses:?} (finding 5)"
            ));
        } else if !(statuses.is_empty() || statuses == [431]) {
            problems.push(format!(
                "an endless header line was answered {statuses:?}, not 431 (finding 5)"
            ));
        }
    }
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..10_000 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let (statuses, _) = exchange(http, many.as_bytes(), true, secs(10));
    if statuses != [431] {
        problems.push(format!(
            "10,000 headers were answered {statuses:?}, not 431 (finding 5)"
        ));
    }
    let url = format!(
        "GET /healthz?{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "u".repeat(1 << 20)
    );
    let (statuses, _) = exchange(http, url.as_bytes(), true, secs(10));
    if statuses != [414] {
        problems.push(format!(
            "a 1 MB URL was answered {statuses:?}, not 414 (finding 5)"
        ));
    }
    problems
}

/// Opens an SSE stream and waits for its `200` head.
pub fn sse_opens(http: SocketAddr, within: Duration) -> Result<(), String> {
    let mut stream = wire::connect(http)?;
    stream
        .write_all(b"GET /events?room=watch HTTP/1.1\r\nHost: x\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while wire::find(&got, b"\r\n\r\n").is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no answer within {within:?}"));
        }
        let _ = stream.set_read_timeout(Some(left));
        match std::io::Read::read(&mut stream, &mut chunk) {
            Ok(n) if n > 0 => got.extend_from_slice(&chunk[..n]),
            _ => return Err(format!("ended: {}", wire::show(&got))),
        }
    }
    if got.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("answered {}", wire::show(&got)))
    }
}

/// A text-mode client sees a message and a nick full of escapes; returns the
/// lines it got for them.
pub fn terminal_lines(ws: SocketAddr) -> Result<Vec<String>, String> {
    use tungstenite::Message;
    let url = |q: &str| format!("ws://{ws}/ws?room=term&{q}");
    let (mut reader, _) = tungstenite::connect(url("format=text")).map_err(|e| e.to_string())?;
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = reader.get_ref() {
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    }
    let mut lines = Vec::new();
    let mut read_until = |reader: &mut tungstenite::WebSocket<_>, mark: &str| {
        let deadline = Instant::now() + secs(5);
        while Instant::now() < deadline {
            match reader.read() {
                Ok(Message::Text(line)) => {
                    let line = line.to_string();
                    let found = line.contains(mark);
                    lines.push(line);
                    if found {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Err(format!("{mark:?} never came; lines: {lines:?}"))
    };
    // The welcome says the reader is a member: the 101 alone does not (the
    // server answers the handshake, then joins), and the writer's messages
    // must come after.
    read_until(&mut reader, "* welcome")?;
    let (mut writer, _) = tungstenite::connect(url("name=writer")).map_err(|e| e.to_string())?;
    let evil = "\u{1b}[2J\u{1b}]0;pwned\u{7} \u{202e}desrever \u{2028}next\u{0}";
    for text in [
        format!(
            r#"{{"type":"message","room":"term","text":{}}}"#,
            gen::json_string(evil)
        ),
        format!(
            r#"{{"type":"nick","name":{}}}"#,
            gen::json_string("\u{202e}evil\u{1b}[1m")
        ),
        r#"{"type":"message","room":"term","text":"TERM-END"}"#.to_string(),
    ] {
        writer
            .send(Message::text(text))
            .map_err(|e| e.to_string())?;
    }
    read_until(&mut reader, "TERM-END")?;
    Ok(lines)
}

/// POSTs a body of `bytes` (written until the server stops taking it);
/// returns the status, if one came.
pub fn big_body(http: SocketAddr, bytes: usize) -> Option<u16> {
    let mut stream = wire::connect(http).ok()?;
    let head = format!(
        "POST /rooms/x/messages HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {bytes}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).ok()?;
    let reader = stream.try_clone().ok()?;
    thread::scope(|s| {
        let answer = named(s, "big-body-read", move || {
            let mut reader = reader;
            wire::read_to_end(&mut reader, secs(20))
        });
        let chunk = vec![b'b'; 1 << 20];
        let mut sent = 0;
        while sent < bytes && stream.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let (got, _) = answer.join().ok()?;
        let first = match wire::responses(&got) {
            Ok(all) => all.first().map(|r| r.status),
            Err((some, _)) => some.first().map(|r| r.status),
        };
        first
    })
}
