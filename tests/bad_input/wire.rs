//! Raw sockets for the attackers: write pieces with pauses, read until the
//! server closes (with a deadline), split HTTP responses, and read server
//! WebSocket frames, so every byte the server sends is seen as it came.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::gen::Piece;

/// Connects with a timeout and Nagle off (so pieces arrive as written).
pub fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    Ok(stream)
}

/// Writes each piece, pausing after it; stops quietly if the server has
/// closed (an early answer is allowed to end the exchange).
pub fn send(stream: &mut TcpStream, pieces: &[Piece]) -> Result<(), String> {
    for piece in pieces {
        stream
            .write_all(&piece.bytes)
            .map_err(|e| format!("write: {e}"))?;
        if piece.pause_ms > 0 {
            // Pacing the attacker's own writes, not waiting for the server.
            std::thread::sleep(Duration::from_millis(piece.pause_ms));
        }
    }
    Ok(())
}

/// How a read-to-the-end went.
#[derive(Debug, PartialEq)]
pub enum End {
    /// The server closed (EOF).
    Closed,
    /// The server reset the connection.
    Reset,
    /// The deadline passed with the connection still open.
    StillOpen,
}

/// Reads until the server closes or `within` passes.
pub fn read_to_end(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, End) {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, End::StillOpen);
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut chunk) {
            Ok(0) => return (out, End::Closed),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (out, End::StillOpen)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return (out, End::Reset),
        }
    }
}

/// Half-closes, then reads whatever comes until the server closes.
pub fn finish(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, End) {
    let _ = stream.shutdown(Shutdown::Write);
    read_to_end(stream, within)
}

/// One HTTP response.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

/// Splits bytes into complete responses (interim `1xx` ones skipped); the
/// `Err` carries what could be parsed before the bytes stopped making sense.
pub fn responses(mut bytes: &[u8]) -> Result<Vec<Response>, (Vec<Response>, String)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let Some(head_end) = find(bytes, b"\r\n\r\n") else {
            let why = format!("a response head that never ended: {}", show(bytes));
            return Err((out, why));
        };
        let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|_| head.starts_with("HTTP/1."));
        let Some(status) = status else {
            return Err((out, format!("not a status line: {}", show(bytes))));
        };
        let header = |name: &str| {
            head.split("\r\n").skip(1).find_map(|line| {
                let (n, v) = line.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        let rest = &bytes[head_end + 4..];
        let (body, used) = if (100..200).contains(&status) {
            (Vec::new(), 0)
        } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            match dechunk(rest) {
                Some(done) => done,
                None => return Err((out, format!("a broken chunked body: {}", show(rest)))),
            }
        } else if let Some(len) = header("content-length") {
            let len: usize = len.parse().unwrap_or(usize::MAX);
            if rest.len() < len {
                return Err((out, format!("a body shorter than its length {len}")));
            }
            (rest[..len].to_vec(), len)
        } else {
            (rest.to_vec(), rest.len()) // until the close
        };
        if !(100..200).contains(&status) {
            out.push(Response { status, body });
        }
        bytes = &rest[used..];
    }
    Ok(out)
}

fn dechunk(mut bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let start = bytes.len();
    let mut body = Vec::new();
    loop {
        let line_end = find(bytes, b"\r\n")?;
        let size_text = std::str::from_utf8(&bytes[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            let trailer_end = find(bytes, b"\r\n")?; // no trailers expected
            bytes = &bytes[trailer_end + 2..];
            return Some((body, start - bytes.len()));
        }
        body.extend_from_slice(bytes.get(..size)?);
        bytes = bytes.get(size + 2..)?;
    }
}

/// Finds `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The start of `bytes`, escaped, for messages.
pub fn show(bytes: &[u8]) -> String {
    crate::gen::show(bytes, 200)
}

/// A simple request on its own connection: the status and body, or why not.
pub fn request(addr: SocketAddr, raw: &str, within: Duration) -> Result<Response, String> {
    let mut stream = connect(addr)?;
    stream
        .write_all(raw.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let (bytes, end) = read_to_end(&mut stream, within);
    match responses(&bytes) {
        Ok(mut all) if !all.is_empty() => Ok(all.remove(0)),
        Err((mut all, _)) if !all.is_empty() => Ok(all.remove(0)),
        _ => Err(format!(
            "no answer within {within:?} ({end:?}): {}",
            show(&bytes)
        )),
    }
}

/// `GET path` with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str, within: Duration) -> Result<Response, String> {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
        within,
    )
}

/// What a server sent on a WebSocket.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// A complete data message: opcode and payload.
    Message(u8, Vec<u8>),
    /// A ping.
    Ping(Vec<u8>),
    /// A pong.
    Pong(Vec<u8>),
    /// A close frame and its code (`None`: no code).
    Close(Option<u16>),
    /// The connection ended without a close frame.
    Ended(End),
    /// A frame no server may send (masked, reserved bits, bad fragments).
    Broken(String),
}

/// Reads server frames from a raw socket.
pub struct FrameReader {
    buf: Vec<u8>,
    message: Option<(u8, Vec<u8>)>,
}

impl FrameReader {
    /// A reader that starts with `leftover`, the bytes after the handshake.
    pub fn new(leftover: Vec<u8>) -> FrameReader {
        FrameReader {
            buf: leftover,
            message: None,
        }
    }

    /// The next thing the server sent, or `Ended(StillOpen)` at `deadline`.
    pub fn next(&mut self, stream: &mut TcpStream, deadline: Instant) -> Incoming {
        loop {
            if let Some(incoming) = self.parse() {
                return incoming;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Incoming::Ended(End::StillOpen);
            }
            let _ = stream.set_read_timeout(Some(left));
            let mut chunk = [0u8; 16 * 1024];
            match stream.read(&mut chunk) {
                Ok(0) => return Incoming::Ended(End::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Incoming::Ended(End::StillOpen)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Incoming::Ended(End::Reset),
            }
        }
    }

    fn parse(&mut self) -> Option<Incoming> {
        loop {
            let b = &self.buf;
            if b.len() < 2 {
                return None;
            }
            let (fin, rsv, opcode) = (b[0] & 0x80 != 0, b[0] & 0x70, b[0] & 0x0F);
            if b[1] & 0x80 != 0 || rsv != 0 {
                return Some(Incoming::Broken(format!(
                    "frame header {:02x} {:02x}",
                    b[0], b[1]
                )));
            }
            let (len, at) = match b[1] & 0x7F {
                126 => (
                    u64::from(u16::from_be_bytes(b.get(2..4)?.try_into().ok()?)),
                    4,
                ),
                127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?), 10),
                n => (u64::from(n), 2),
            };
            if len > 16 << 20 {
                return Some(Incoming::Broken(format!("a frame of {len} bytes")));
            }
            let end = at + len as usize;
            if b.len() < end {
                return None;
            }
            let payload = b[at..end].to_vec();
            self.buf.drain(..end);
            match opcode {
                0x8 => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Some(Incoming::Close(code));
                }
                0x9 => return Some(Incoming::Ping(payload)),
                0xA => return Some(Incoming::Pong(payload)),
                0x1 | 0x2 if self.message.is_none() => {
                    if fin {
                        return Some(Incoming::Message(opcode, payload));
                    }
                    self.message = Some((opcode, payload));
                }
                0x0 if self.message.is_some() => {
                    let (kind, mut so_far) = self.message.take().expect("checked");
                    so_far.extend_from_slice(&payload);
                    if fin {
                        return Some(Incoming::Message(kind, so_far));
                    }
                    self.message = Some((kind, so_far));
                }
                other => return Some(Incoming::Broken(format!("opcode {other:#x} out of place"))),
            }
        }
    }
}

/// A masked client frame.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame =
        crate::gen::frames::Frame::new(opcode, payload.to_vec(), [0x5a, 0xa5, 0x3c, 0xc3]);
    frame.fin = true;
    frame.encode()
}

/// Performs a valid handshake for `path`; returns the stream and the bytes
/// that came after the `101` head.
pub fn ws_open(addr: SocketAddr, path: &str) -> Result<(TcpStream, Vec<u8>), String> {
    let mut stream = connect(addr)?;
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .map_err(|e| format!("write the handshake: {e}"))?;
    read_upgrade(&mut stream, Instant::now() + Duration::from_secs(5))
        .map(|leftover| (stream, leftover))
}

/// Reads a handshake answer: `Ok(bytes after the head)` for a `101`, or
/// `Err` naming the status or the failure.
pub fn read_upgrade(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, String> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&got, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            if head.starts_with("HTTP/1.1 101 ") {
                return Ok(got[end + 4..].to_vec());
            }
            return Err(format!("answered {}", head.lines().next().unwrap_or("")));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no handshake answer in time: {}", show(&got)));
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut chunk) {
            Ok(0) => return Err(format!("closed during the handshake: {}", show(&got))),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("handshake read: {e}")),
        }
    }
}
