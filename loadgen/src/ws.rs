//! A deliberately small WebSocket client: handshake, an in-place frame parser for
//! what servers send, and masked frames for what clients send.
//!
//! Why not tokio-tungstenite: the load generator has one core to itself while the
//! server under test has the other, and at the fan-out rates the targets ask for
//! it must take in over two million frames a second. A general client allocates
//! a message per frame and validates UTF-8; this one parses frames where they lie
//! in one reusable read buffer per connection and hands their payload to the
//! marker scanner, so the cost per frame is a header decode and a `memmem` scan.
//! It implements what a client of a broadcast server needs (RFC 6455: unmasked
//! server frames of any length, fragmentation, ping → pong, close) and no more:
//! no extensions, no subprotocols, and the server's `Sec-WebSocket-Accept` is not
//! verified (the status line is).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::target::{ConnectError, Target};

/// Largest handshake response accepted.
const MAX_HANDSHAKE: usize = 16 * 1024;
/// Largest message (after reassembly of fragments) accepted from a server.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// The opcodes of RFC 6455.
mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// Performs the opening handshake on `stream` (and sends the target's join
/// message, if any). On success returns the bytes the server sent after its
/// response (often a first frame), to be fed to a [`FrameReader`].
pub async fn handshake(
    stream: &mut TcpStream,
    target: &Target,
    timeout: Duration,
) -> Result<Vec<u8>, ConnectError> {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        target.path, target.host_header
    );
    let exchange = async {
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| ConnectError::Io(e.kind()))?;
        let (status, leftover) = read_response_head(stream).await?;
        if status != 101 {
            return Err(ConnectError::Status(status));
        }
        if let Some(join) = &target.join_message {
            let mut frame = Vec::with_capacity(join.len() + 14);
            encode_text(&mut frame, join.as_bytes());
            stream
                .write_all(&frame)
                .await
                .map_err(|e| ConnectError::Io(e.kind()))?;
        }
        Ok(leftover)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ConnectError::HandshakeTimeout)?
}

/// Reads an HTTP response head; returns its status and whatever followed it.
pub async fn read_response_head(stream: &mut TcpStream) -> Result<(u16, Vec<u8>), ConnectError> {
    let (status, _, leftover) = read_response_head_with(stream, |_| ()).await?;
    Ok((status, leftover))
}

/// Reads an HTTP response head, letting `inspect` look at the parsed headers.
pub async fn read_response_head_with<T>(
    stream: &mut TcpStream,
    inspect: impl FnOnce(&[httparse::Header<'_>]) -> T,
) -> Result<(u16, T, Vec<u8>), ConnectError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| ConnectError::Io(e.kind()))?;
        if n == 0 {
            return Err(ConnectError::BadResponse);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = response.code.ok_or(ConnectError::BadResponse)?;
                let seen = inspect(response.headers);
                return Ok((status, seen, buf[len..].to_vec()));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HANDSHAKE => continue,
            _ => return Err(ConnectError::BadResponse),
        }
    }
}

/// How a connection ended, as seen by the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// A close frame, with its status code if it had one.
    Close(Option<u16>),
    /// The TCP stream ended without a close frame.
    Eof,
    /// A socket error.
    Io(std::io::ErrorKind),
    /// The server broke the framing rules (or sent an oversized message).
    Protocol,
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Close(Some(code)) => write!(f, "close:{code}"),
            Ending::Close(None) => write!(f, "close"),
            Ending::Eof => write!(f, "eof"),
            Ending::Io(kind) => write!(f, "io:{kind:?}"),
            Ending::Protocol => write!(f, "protocol"),
        }
    }
}

/// Parses server frames out of one growable buffer, reusing it for the life of
/// the connection.
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Reassembly of a fragmented message (rare: servers seldom fragment).
    fragments: Vec<u8>,
    in_fragmented_message: bool,
}

impl FrameReader {
    /// A reader with `capacity` bytes of buffer, primed with bytes that arrived
    /// together with the handshake response.
    pub fn new(capacity: usize, primed: &[u8]) -> Self {
        let mut buf = vec![0u8; capacity.max(primed.len()).max(64)];
        buf[..primed.len()].copy_from_slice(primed);
        FrameReader {
            buf,
            start: 0,
            end: primed.len(),
            fragments: Vec::new(),
            in_fragmented_message: false,
        }
    }

    /// Reads once from `stream` (making room first); returns the bytes read, 0
    /// at end of stream.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, stream: &mut R) -> std::io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                // One frame larger than the buffer: grow (bounded by MAX_MESSAGE
                // through the frame length check in `drain`).
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        let n = stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// Parses every complete frame in the buffer: `on_message` gets each data
    /// message's payload, pongs for pings are appended to `replies`. Returns
    /// `Some` when the server closed or broke the protocol.
    pub fn drain(
        &mut self,
        mut on_message: impl FnMut(&[u8]),
        replies: &mut Vec<u8>,
    ) -> Option<Ending> {
        loop {
            let available = &mut self.buf[self.start..self.end];
            // Not enough bytes for a header yet: wait for more.
            let header = match parse_header(available)? {
                Ok(h) => h,
                Err(()) => return Some(Ending::Protocol),
            };
            if header.payload_len > MAX_MESSAGE as u64 {
                return Some(Ending::Protocol);
            }
            let total = header.header_len + header.payload_len as usize;
            if available.len() < total {
                return None;
            }
            let payload = &mut available[header.header_len..total];
            if let Some(mask) = header.mask {
                apply_mask(payload, mask, 0);
            }
            self.start += total;
            match header.opcode {
                opcode::TEXT | opcode::BINARY if header.fin && !self.in_fragmented_message => {
                    on_message(payload)
                }
                opcode::TEXT | opcode::BINARY | opcode::CONTINUATION => {
                    let starts = header.opcode != opcode::CONTINUATION;
                    if starts == self.in_fragmented_message {
                        return Some(Ending::Protocol);
                    }
                    if self.fragments.len() + payload.len() > MAX_MESSAGE {
                        return Some(Ending::Protocol);
                    }
                    self.fragments.extend_from_slice(payload);
                    self.in_fragmented_message = !header.fin;
                    if header.fin {
                        on_message(&self.fragments);
                        self.fragments.clear();
                    }
                }
                opcode::PING => encode_frame(replies, opcode::PONG, payload),
                opcode::PONG => {}
                opcode::CLOSE => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Some(Ending::Close(code));
                }
                _ => return Some(Ending::Protocol),
            }
        }
    }
}

struct Header {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    header_len: usize,
    payload_len: u64,
}

/// `None`: not enough bytes yet; `Some(Err)`: not a valid frame header.
fn parse_header(bytes: &[u8]) -> Option<Result<Header, ()>> {
    if bytes.len() < 2 {
        return None;
    }
    let fin = bytes[0] & 0x80 != 0;
    if bytes[0] & 0x70 != 0 {
        return Some(Err(())); // reserved bits: no extension was negotiated
    }
    let opcode = bytes[0] & 0x0F;
    let masked = bytes[1] & 0x80 != 0;
    let (payload_len, mut header_len) = match bytes[1] & 0x7F {
        126 => {
            if bytes.len() < 4 {
                return None;
            }
            (u64::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4)
        }
        127 => {
            let len_bytes: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(len_bytes), 10)
        }
        short => (u64::from(short), 2),
    };
    let mask = if masked {
        let key: [u8; 4] = bytes.get(header_len..header_len + 4)?.try_into().ok()?;
        header_len += 4;
        Some(key)
    } else {
        None
    };
    Some(Ok(Header {
        fin,
        opcode,
        mask,
        header_len,
        payload_len,
    }))
}

fn apply_mask(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[(i + offset) % 4];
    }
}

/// A mask key for a client frame. RFC 6455 wants it unpredictable to defeat
/// cache poisoning by intermediaries; on loopback to a test server a cheap
/// per-frame xorshift is plenty.
fn next_mask() -> [u8; 4] {
    use std::cell::Cell;
    thread_local!(static STATE: Cell<u32> = const { Cell::new(0x9E37_79B9) });
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        s.set(x);
        x.to_be_bytes()
    })
}

/// Appends one complete, masked client frame.
fn encode_frame(out: &mut Vec<u8>, op: u8, payload: &[u8]) {
    out.push(0x80 | op);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = next_mask();
    out.extend_from_slice(&mask);
    let at = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[at..], mask, 0);
}

/// Appends a masked text frame.
pub fn encode_text(out: &mut Vec<u8>, payload: &[u8]) {
    encode_frame(out, opcode::TEXT, payload);
}

/// Appends a masked close frame with status 1000 (normal closure).
pub fn encode_close(out: &mut Vec<u8>) {
    encode_frame(out, opcode::CLOSE, &1000u16.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | op];
        if payload.len() < 126 {
            out.push(payload.len() as u8);
        } else if payload.len() <= 65535 {
            out.push(126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        } else {
            out.push(127);
            out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    fn drain_all(bytes: &[u8]) -> (Vec<Vec<u8>>, Vec<u8>, Option<Ending>) {
        let mut reader = FrameReader::new(8, bytes);
        let mut messages = Vec::new();
        let mut replies = Vec::new();
        let ending = reader.drain(|m| messages.push(m.to_vec()), &mut replies);
        (messages, replies, ending)
    }

    #[test]
    fn parses_short_medium_and_long_frames() {
        let big = vec![b'a'; 70_000];
        let mut bytes = server_frame(opcode::TEXT, true, b"hi");
        bytes.extend(server_frame(opcode::BINARY, true, &[b'b'; 300]));
        bytes.extend(server_frame(opcode::TEXT, true, &big));
        let (messages, _, ending) = drain_all(&bytes);
        assert_eq!(ending, None);
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[0], b"hi");
        assert_eq!(messages[1].len(), 300);
        assert_eq!(messages[2].len(), 70_000);
    }

    #[test]
    fn reassembles_fragments_across_a_ping() {
        let mut bytes = server_frame(opcode::TEXT, false, b"LG|1|");
        bytes.extend(server_frame(opcode::PING, true, b"p"));
        bytes.extend(server_frame(opcode::CONTINUATION, true, b"2|3|4|"));
        let (messages, replies, ending) = drain_all(&bytes);
        assert_eq!(ending, None);
        assert_eq!(messages, vec![b"LG|1|2|3|4|".to_vec()]);
        // One masked pong with a one-byte payload: 2 header + 4 mask + 1.
        assert_eq!(replies.len(), 7);
        assert_eq!(replies[0], 0x80 | opcode::PONG);
    }

    #[test]
    fn waits_for_incomplete_frames_and_reports_close_codes() {
        let frame = server_frame(opcode::TEXT, true, b"hello");
        let (messages, _, ending) = drain_all(&frame[..4]);
        assert!(messages.is_empty());
        assert_eq!(ending, None);
        let (_, _, ending) = drain_all(&server_frame(opcode::CLOSE, true, &1008u16.to_be_bytes()));
        assert_eq!(ending, Some(Ending::Close(Some(1008))));
    }

    #[test]
    fn client_frames_are_masked_and_round_trip() {
        let mut out = Vec::new();
        encode_text(&mut out, b"hello");
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1], 0x80 | 5);
        let mut reader = FrameReader::new(64, &out);
        let mut got = Vec::new();
        assert_eq!(reader.drain(|m| got = m.to_vec(), &mut Vec::new()), None);
        assert_eq!(got, b"hello");
    }
}
