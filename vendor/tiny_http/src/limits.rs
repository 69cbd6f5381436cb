//! What one connection may make the server hold (a switchboard patch, see
//! PATCHES.md): the size of a request head, the time a request may take to
//! arrive, and how much of an unread body is drained to keep the connection.

use std::io;
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bounds on one connection's requests. Past a size bound the request gets
/// `414` (request line) or `431` (headers) and the connection closes; past
/// `request_timeout` it gets `408` (or, if nothing of it had arrived yet, the
/// idle connection just closes).
#[derive(Clone, Debug)]
pub struct Limits {
    /// The request line (`GET /path HTTP/1.1`), in bytes.
    pub max_request_line_bytes: usize,
    /// One header line, in bytes.
    pub max_header_line_bytes: usize,
    /// How many header lines.
    pub max_headers: usize,
    /// The whole head: request line and header lines.
    pub max_head_bytes: usize,
    /// Each request, head and body, must arrive within this long of the
    /// moment the connection starts waiting for it (so it is also how long a
    /// keep-alive connection may sit idle). A whole-request deadline, not a
    /// per-read one: a byte every few seconds cannot stretch it.
    pub request_timeout: Duration,
    /// An unread body up to this size is read and thrown away so the
    /// connection can carry the next request; a larger one closes it.
    pub max_drain_bytes: usize,
    /// The most of a chunked request body read off the wire, chunk framing
    /// included; past it, reading the body fails.
    pub max_chunked_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_request_line_bytes: 8 * 1024,
            max_header_line_bytes: 8 * 1024,
            max_headers: 100,
            max_head_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(10),
            max_drain_bytes: 64 * 1024,
            max_chunked_bytes: 1024 * 1024,
        }
    }
}

/// The instant the request being read must have arrived by, shared by the
/// connection (which sets it as it starts on each request) and the readers of
/// that request's head and body.
#[derive(Debug, Default)]
pub(crate) struct Deadline(Mutex<Option<Instant>>);

impl Deadline {
    pub(crate) fn set(&self, at: Option<Instant>) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = at;
    }

    /// Gives the socket's next read what is left of the deadline, or fails
    /// with `TimedOut` once it has passed.
    pub(crate) fn arm(&self, socket: &TcpStream) -> io::Result<()> {
        let at = *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(at) = at else {
            return Ok(());
        };
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request did not arrive in time",
            ));
        }
        socket.set_read_timeout(Some(left))
    }
}
