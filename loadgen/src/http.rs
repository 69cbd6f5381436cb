//! The HTTP side of a hub: Server-Sent Events subscribers and REST publishers,
//! over plain tokio TCP streams.
//!
//! An SSE stream is line-based (`id:`, `event:`, `data:` lines, a blank line
//! ends an event), so a subscriber only needs the response head, the chunked
//! transfer decoding a streaming server is likely to use, and complete lines to
//! scan for markers. Publishing is `POST /rooms/{room}/messages` with a JSON
//! body on a keep-alive connection, pipelined (a window of unanswered
//! requests) so one publisher connection is not limited to one message per
//! round trip.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::target::{ConnectError, Target};
use crate::ws::{read_response_head_with, Ending};

/// Longest SSE line accepted before the stream is declared broken.
const MAX_LINE: usize = 1 << 20;

/// Opens an SSE stream: sends the GET, checks for `200`, and returns a reader
/// primed with whatever body bytes came along with the head.
pub async fn open_sse(
    stream: &mut TcpStream,
    target: &Target,
    timeout: Duration,
) -> Result<SseReader, ConnectError> {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
        target.path, target.host_header
    );
    let exchange = async {
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| ConnectError::Io(e.kind()))?;
        let (status, chunked, leftover) = read_response_head_with(stream, is_chunked).await?;
        if status != 200 {
            return Err(ConnectError::Status(status));
        }
        let mut reader = SseReader::new(chunked);
        reader
            .absorb(&leftover)
            .map_err(|_| ConnectError::BadResponse)?;
        Ok(reader)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ConnectError::HandshakeTimeout)?
}

fn is_chunked(headers: &[httparse::Header<'_>]) -> bool {
    headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked")
    })
}

fn content_length(headers: &[httparse::Header<'_>]) -> Option<usize> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse().ok())
}

fn wants_close(headers: &[httparse::Header<'_>]) -> bool {
    headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
    })
}

/// Incremental decoder for `Transfer-Encoding: chunked`.
#[derive(Debug, Default)]
struct Dechunker {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size; `digits` seen so far.
    #[default]
    Size,
    SizeDigits(u64),
    /// Skipping a chunk extension up to the line end.
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// The last chunk was seen: the body is over.
    Done,
}

impl Dechunker {
    /// Decodes `input`, appending payload to `out`. `Ok(true)` when the body
    /// has ended.
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<bool, ()> {
        use ChunkState::*;
        while let Some((&b, rest)) = input.split_first() {
            self.state = match self.state {
                Size | SizeDigits(_) => {
                    let so_far = match self.state {
                        SizeDigits(v) => Some(v),
                        _ => None,
                    };
                    match (b as char).to_digit(16) {
                        Some(d) => SizeDigits(
                            so_far.unwrap_or(0).checked_mul(16).ok_or(())? + u64::from(d),
                        ),
                        None => match (so_far, b) {
                            (Some(v), b'\r') => SizeLf(v),
                            (Some(v), b';' | b' ' | b'\t') => Extension(v),
                            _ => return Err(()),
                        },
                    }
                }
                Extension(v) if b == b'\r' => SizeLf(v),
                Extension(v) => Extension(v),
                SizeLf(0) if b == b'\n' => Done,
                SizeLf(v) if b == b'\n' => Data(v),
                SizeLf(_) => return Err(()),
                Data(remaining) => {
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    let left = remaining - take as u64;
                    self.state = if left == 0 { DataCr } else { Data(left) };
                    continue;
                }
                DataCr if b == b'\r' => DataLf,
                DataLf if b == b'\n' => Size,
                DataCr | DataLf => return Err(()),
                Done => return Ok(true),
            };
            input = rest;
        }
        Ok(self.state == Done)
    }
}

/// Reads an SSE body and hands complete lines to the marker scanner.
pub struct SseReader {
    dechunker: Option<Dechunker>,
    raw: Vec<u8>,
    /// Decoded body bytes not yet ending in a newline.
    pending: Vec<u8>,
    ended: bool,
}

impl SseReader {
    fn new(chunked: bool) -> Self {
        SseReader {
            dechunker: chunked.then(Dechunker::default),
            raw: vec![0u8; 16 * 1024],
            pending: Vec::with_capacity(4 * 1024),
            ended: false,
        }
    }

    fn absorb(&mut self, bytes: &[u8]) -> Result<(), ()> {
        match &mut self.dechunker {
            Some(d) => {
                if d.feed(bytes, &mut self.pending)? {
                    self.ended = true;
                }
            }
            None => self.pending.extend_from_slice(bytes),
        }
        if self.pending.len() > MAX_LINE && !self.pending.contains(&b'\n') {
            return Err(());
        }
        Ok(())
    }

    /// Reads once; returns the number of raw bytes read, or how the stream
    /// ended.
    pub async fn fill(&mut self, stream: &mut TcpStream) -> Result<usize, Ending> {
        if self.ended {
            return Err(Ending::Eof);
        }
        let n = match stream.read(&mut self.raw).await {
            Ok(0) => return Err(Ending::Eof),
            Ok(n) => n,
            Err(e) => return Err(Ending::Io(e.kind())),
        };
        let raw = std::mem::take(&mut self.raw);
        let result = self.absorb(&raw[..n]);
        self.raw = raw;
        result.map_err(|_| Ending::Protocol)?;
        Ok(n)
    }

    /// Hands every complete line received so far to `on_lines` (as one slice)
    /// and keeps the unfinished rest.
    pub fn drain(&mut self, on_lines: impl FnOnce(&[u8])) {
        if let Some(last_newline) = memchr::memrchr(b'\n', &self.pending) {
            on_lines(&self.pending[..=last_newline]);
            self.pending.drain(..=last_newline);
        }
    }
}

/// A keep-alive connection that publishes messages with `POST`, pipelined:
/// requests are written when due, a reader task takes the answers as they
/// come, and at most `window` requests are unanswered at any time. So the
/// publisher's rate is bounded by the server, not by one round trip per
/// message.
pub struct RestPublisher {
    target: Target,
    timeout: Duration,
    authorization: Option<String>,
    from: String,
    window: usize,
    write: Option<OwnedWriteHalf>,
    in_flight: Arc<Semaphore>,
    answers: Arc<Answers>,
    reader: Option<JoinHandle<()>>,
    request: Vec<u8>,
}

/// What the server answered so far.
#[derive(Default)]
struct Answers {
    accepted: AtomicU64,
    rejected: AtomicU64,
    ended: Mutex<Option<String>>,
}

/// What a publisher's requests came to in the end.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Requests answered with a 2xx status.
    pub accepted: u64,
    /// Requests answered with any other status.
    pub rejected: u64,
    /// Requests never answered.
    pub unanswered: u64,
    /// How the connection ended early, if it did.
    pub failure: Option<String>,
}

impl Drop for RestPublisher {
    fn drop(&mut self) {
        if let Some(reader) = &self.reader {
            reader.abort();
        }
    }
}

impl RestPublisher {
    /// A publisher for `target` (path `/rooms/{room}/messages`) with at most
    /// `window` requests in flight.
    pub fn new(
        target: Target,
        timeout: Duration,
        api_key: Option<&str>,
        from: String,
        window: usize,
    ) -> Self {
        let window = window.max(1);
        RestPublisher {
            target,
            timeout,
            authorization: api_key.map(|k| format!("Authorization: Bearer {k}\r\n")),
            from,
            window,
            write: None,
            in_flight: Arc::new(Semaphore::new(window)),
            answers: Arc::new(Answers::default()),
            reader: None,
            request: Vec::with_capacity(4096),
        }
    }

    /// Requests allowed in flight.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Connects and starts reading answers.
    pub async fn connect(&mut self) -> Result<(), ConnectError> {
        let stream = crate::target::connect(self.target.addr, self.timeout).await?;
        let (mut read, write) = stream.into_split();
        let answers = self.answers.clone();
        let in_flight = self.in_flight.clone();
        self.reader = Some(tokio::spawn(async move {
            let ending = read_answers(&mut read, &answers, &in_flight).await;
            *crate::track::lock(&answers.ended) = Some(ending);
        }));
        self.write = Some(write);
        Ok(())
    }

    /// Writes one request per text once there is room in the window; gives up
    /// at `deadline`.
    pub async fn send(&mut self, texts: &[&[u8]], deadline: Instant) -> Result<(), String> {
        let n = u32::try_from(texts.len().min(self.window)).unwrap_or(u32::MAX);
        match tokio::time::timeout_at(deadline.into(), self.in_flight.acquire_many(n)).await {
            Ok(Ok(permits)) => permits.forget(),
            Ok(Err(_)) => return Err("closed".into()),
            Err(_) => return Err("no answers until the deadline".into()),
        }
        self.request.clear();
        for text in &texts[..n as usize] {
            let body_len = br#"{"text":"","from":""}"#.len() + text.len() + self.from.len();
            self.request.extend_from_slice(
                format!(
                    "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
                    self.target.path,
                    self.target.host_header,
                    body_len,
                    self.authorization.as_deref().unwrap_or("")
                )
                .as_bytes(),
            );
            // Marker text is ASCII letters, digits and `|`: nothing to escape.
            self.request.extend_from_slice(br#"{"text":""#);
            self.request.extend_from_slice(text);
            self.request.extend_from_slice(br#"","from":""#);
            self.request.extend_from_slice(self.from.as_bytes());
            self.request.extend_from_slice(br#""}"#);
        }
        let write = self.write.as_mut().ok_or("not connected")?;
        match tokio::time::timeout_at(deadline.into(), write.write_all(&self.request)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("io:{:?}", e.kind())),
            Err(_) => Err("write stalled until the deadline".into()),
        }
    }

    /// Waits up to `wait` for the answers still due and tallies them.
    pub async fn finish(&mut self, wait: Duration) -> Outcome {
        let window = u32::try_from(self.window).unwrap_or(u32::MAX);
        let all_answered = tokio::time::timeout(wait, self.in_flight.acquire_many(window)).await;
        let unanswered = match all_answered {
            Ok(Ok(permits)) => {
                drop(permits);
                0
            }
            _ => (self.window - self.in_flight.available_permits().min(self.window)) as u64,
        };
        Outcome {
            accepted: self.answers.accepted.load(Ordering::Relaxed),
            rejected: self.answers.rejected.load(Ordering::Relaxed),
            unanswered,
            failure: crate::track::lock(&self.answers.ended).clone(),
        }
    }
}

/// Reads HTTP answers until the connection ends, freeing one window slot per
/// answer; returns how it ended.
async fn read_answers(
    read: &mut OwnedReadHalf,
    answers: &Answers,
    in_flight: &Semaphore,
) -> String {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            let head_len = match response.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => break,
                Err(_) => return "bad_response".into(),
            };
            if is_chunked(response.headers) {
                return "chunked answer".into(); // not expected for a tiny JSON answer
            }
            let body_len = content_length(response.headers).unwrap_or(0);
            if buf.len() < head_len + body_len {
                break;
            }
            let status = response.code.unwrap_or(0);
            let close = wants_close(response.headers);
            buf.drain(..head_len + body_len);
            let counter = if (200..300).contains(&status) {
                &answers.accepted
            } else {
                &answers.rejected
            };
            counter.fetch_add(1, Ordering::Relaxed);
            in_flight.add_permits(1);
            if close {
                return "server closed the connection".into();
            }
        }
        match read.read(&mut chunk).await {
            Ok(0) => return "eof".into(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return format!("io:{:?}", e.kind()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks_across_arbitrary_splits() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n world\n\r\n0\r\n\r\n";
        for split in 0..body.len() {
            let mut d = Dechunker::default();
            let mut out = Vec::new();
            let first = d.feed(&body[..split], &mut out).unwrap();
            let second = d.feed(&body[split..], &mut out).unwrap();
            assert!(!first || split >= body.len() - 4);
            assert!(second);
            assert_eq!(out, b"hello world\n");
        }
    }

    #[test]
    fn rejects_garbage_chunk_sizes() {
        let mut d = Dechunker::default();
        assert!(d.feed(b"zz\r\n", &mut Vec::new()).is_err());
    }

    #[test]
    fn hands_over_complete_lines_only() {
        let mut r = SseReader::new(false);
        r.absorb(b"id: 1\ndata: LG|1|0|0|5|\n\nda").unwrap();
        let mut got = Vec::new();
        r.drain(|lines| got.extend_from_slice(lines));
        assert_eq!(got, b"id: 1\ndata: LG|1|0|0|5|\n\n");
        assert_eq!(r.pending, b"da");
    }
}
