//! Writing through: the hub writes a member's events to its socket itself
//! (a WebSocket's frames, an SSE stream's chunk), without waiting, when
//! nothing is queued for it and its writer is not writing; only what the
//! socket cannot take at once goes through the queue, and wakes the writer
//! thread.
//!
//! Why: at a thousand members, a wake-up and the context switches that come
//! with it cost more than the write itself, so every event reached the last
//! member later than the Go hub's (`docs/performance.md`). A write to a
//! socket with room takes microseconds and never blocks the hub.
//!
//! Order: every write to the socket happens under one lock (`hold`). The
//! hub writes through only while it holds the lock and the queue is empty;
//! the writer takes items from the queue only while it holds the lock, and
//! writes them before it lets go. The hub is the queue's only producer, so
//! nothing it queued can be overtaken. A write that stops part-way leaves
//! the rest as the queue's next item (`Unfinished`), queued under the lock,
//! so it goes out before any other byte.

use std::io::IoSlice;
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::os::send::send_now;
use crate::protocol::{chunk_size_line, Event, Format, CHUNK_SIZE_LINE_ROOM};

use super::Outbound;

/// The most events one write through takes (the kernel's `IOV_MAX` is
/// 1024): a longer item goes through the queue.
const MAX_EVENTS: usize = 64;

/// A member's socket, as the hub may write to it.
pub struct Through {
    socket: Arc<TcpStream>,
    framing: Framing,
    /// Held by whoever writes to the socket.
    lock: Mutex<()>,
}

/// How events are framed on the socket.
#[derive(Clone, Copy)]
enum Framing {
    /// A WebSocket text frame each, in this format.
    WebSocket(Format),
    /// SSE blocks, as one HTTP/1.1 chunk (or as they are, for HTTP/1.0).
    Sse { chunked: bool },
}

/// The bytes of an item that a write through left unwritten: they go out
/// first, before anything else (see the module doc).
#[derive(Debug)]
pub struct Unfinished {
    /// What is left to write.
    pub bytes: Vec<u8>,
    /// The events they finish, for the queue's count.
    pub events: usize,
}

/// What a write through did.
pub(super) enum Wrote {
    /// The whole item.
    All,
    /// Nothing: the socket is full (or the write failed; the writer will
    /// find out for itself).
    Nothing,
    /// The first part: the rest is to be queued.
    Part(Unfinished),
}

impl Through {
    /// Writes WebSocket frames in `format` through to `socket`.
    pub fn websocket(socket: Arc<TcpStream>, format: Format) -> Through {
        Through::with(socket, Framing::WebSocket(format))
    }

    /// Writes SSE blocks through to `socket`, in a chunked body or not.
    pub fn sse(socket: Arc<TcpStream>, chunked: bool) -> Through {
        Through::with(socket, Framing::Sse { chunked })
    }

    fn with(socket: Arc<TcpStream>, framing: Framing) -> Through {
        Through {
            socket,
            framing,
            lock: Mutex::new(()),
        }
    }

    /// The lock, for the writer thread: held while it takes from the queue
    /// and writes.
    pub(super) fn hold(&self) -> MutexGuard<'_, ()> {
        self.lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The lock, for the hub: never waits.
    pub(super) fn try_hold(&self) -> Option<MutexGuard<'_, ()>> {
        self.lock.try_lock().ok()
    }

    /// One event as this socket takes it (encoded once, shared by every member).
    fn bytes_of<'a>(&self, event: &'a Event) -> &'a [u8] {
        match self.framing {
            Framing::WebSocket(format) => event.ws_frame(format),
            Framing::Sse { .. } => event.sse_block(),
        }
    }

    /// Writes `item`'s frames without waiting (the caller holds the lock).
    pub(super) fn write(&self, item: &Outbound) -> Wrote {
        let events = match item {
            Outbound::Event(_) | Outbound::Run(..) => item.events(),
            _ => return Wrote::Nothing,
        };
        if events.is_empty() || events.len() > MAX_EVENTS {
            return Wrote::Nothing;
        }
        // The events' bytes, between an HTTP chunk's size line and its end
        // for a chunked SSE body.
        let chunked = matches!(self.framing, Framing::Sse { chunked: true });
        let mut slices = [IoSlice::new(&[]); MAX_EVENTS + 2];
        let mut size_line = [0u8; CHUNK_SIZE_LINE_ROOM];
        let mut used = 0;
        if chunked {
            let payload: usize = events.iter().map(|e| self.bytes_of(e).len()).sum();
            slices[0] = IoSlice::new(chunk_size_line(payload, &mut size_line));
            used = 1;
        }
        for event in events {
            slices[used] = IoSlice::new(self.bytes_of(event));
            used += 1;
        }
        if chunked {
            slices[used] = IoSlice::new(b"\r\n");
            used += 1;
        }
        let frames = &slices[..used];
        let total: usize = frames.iter().map(|f| f.len()).sum();
        let written = match send_now(&self.socket, frames) {
            Ok(n) => n,
            Err(_) => return Wrote::Nothing,
        };
        if written == 0 {
            return Wrote::Nothing;
        }
        if written == total {
            return Wrote::All;
        }
        let mut bytes = Vec::with_capacity(total - written);
        let mut skip = written;
        for frame in frames {
            let from = skip.min(frame.len());
            skip -= from;
            bytes.extend_from_slice(&frame[from..]);
        }
        Wrote::Part(Unfinished {
            bytes,
            events: item.counted(),
        })
    }
}
