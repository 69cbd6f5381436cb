//! Server-Sent Events on `--http`: the connection's own thread becomes the
//! subscriber's writer.
//!
//! ```text
//! [http c9] --GET /events--> stream <--Outbound (--send-buffer events)-- [hub]
//!                              |  Connect / Disconnect
//!                              +-----------------------------------------> [hub]
//! ```
//!
//! An SSE subscriber only listens, so the thread that read its request is
//! all it needs: it waits on its queue and on the heartbeat clock, and
//! writes. While nothing is queued, the hub writes events to the socket
//! itself, framed the same way (`queue::through`); the thread writes what
//! had to be queued, the heartbeats and the end.
//!
//! tiny_http parses the request; `Request::into_writer` then hands over the
//! raw connection, and this module writes the response head and every
//! event itself, one flush per batch. tiny_http's own chunked
//! responses buffer 8 KiB before sending anything, so a lone small event
//! would sit in memory: that is why the body is framed by hand.
//!
//! The body is chunked (HTTP/1.1), so the stream can *end* cleanly with its
//! last chunk; `Connection: close` says no request follows, and the socket
//! closes after. HTTP/1.0 peers get a body that runs until close.
//!
//! Three ways out, each noticed by this thread, and each ends the connection
//! (so a browser's `EventSource` reconnects):
//! - the peer went away: a write fails. The kernel reports a closed peer only
//!   on the write *after* the one it answered with a reset, so each heartbeat
//!   is written in two parts a moment apart (`: ping` then a blank line): the
//!   second part notices a peer that vanished, within one ping interval.
//! - too slow: the hub drops the queue and shuts the socket both ways
//!   (`OnSlow::ShutBoth`), which also fails a write blocked on the peer.
//! - shutdown: the hub queues `GoingAway`; the stream ends with its last chunk.
//!
//! With tokens on (`auth`), `admit` refuses a request without a good one
//! (401), and the stream ends when the token runs out: an SSE client cannot
//! send a fresh one, so it reconnects with a new URL instead.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{after, never, tick, Receiver, Select, TryRecvError};
use log::{debug, trace, warn};
use tiny_http::Request;

use crate::auth::{self, Access, TokenError};
use crate::hub::{Command, Subscriber};
use crate::pace::Pace;
use crate::protocol::{
    chunk_size_line, ClientId, Event, ParseError, Transport, CHUNK_SIZE_LINE_ROOM,
};
use crate::queue::{self, Inbox, OnSlow, Outbound, Through};
use crate::room::Name;
use crate::subscription::{Subscription, SubscriptionBuilder};
use crate::transport::{Permit, Shared};

/// What a browser's `EventSource` waits before it reconnects, in ms (sent
/// as the stream's first line).
pub const RETRY_MS: u64 = 2000;
/// The pause between the two halves of a heartbeat: long enough for a
/// peer's reset to come back over a real network.
const PROBE_GAP: Duration = Duration::from_millis(250);
/// The most written between two checks for "dropped as slow".
const WRITE_PIECE_BYTES: usize = 16 * 1024;
/// Batch bytes a stream keeps between bursts.
const IDLE_BATCH_BYTES: usize = 4096;
/// Events written in one go at most; the rest wait for the next write.
const MAX_BATCH_EVENTS: usize = 256;

/// What `GET /events` asks for: `room=` (repeatable), `name=`, and
/// `last_event_id=` (or `since=`); a `Last-Event-ID` header wins over the
/// query, because a browser sends it on reconnect while the URL still
/// carries the first `last_event_id`.
pub fn subscription(query: &str, last_event_id: Option<&str>) -> Result<Subscription, ParseError> {
    let mut wanted = SubscriptionBuilder::default();
    wanted.query(query, |_, _| Ok(()))?;
    if let Some(header) = last_event_id {
        wanted.since(header)?;
    }
    Ok(wanted.finish())
}

/// The `?token=` of a query, if any.
fn query_token(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned())
}

/// A subscriber let in: what it asked for, and its place under
/// `--max-connections`.
pub struct Admitted {
    subscription: Subscription,
    permit: Permit,
    access: Access,
}

/// Why `GET /events` was refused (the HTTP side answers it as JSON).
#[derive(Debug)]
pub enum Refused {
    /// A bad room, name or id.
    Parse(ParseError),
    /// Tokens are on, and this request has no good one.
    Token(TokenError),
    /// At `--max-connections`, which it says.
    Full(usize),
    /// The server is shutting down.
    ShuttingDown,
}

/// Checks `GET /events` and takes a place under `--max-connections`.
pub fn admit(request: &Request, query: &str, shared: &Shared) -> Result<Admitted, Refused> {
    let last_event_id = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Last-Event-ID"))
        .map(|h| h.value.as_str());
    let subscription = subscription(query, last_event_id).map_err(Refused::Parse)?;
    let authorization = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str());
    let from_query = query_token(query);
    let token = auth::presented(from_query.as_deref(), authorization);
    let access = auth::admit(shared.config.jwt.as_ref(), token).map_err(|e| {
        shared.metrics.refused("token");
        Refused::Token(e)
    })?;
    if shared.shutting_down() {
        return Err(Refused::ShuttingDown);
    }
    let Some(permit) = shared.limit.try_acquire() else {
        shared.metrics.refused("limit");
        warn!(
            "sse connection refused: at --max-connections ({})",
            shared.config.max_connections
        );
        return Err(Refused::Full(shared.config.max_connections));
    };
    Ok(Admitted {
        subscription,
        permit,
        access,
    })
}

/// Runs an admitted stream on the connection's own thread until it ends.
pub fn run(
    request: Request,
    admitted: Admitted,
    id: ClientId,
    socket: &Arc<TcpStream>,
    shared: &Shared,
) {
    let peer = request.remote_addr().copied();
    let wire = Wire {
        chunked: *request.http_version() >= (1, 1),
        out: request.into_writer(),
    };
    let Admitted {
        subscription,
        permit,
        access,
    } = admitted;
    SseStream::new(
        id,
        peer,
        wire,
        (subscription, access),
        permit,
        Arc::clone(socket),
        shared.clone(),
    )
    .run();
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// A write failed: the peer is gone (or stopped reading past the timeout).
    PeerGone,
    /// The hub dropped us as a slow consumer.
    TooSlow,
    /// The server is shutting down (or the hub has stopped).
    GoingAway,
    /// Its token ran out.
    Expired,
}

/// One SSE subscriber's thread state.
struct SseStream {
    id: ClientId,
    peer: String,
    wire: Wire,
    query: Option<(Subscription, Access)>,
    shared: Shared,
    /// Held for the life of the stream: its place under `--max-connections`.
    _permit: Permit,
    /// The connection's socket, for the hub to shut if it drops the stream.
    socket: Arc<TcpStream>,
    /// Held for the life of the stream: shutdown waits for every clone to go.
    _done: crossbeam_channel::Sender<()>,
}

impl SseStream {
    fn new(
        id: ClientId,
        peer: Option<SocketAddr>,
        wire: Wire,
        query: (Subscription, Access),
        permit: Permit,
        socket: Arc<TcpStream>,
        shared: Shared,
    ) -> SseStream {
        SseStream {
            id,
            peer: peer.map_or_else(|| "?".to_owned(), |p| p.to_string()),
            wire,
            query: Some(query),
            _done: shared.done.clone(),
            shared,
            _permit: permit,
            socket,
        }
    }

    fn run(mut self) {
        let id = self.id;
        debug!("{id} {} sse open", self.peer);
        self.shared.hub.wait_to_join(); // while a crowd lags: see `admission`
        if self.wire.start().is_err() {
            return debug!("{id} sse closed before the head was written");
        }
        // The hub writes events through to the socket itself when it can
        // (`queue::through`): the head is out, so its chunks follow it.
        let (queue, inbox) = queue::writing_through(
            self.shared.config.send_buffer,
            OnSlow::ShutBoth(Arc::clone(&self.socket)),
            Through::sse(Arc::clone(&self.socket), self.wire.chunked),
        );
        let (Subscription { rooms, name, since }, access) =
            self.query.take().expect("the query is taken once");
        let expires = access.deadline();
        let subscriber = Subscriber {
            id,
            name: access.name(name).unwrap_or_else(|| Name::guest(id.0)),
            transport: Transport::Sse,
            queue,
            access,
        };
        let connect = Command::Connect {
            subscriber,
            rooms,
            since,
        };
        if self.shared.hub.send(connect).is_err() {
            let _ = self.wire.finish(); // shutting down; the peer may be gone too
            return;
        }
        let end = self.pump(&inbox, expires);
        // The last bytes, and nothing of the hub's after them: written under
        // the write lock, and the socket half-closed before it goes.
        let held = inbox.hold();
        match end {
            End::Expired => {
                let _ = self.shared.hub.send(Command::Disconnect { id });
                // Said as an event first, so a page knows why the stream ended.
                let mut chunk = Chunk::with_capacity(256);
                let why = Event::error("token_expired", "the token has expired");
                chunk.push(why.sse_block());
                let _ = self.wire.send(&mut chunk, &inbox);
            }
            End::PeerGone => {
                // Unknown to the hub if it had already dropped us; that is fine.
                let _ = self.shared.hub.send(Command::Disconnect { id });
            }
            End::TooSlow => warn!("{id} {} sse dropped: slow consumer", self.peer),
            End::GoingAway => {}
        }
        if matches!(end, End::GoingAway | End::Expired) {
            // Best effort: a peer that stopped reading makes this time out.
            // A slow consumer is not waited for: it is why the stream ends.
            let _ = self.wire.finish();
        }
        let _ = self.socket.shutdown(Shutdown::Write); // already shut is fine
        drop(held);
        debug!("{id} sse closed: {end:?}");
    }

    /// Moves events from the queue to the socket until the stream ends. It
    /// waits for the queue without taking from it, and takes and writes
    /// under the socket's write lock, so that the hub's own writes cannot
    /// come between (`queue::through`).
    fn pump(&mut self, inbox: &Inbox, expires: Option<Instant>) -> End {
        inbox.writer_is_current_thread();
        let heartbeat = tick(self.shared.config.ping_interval);
        let expired = expires.map_or_else(never, crossbeam_channel::at);
        // The second half of a heartbeat, if it is still owed.
        let mut probe: Receiver<std::time::Instant> = never();
        let mut chunk = Chunk::with_capacity(IDLE_BATCH_BYTES);
        let mut pace = Pace::default();
        loop {
            if inbox.is_empty() {
                // Gone quiet: a burst must not pin its peak for good.
                chunk.shrink_to(IDLE_BATCH_BYTES);
                pace.going_quiet();
            }
            let ready = {
                let mut ready = Select::new();
                ready.recv(inbox.channel());
                ready.recv(&expired);
                ready.recv(&heartbeat);
                ready.recv(&probe);
                ready.ready()
            };
            let held = inbox.hold();
            match ready {
                0 => {}
                1 => return End::Expired,
                2 => {
                    if heartbeat.try_recv().is_ok() {
                        chunk.push(b": ping\n");
                        if self.wire.send(&mut chunk, inbox).is_err() {
                            return End::PeerGone;
                        }
                        probe = after(PROBE_GAP);
                    }
                    continue;
                }
                _ => {
                    if probe.try_recv().is_ok() {
                        probe = never();
                        chunk.push(b"\n");
                        if self.wire.send(&mut chunk, inbox).is_err() {
                            return End::PeerGone;
                        }
                    }
                    continue;
                }
            }
            let first = match inbox.try_recv() {
                Ok(first) => first,
                Err(TryRecvError::Empty) => continue, // the hub wrote it through
                Err(TryRecvError::Disconnected) => {
                    return if inbox.is_too_slow() {
                        End::TooSlow
                    } else {
                        End::GoingAway
                    };
                }
            };
            // The rest of a chunk the hub began leads the queue: its bytes
            // go out as they are, already framed.
            let first = match first {
                Outbound::Unfinished(rest) => {
                    if self.wire.write_pieces(&rest.bytes, inbox).is_err() {
                        return if inbox.is_too_slow() {
                            End::TooSlow
                        } else {
                            End::PeerGone
                        };
                    }
                    match inbox.try_recv() {
                        Ok(item) => item,
                        Err(_) => continue, // nothing else yet, or gone: the next turn says
                    }
                }
                item => item,
            };
            // Batch whatever else is queued: one write, one syscall.
            let (mut taken, mut going_away) = (0, false);
            let mut next = Some(first);
            while let Some(item) = next {
                pace.took(&item);
                let Some(count) = append(&mut chunk, item) else {
                    going_away = true;
                    break;
                };
                taken += count;
                next = (taken < MAX_BATCH_EVENTS)
                    .then(|| inbox.try_recv().ok())
                    .flatten();
            }
            if inbox.is_too_slow() {
                return End::TooSlow; // no point writing what the hub gave up on
            }
            if !chunk.is_empty() {
                trace!(
                    "{} sse writes {taken} events, {} bytes",
                    self.id,
                    chunk.payload().len()
                );
                if self.wire.send(&mut chunk, inbox).is_err() {
                    return if inbox.is_too_slow() {
                        End::TooSlow
                    } else {
                        End::PeerGone
                    };
                }
                drop(held);
                // Linger: what arrives meanwhile goes out in one write.
                pace.after_write();
                probe = never(); // this write probed the peer as well
            }
            if going_away {
                return End::GoingAway;
            }
        }
    }
}

/// Takes one item from the queue: appends its events' SSE blocks and returns
/// how many, or `None` for `GoingAway`.
fn append(chunk: &mut Chunk, item: Outbound) -> Option<usize> {
    for event in item.events() {
        chunk.push(event.sse_block());
    }
    match item {
        Outbound::GoingAway => None,
        _ => Some(item.events().len()),
    }
}

/// What goes out in one write: the body bytes of one HTTP chunk, with room
/// kept in front for the chunk's size line. A batch of events is framed where
/// it lies and written with one call: no copy, and no allocation once the
/// buffer has grown to the stream's usual batch.
struct Chunk {
    buf: Vec<u8>,
}

impl Chunk {
    /// Room for the size line, `{len:x}\r\n`: eight hex digits cover 4 GiB.
    const HEAD_ROOM: usize = CHUNK_SIZE_LINE_ROOM;

    fn with_capacity(payload_bytes: usize) -> Chunk {
        let mut buf = Vec::with_capacity(Chunk::HEAD_ROOM + payload_bytes + 2);
        buf.resize(Chunk::HEAD_ROOM, 0);
        Chunk { buf }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn payload(&self) -> &[u8] {
        &self.buf[Chunk::HEAD_ROOM..]
    }

    fn is_empty(&self) -> bool {
        self.payload().is_empty()
    }

    /// Empties it for the next write.
    fn clear(&mut self) {
        self.buf.truncate(Chunk::HEAD_ROOM);
    }

    /// Gives memory back down to `payload_bytes` (a quiet stream keeps little).
    fn shrink_to(&mut self, payload_bytes: usize) {
        self.buf.shrink_to(Chunk::HEAD_ROOM + payload_bytes + 2);
    }

    /// The bytes to write: the payload as one HTTP/1.1 chunk, or as it is.
    fn framed(&mut self, chunked: bool) -> &[u8] {
        if !chunked {
            return &self.buf[Chunk::HEAD_ROOM..];
        }
        let mut room = [0u8; Chunk::HEAD_ROOM];
        let head = chunk_size_line(self.payload().len(), &mut room);
        let start = Chunk::HEAD_ROOM - head.len();
        self.buf[start..Chunk::HEAD_ROOM].copy_from_slice(head);
        self.buf.extend_from_slice(b"\r\n");
        &self.buf[start..]
    }
}

/// The response body on the raw connection: every write is one HTTP chunk
/// (or plain bytes for HTTP/1.0) and is flushed at once.
struct Wire {
    out: Box<dyn Write + Send>,
    chunked: bool,
}

impl Wire {
    /// Writes the response head and the `retry:` line.
    fn start(&mut self) -> io::Result<()> {
        let framing = if self.chunked {
            "Transfer-Encoding: chunked\r\n"
        } else {
            ""
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\n\
             Content-Type: text/event-stream\r\n\
             Cache-Control: no-cache\r\n\
             Connection: close\r\n\
             X-Accel-Buffering: no\r\n\
             {framing}\r\n"
        );
        let mut retry = Chunk::with_capacity(32);
        retry.push(format!("retry: {RETRY_MS}\n\n").as_bytes());
        self.out.write_all(head.as_bytes())?; // buffered: goes out with the retry line
        self.out.write_all(retry.framed(self.chunked))?;
        self.out.flush()
    }

    /// Sends `chunk` and empties it. The bytes reach the socket in pieces,
    /// each marked as a write in progress (`Inbox::writing`: one that waits
    /// long on the peer is how the hub tells a peer that does not read),
    /// giving up between two pieces once `inbox` says the hub has dropped
    /// this stream: a peer that reads a trickle would otherwise keep a
    /// dropped stream's thread writing, each piece inside the send timeout.
    fn send(&mut self, chunk: &mut Chunk, inbox: &Inbox) -> io::Result<()> {
        let sent = self.write_pieces(chunk.framed(self.chunked), inbox);
        chunk.clear();
        sent
    }

    fn write_pieces(&mut self, bytes: &[u8], inbox: &Inbox) -> io::Result<()> {
        for piece in bytes.chunks(WRITE_PIECE_BYTES) {
            if inbox.is_too_slow() {
                return Err(io::Error::other("dropped as a slow consumer"));
            }
            let _writing = inbox.writing();
            self.out.write_all(piece)?;
        }
        let _writing = inbox.writing();
        self.out.flush()
    }

    /// Ends the body: the zero-length last chunk.
    fn finish(&mut self) -> io::Result<()> {
        if self.chunked {
            self.out.write_all(b"0\r\n\r\n")?;
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_framed_in_place_and_reused() {
        let mut chunk = Chunk::with_capacity(4);
        assert!(chunk.is_empty());
        chunk.push(b"data: x\n\n");
        assert_eq!(chunk.framed(false), b"data: x\n\n");
        assert_eq!(chunk.framed(true), b"9\r\ndata: x\n\n\r\n");
        chunk.clear();
        let long = vec![b'a'; 300];
        chunk.push(&long);
        let framed = chunk.framed(true).to_vec();
        assert!(framed.starts_with(b"12c\r\naaa"), "{:?}", &framed[..8]);
        assert!(framed.ends_with(b"aaa\r\n"));
        assert_eq!(framed.len(), 5 + 300 + 2);
    }

    #[test]
    fn the_last_event_id_header_wins_over_the_query() {
        let wanted = subscription("last_event_id=7", Some("12")).expect("valid");
        assert_eq!(wanted.since, Some(12));
        assert!(subscription("", Some("-1")).is_err());
    }
}
