//! WebSocket on `--ws`: an accept thread, then one reader and one writer thread
//! per connection, on one socket.
//!
//! ```text
//! [ws-accept] --spawn--> [ws-r c7] --Command--------------------> [hub]
//!      |                     |  Reply (pong, close, errors, echo)
//!      |                     v
//!      |                 [ws-w c7] <--Outbound (--send-buffer events)-- [hub]
//!      +--TcpStream--> [ws-refuse]  (503 over --max-connections)
//! ```
//!
//! The reader owns the handshake and the protocol state (tungstenite's
//! `WebSocketContext`); it never writes to the socket. Everything the protocol
//! owes the peer (a pong, a close reply, an error event, an echoed frame) goes
//! to the writer as a `Reply`, so no reply is ever interleaved with a
//! half-written frame. Both threads share one `Arc<TcpStream>`: `&TcpStream` is
//! both `Read` and `Write`, and one file descriptor serves two threads.
//!
//! The writer waits on three things at once — hub events, the reader's replies,
//! and the next ping — then drains whatever else is queued and writes it with
//! one vectored syscall. Event frames come pre-encoded from `Event::ws_frame`,
//! shared by every member.
//!
//! `/echo` runs the very same reader and writer, minus the hub: the
//! Autobahn|Testsuite run against it checks the transport chat traffic uses.
//!
//! Ending a connection, whoever starts it: a side that sends a close frame
//! then half-closes (`shutdown(Write)`); the reader reads until the peer's FIN
//! (bounded by `CLOSE_GRACE`), so the socket closes cleanly without a reset.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{bounded, never, select, Receiver, Sender};
use log::{debug, trace, warn};
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame};
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::Message;

use crate::hub::{Command, Hangup, Outbound, Subscriber};
use crate::os::threads::{spawn_named, READER_STACK_BYTES, WRITER_STACK_BYTES};
use crate::protocol::{encode_frame, parse_line, ClientId, Event, Format, ParseError, Transport};
use crate::room::{Name, RoomName};
use crate::subscription::{Subscription, SubscriptionBuilder};
use crate::transport::refuse::{
    linger_then_close, respond, spawn_connection, Refuser, CLOSE_GRACE,
};
use crate::transport::{Pace, Permit, Shared};

/// The largest HTTP request head accepted for a handshake.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// The most header lines a handshake may have.
const MAX_HEADERS: usize = 64;
/// Replies the reader may queue for the writer before it waits: none, the
/// reader hands each one over in person. A queue of 8 took 1.1 kB of every
/// connection (its slots, and its ends padded to cache lines), a rendezvous
/// 0.3 (`heaptrack`, 1000 idle: 1546 against 906 bytes per connection live
/// from `start_writer`). Replies are rare on `/ws` (pongs, errors); on
/// `/echo` every frame is one, and waiting for the writer is the
/// back-pressure an echo owes a peer that sends faster than it reads.
const REPLY_QUEUE: usize = 0;
/// Frames in one batch, and in one `writev`, at most (the kernel's `IOV_MAX`
/// is 1024).
const MAX_BATCH_FRAMES: usize = 256;
/// The reader's buffer: small, because ten thousand idle connections each
/// have one. Chat lines are short; a longer message takes a few more reads.
const READ_BUFFER_BYTES: usize = 512;

/// Starts the accept thread on `listener`.
pub fn spawn_listener(listener: TcpListener, shared: Shared) -> io::Result<JoinHandle<()>> {
    let refuser = Refuser::spawn("ws-refuse", shared.done.clone())?;
    spawn_named("ws-accept".into(), WRITER_STACK_BYTES, move || {
        accept_loop(listener, shared, refuser)
    })
}

fn accept_loop(listener: TcpListener, shared: Shared, refuser: Refuser) {
    for stream in listener.incoming() {
        if shared.shutting_down() {
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors, most often: back off instead of spinning.
                warn!("ws accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let _ = stream.set_nodelay(true); // small frames must not wait for Nagle
        let Some(permit) = shared.limit.try_acquire() else {
            shared.metrics.refused("limit");
            warn!(
                "ws connection refused: at --max-connections ({})",
                shared.config.max_connections
            );
            refuser.refuse(stream, "the server is at its connection limit");
            continue;
        };
        let id = shared.ids.next();
        let conn_shared = shared.clone();
        let spawned = spawn_connection(
            format!("ws-r {id}"),
            READER_STACK_BYTES,
            stream,
            move |stream| serve(stream, id, permit, conn_shared),
        );
        if let Err((e, stream)) = spawned {
            shared.metrics.refused("threads");
            warn!("{id} refused: cannot start a thread: {e}");
            if let Some(stream) = stream {
                refuser.refuse(stream, "the server cannot take more connections");
            }
        }
    }
    debug!("ws accept loop ends");
}

/// What a handshake asked for.
enum Route {
    Echo,
    Chat {
        rooms: Vec<RoomName>,
        name: Option<Name>,
        format: Format,
        since: Option<u64>,
    },
}

/// A handshake refused with an HTTP status.
struct Refusal {
    status: u16,
    reason: &'static str,
    message: String,
    metric: &'static str,
}

impl Refusal {
    fn new(
        status: u16,
        reason: &'static str,
        metric: &'static str,
        message: impl Into<String>,
    ) -> Refusal {
        Refusal {
            status,
            reason,
            message: message.into(),
            metric,
        }
    }
}

/// A handshake accepted: where to, the client's key, and any bytes read past
/// the request head.
struct Accepted {
    route: Route,
    key: String,
    tail: Vec<u8>,
}

/// The reader thread's body: the handshake, the writer, the opening, then
/// the read loop.
///
/// Each step is a function of its own, never inlined into this one, and
/// returns before the next starts: a thread keeps every stack page it has
/// ever touched, so one step's frame must not sit on the stack under the next
/// (the read loop lasts as long as the connection). Keeping the handshake out
/// took the reader from 16 to 12 KiB of stack; starting the writer and
/// running the read loop from here, not from inside `open`, from 12 to 8
/// (the deepest touched byte of each stack, read from `/proc/PID/mem`).
fn serve(stream: TcpStream, id: ClientId, permit: Permit, shared: Shared) {
    let _done = shared.done.clone();
    let peer = peer_name(&stream);
    let socket = Arc::new(stream);
    // Held here for as long as the reader runs, and by the writer.
    let permit = Arc::new(permit);
    let accepted = match handshake(&socket, &shared) {
        Ok(accepted) => accepted,
        Err(refusal) => {
            debug!(
                "{id} {peer} ws handshake refused: {} {}",
                refusal.status, refusal.message
            );
            return refuse(&socket, &shared, &refusal);
        }
    };
    // The writer starts before the upgrade, so a thread that cannot start is
    // still a 503.
    let link = match start_writer(&socket, id, &permit, &shared, &accepted.route) {
        Ok(link) => link,
        Err(e) => {
            warn!("{id} refused: cannot start a thread: {e}");
            let busy = Refusal::new(
                503,
                "Service Unavailable",
                "threads",
                "the server cannot take more connections",
            );
            return refuse(&socket, &shared, &busy);
        }
    };
    if let Some(reader) = open(socket, id, &shared, &peer, accepted, link) {
        reader.run();
        debug!("{id} {peer} ws closed");
    }
}

/// The peer's address, for the logs (its formatting in a frame of its own).
#[inline(never)]
fn peer_name(stream: &TcpStream) -> String {
    stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string())
}

/// Counts a refused handshake, answers it with its HTTP error and closes.
#[inline(never)]
fn refuse(socket: &TcpStream, shared: &Shared, refusal: &Refusal) {
    shared.metrics.refused(refusal.metric);
    respond(
        socket,
        refusal.status,
        refusal.reason,
        &[],
        &refusal.message,
    );
    linger_then_close(socket, CLOSE_GRACE);
}

/// The writer's end of a connection, as the reader and the hub hold it.
struct WriterLink {
    /// What the protocol owes the peer (pong, close, errors, echo).
    replies: Sender<Reply>,
    /// The connection's queue, for the hub (`/ws` only).
    events: Sender<Outbound>,
    hangup: Arc<Hangup>,
}

/// Starts the connection's writer thread.
#[inline(never)]
fn start_writer(
    socket: &Arc<TcpStream>,
    id: ClientId,
    permit: &Arc<Permit>,
    shared: &Shared,
    route: &Route,
) -> io::Result<WriterLink> {
    let config = &shared.config;
    let _ = socket.set_read_timeout(Some(config.ping_interval * 2));
    let _ = socket.set_write_timeout(Some(config.write_timeout));
    let (replies, replies_rx) = queue(REPLY_QUEUE);
    let (events, events_rx) = match route {
        Route::Chat { .. } => unbounded_queue(),
        Route::Echo => queue(0),
    };
    let hangup = Hangup::new(Some(Arc::clone(socket)), config.send_buffer);
    let writer = Writer {
        id,
        socket: Arc::clone(socket),
        events: match route {
            Route::Chat { .. } => events_rx,
            Route::Echo => never(),
        },
        replies: replies_rx,
        format: match route {
            Route::Chat { format, .. } => *format,
            Route::Echo => Format::Json,
        },
        hangup: Arc::clone(&hangup),
        ping_interval: config.ping_interval,
        permit: Arc::clone(permit),
        _done: shared.done.clone(),
    };
    spawn_named(format!("ws-w {id}"), WRITER_STACK_BYTES, move || {
        writer.run()
    })?;
    Ok(WriterLink {
        replies,
        events,
        hangup,
    })
}

/// A bounded queue, made out of line.
///
/// Building a channel assembles it on the stack, then allocates it with its
/// slots' alignment (`posix_memalign`), and every page of the reader's stack
/// that is touched stays resident for the life of the connection. When the
/// compiler inlined both queues into `start_writer`, its frame grew to
/// 1.1 KiB and each reader's stack went 8.9 KiB deep, one page past 8: 4 kB
/// more per idle connection (5000 idle: 20.0 against 16.0 kB of stacks per
/// connection, `/proc/PID/smaps`). Out of line, the deepest point is the read
/// loop again, 7.9 KiB down (a scan of a reader's stack, `/proc/PID/mem`).
#[inline(never)]
fn queue<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    bounded(capacity)
}

/// The connection's event queue: unbounded, because the hub's count of its
/// events is its bound (`Hangup::new`), and out of line like `queue`
/// (inlined, it took every reader's stack a page deeper again: 5000 idle,
/// 12.0 against 8.1 kB of reader stack per connection).
#[inline(never)]
fn unbounded_queue<T>() -> (Sender<T>, Receiver<T>) {
    crossbeam_channel::unbounded()
}

/// Completes the handshake and joins the hub (for `/ws`); returns the reader
/// for the read loop, or `None` if the connection is already over.
#[inline(never)]
fn open(
    socket: Arc<TcpStream>,
    id: ClientId,
    shared: &Shared,
    peer: &str,
    accepted: Accepted,
    link: WriterLink,
) -> Option<Box<Reader>> {
    let Accepted { route, key, tail } = accepted;
    let WriterLink {
        replies,
        events: to_client,
        hangup,
    } = link;
    let config = &shared.config;
    if matches!(route, Route::Chat { .. }) {
        // The upgrade is answered once the connection may join: see `admission`.
        shared.hub.wait_to_join();
    }
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if (&*socket).write_all(upgrade.as_bytes()).is_err() {
        return None; // dropping `replies` lets the writer end too
    }
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes));
    // Boxed: `serve` holds it under the read loop, and a pointer there
    // takes less of the reader's stack than the whole protocol state.
    let mut reader = Box::new(Reader {
        id,
        socket,
        context: WebSocketContext::from_partially_read(tail, Role::Server, Some(ws_config)),
        replies,
        chat: None,
        rate: config.rate_limit.map(RateLimit::new),
        max_message_bytes: config.max_message_bytes,
    });
    match route {
        Route::Echo => debug!("{id} {peer} ws echo open"),
        Route::Chat {
            rooms, name, since, ..
        } => {
            debug!("{id} {peer} ws open");
            let subscriber = Subscriber {
                id,
                name: name.unwrap_or_else(|| Name::guest(id.0)),
                transport: Transport::Ws,
                events: to_client,
                hangup,
            };
            let connect = Command::Connect {
                subscriber,
                rooms,
                since,
            };
            if shared.hub.send(connect).is_err() {
                return None; // shutting down
            }
            reader.chat = Some(shared.clone());
        }
    }
    Some(reader)
}

/// Reads and checks the handshake request; on success returns the route, the
/// client's key and any bytes read past the request head.
#[inline(never)]
fn handshake(socket: &TcpStream, shared: &Shared) -> Result<Accepted, Refusal> {
    let bad = |message: &str| Refusal::new(400, "Bad Request", "bad_request", message);
    let too_late = || {
        let message = "the handshake did not arrive in time";
        Refusal::new(408, "Request Timeout", "timeout", message)
    };
    // One deadline for the whole head, not one per read: a byte every few
    // seconds must not hold a thread for hours.
    let deadline = Instant::now() + shared.config.request_timeout;
    // Read straight into `head`, not through a buffer on the stack (see `serve`).
    let mut head = Vec::with_capacity(1024);
    let head_len = loop {
        let searched_from = head.len().saturating_sub(3);
        let filled = head.len();
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
            return Err(too_late());
        }
        head.resize(filled + 1024, 0);
        let n = match (&*socket).read(&mut head[filled..]) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(too_late())
            }
            Ok(0) | Err(_) => return Err(bad("the connection ended before a full request")),
            Ok(n) => n,
        };
        head.truncate(filled + n);
        if let Some(at) = find(&head[searched_from..], b"\r\n\r\n") {
            break searched_from + at + 4;
        }
        if head.len() > MAX_HEAD_BYTES {
            return Err(Refusal::new(
                431,
                "Request Header Fields Too Large",
                "too_large",
                "request head too large",
            ));
        }
    };
    // On the heap, not the stack (see `serve`), and too big for glibc's
    // per-thread cache of small freed blocks, which would keep it.
    let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(&head[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(bad("malformed HTTP request")),
    }
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let target = request.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/ws" && path != "/echo" {
        return Err(Refusal::new(
            404,
            "Not Found",
            "not_found",
            format!("no WebSocket endpoint at {path}; use /ws"),
        ));
    }
    if request.method != Some("GET") {
        return Err(Refusal::new(
            405,
            "Method Not Allowed",
            "bad_request",
            "a WebSocket handshake is a GET",
        ));
    }
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(Refusal::new(
            426,
            "Upgrade Required",
            "bad_request",
            "this is a WebSocket endpoint: connect with a WebSocket client",
        ));
    }
    if header("sec-websocket-version") != Some("13") {
        return Err(Refusal::new(
            426,
            "Upgrade Required",
            "bad_request",
            "only WebSocket version 13 is spoken here",
        ));
    }
    let Some(key) = header("sec-websocket-key").filter(|k| !k.is_empty()) else {
        return Err(bad("missing Sec-WebSocket-Key"));
    };
    // Browsers send `Origin` on every WebSocket handshake; `origin.rs` says
    // which pages may connect (never judged by `Host`: see DNS rebinding there).
    let verdict = shared
        .origins
        .check(header("origin"), header("sec-fetch-site"), header("host"));
    if let Err(refused) = verdict {
        let message = refused.to_string();
        return Err(Refusal::new(403, "Forbidden", "origin", message));
    }
    let route = if path == "/echo" {
        Route::Echo
    } else {
        parse_chat_query(query).map_err(|e| bad(&e.to_string()))?
    };
    Ok(Accepted {
        route,
        key: key.to_owned(),
        tail: head[head_len..].to_vec(),
    })
}

/// The subscription (`room=`, `name=`, `since=`: see `subscription`) and
/// `format=json|text`.
fn parse_chat_query(query: &str) -> Result<Route, ParseError> {
    let mut format = Format::Json;
    let mut wanted = SubscriptionBuilder::default();
    wanted.query(query, |key, value| {
        if key == "format" {
            format = Format::parse(value)?;
        }
        Ok(())
    })?;
    let Subscription { rooms, name, since } = wanted.finish();
    Ok(Route::Chat {
        rooms,
        name,
        format,
        since,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What the reader asks the writer to send.
enum Reply {
    /// Answer a ping.
    Pong(Bytes),
    /// Send a frame back as it came (`/echo`).
    Echo(Message),
    /// Tell the peer something went wrong (an `error` event).
    Event(Arc<Event>),
    /// Send a close frame (a reply to the peer's, or ours on failure) and end.
    Close(Option<CloseFrame>),
}

/// How the read loop ended.
enum Ending {
    /// The peer sent a close frame.
    PeerClosed(Option<CloseFrame>),
    /// The peer broke the protocol, or sent too much: fail the connection.
    Fail(CloseCode, &'static str),
    /// The socket ended or failed; there is nobody left to tell.
    Gone(String),
}

/// The reader thread.
struct Reader {
    id: ClientId,
    socket: Arc<TcpStream>,
    context: WebSocketContext,
    replies: Sender<Reply>,
    /// Set for `/ws`, where text is parsed and sent to the hub.
    chat: Option<Shared>,
    rate: Option<RateLimit>,
    max_message_bytes: usize,
}

impl Reader {
    #[inline(never)] // its frame is not `open`'s (see `serve`)
    fn run(mut self) {
        let ending = loop {
            let message = self.context.read(&mut ReadHalf(&self.socket));
            let reply = match message {
                Ok(Message::Text(text)) => match &self.chat {
                    None => Reply::Echo(Message::Text(text)),
                    Some(_) => match self.chat_line(text.as_str()) {
                        Some(reply) => reply,
                        None => continue,
                    },
                },
                Ok(Message::Binary(data)) => match &self.chat {
                    None => Reply::Echo(Message::Binary(data)),
                    Some(_) => Reply::Event(Arc::new(
                        ParseError::Unsupported(
                            "binary frames are not supported on /ws; send text",
                        )
                        .to_event(),
                    )),
                },
                Ok(Message::Ping(payload)) => Reply::Pong(payload),
                Ok(Message::Pong(_)) | Ok(Message::Frame(_)) => continue,
                Ok(Message::Close(frame)) => break Ending::PeerClosed(frame),
                Err(e) => break self.classify(e),
            };
            if self.replies.send(reply).is_err() {
                break Ending::Gone("writer ended".into()); // it hit a write error
            }
        };
        let id = self.id;
        match ending {
            Ending::PeerClosed(frame) => {
                trace!("{id} peer closed: {frame:?}");
                let _ = self.replies.send(Reply::Close(frame));
                self.drain();
            }
            Ending::Fail(code, reason) => {
                debug!("{id} failing the connection: {code} {reason}");
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ = self.replies.send(Reply::Close(Some(frame)));
                self.drain();
            }
            Ending::Gone(why) => debug!("{id} connection ended: {why}"),
        }
        drop(self.replies); // the writer sees the reader is gone
        if let Some(shared) = &self.chat {
            let _ = shared.hub.send(Command::Disconnect { id }); // a stopped hub has forgotten us anyway
        }
    }

    /// Handles one line of chat; returns a reply for the peer, if any.
    /// Not inlined: parsing needs stack that a connection that never talks
    /// should not touch (see `serve`).
    #[inline(never)]
    fn chat_line(&mut self, line: &str) -> Option<Reply> {
        let shared = self.chat.as_ref().expect("chat_line runs on /ws only");
        if let Some(rate) = &mut self.rate {
            if !rate.allow() {
                let refusal = ParseError::RateLimited {
                    per_second: rate.per_second,
                };
                return Some(Reply::Event(Arc::new(refusal.to_event())));
            }
        }
        match parse_line(line) {
            Ok(request) => {
                trace!("{} asks {request:?}", self.id);
                let command = Command::Request {
                    from: self.id,
                    request,
                };
                // Blocks while the hub is busy: back-pressure on a flooding peer.
                let _ = shared.hub.send(command);
                None
            }
            Err(refusal) => Some(Reply::Event(Arc::new(refusal.to_event()))),
        }
    }

    fn classify(&mut self, error: WsError) -> Ending {
        match error {
            WsError::ConnectionClosed | WsError::AlreadyClosed => Ending::Gone("closed".into()),
            WsError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ending::Gone("silent for two ping intervals".into())
            }
            WsError::Io(e) => Ending::Gone(e.to_string()),
            WsError::Utf8(_) => Ending::Fail(CloseCode::Invalid, "invalid UTF-8"),
            WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                let too_large = ParseError::TooLarge {
                    len: size,
                    limit: max_size.min(self.max_message_bytes),
                };
                let _ = self
                    .replies
                    .send(Reply::Event(Arc::new(too_large.to_event())));
                Ending::Fail(CloseCode::Size, "message too large")
            }
            WsError::Capacity(_) => Ending::Fail(CloseCode::Size, "message too large"),
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                Ending::Gone("closed without a close frame".into())
            }
            WsError::Protocol(_) => Ending::Fail(CloseCode::Protocol, "protocol error"),
            other => Ending::Gone(other.to_string()),
        }
    }

    /// After a close frame has been queued: read until the peer closes its
    /// side, so the socket closes without a reset. Bounded in time and bytes.
    #[inline(never)] // its 4 KiB sink is stack only a closing connection touches
    fn drain(&self) {
        let _ = self.socket.set_read_timeout(Some(CLOSE_GRACE));
        let mut sink = [0u8; 4096];
        let mut budget = 1 << 20;
        while let Ok(n @ 1..) = (&*self.socket).read(&mut sink) {
            budget -= n.min(budget);
            if budget == 0 {
                break;
            }
        }
    }
}

/// The reader's view of the socket: reads come from it; writes are swallowed,
/// because tungstenite's automatic pong and close replies must go out through
/// the writer thread instead. The reader sends them there as `Reply`s.
struct ReadHalf<'a>(&'a TcpStream);

impl Read for ReadHalf<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for ReadHalf<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A token bucket: `per_second` tokens a second, at most `per_second` saved.
struct RateLimit {
    per_second: u32,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(per_second: u32) -> RateLimit {
        RateLimit {
            per_second,
            tokens: f64::from(per_second),
            last: Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * f64::from(self.per_second);
        self.tokens = (self.tokens + refill).min(f64::from(self.per_second));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The writer thread.
struct Writer {
    id: ClientId,
    socket: Arc<TcpStream>,
    events: Receiver<Outbound>,
    replies: Receiver<Reply>,
    format: Format,
    hangup: Arc<Hangup>,
    ping_interval: Duration,
    permit: Arc<Permit>,
    _done: Sender<()>,
}

/// What one pass of the writer found to send.
#[derive(Default)]
struct Batch {
    frames: Vec<Piece>,
    /// A close frame ends the batch and the connection.
    close: Option<Bytes>,
}

/// One frame of a batch: an event, whose frame it shares with every other
/// member (held by its `Arc`, borrowed for the `writev`), or bytes of our own.
enum Piece {
    Event(Arc<Event>),
    Own(Bytes),
}

impl Piece {
    fn bytes(&self, format: Format) -> &[u8] {
        match self {
            Piece::Event(event) => event.ws_frame(format),
            Piece::Own(bytes) => bytes,
        }
    }
}

impl Batch {
    fn add_outbound(&mut self, item: Outbound) {
        if let Outbound::GoingAway = item {
            return self.close_with(CloseCode::Away, "server shutting down");
        }
        item.for_each_event(|event| self.push(Piece::Event(event)));
    }

    fn add_reply(&mut self, reply: Reply) {
        let frame = match reply {
            Reply::Pong(payload) => encode_frame(Frame::pong(payload)),
            Reply::Echo(Message::Text(text)) => {
                encode_frame(Frame::message(text, OpCode::Data(Data::Text), true))
            }
            Reply::Echo(Message::Binary(data)) => {
                encode_frame(Frame::message(data, OpCode::Data(Data::Binary), true))
            }
            Reply::Echo(_) => return,
            Reply::Event(event) => return self.push(Piece::Event(event)),
            Reply::Close(frame) => {
                if self.close.is_none() {
                    self.close = Some(encode_frame(Frame::close(frame)));
                }
                return;
            }
        };
        self.push(Piece::Own(frame));
    }

    /// Adds a frame. The first frame after a quiet spell gets the batch its
    /// full size at once: one allocation, too big for the per-thread malloc
    /// cache, where a batch that grew by doubling would leave its smaller
    /// buffers stranded for good.
    fn push(&mut self, piece: Piece) {
        if self.frames.capacity() == 0 {
            self.frames.reserve_exact(MAX_BATCH_FRAMES);
        }
        self.frames.push(piece);
    }

    /// Hands the batch's memory back (the writer has gone quiet): ten
    /// thousand idle connections would each keep it otherwise.
    fn release(&mut self) {
        self.frames = Vec::new();
    }

    fn close_with(&mut self, code: CloseCode, reason: &'static str) {
        if self.close.is_none() {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            self.close = Some(encode_frame(Frame::close(Some(frame))));
        }
    }

    fn is_full(&self) -> bool {
        self.close.is_some() || self.frames.len() >= MAX_BATCH_FRAMES
    }
}

impl Writer {
    /// Waits on the queues and the ping clock, writes everything queued in one
    /// go, and, after a write, lingers (see `transport::Pace`): events
    /// that arrive meanwhile wake nobody and go out together in the next write.
    /// A quiet connection finds its queues empty after the linger and parks.
    fn run(self) {
        let id = self.id;
        self.hangup.writer_is_current_thread();
        let mut events = self.events.clone();
        let mut replies = self.replies.clone();
        let mut reader_gone = false;
        let mut next_ping = Instant::now() + self.ping_interval;
        let mut batch = Batch::default();
        let mut pace = Pace::default();
        loop {
            if events.is_empty() {
                batch.release(); // gone quiet, even after a linger
                if replies.is_empty() {
                    pace.going_quiet();
                }
            }
            select! {
                recv(events) -> item => match item {
                    Ok(item) => self.take(&mut batch, item),
                    Err(_) => events = never(), // the hub let go: see `hangup` below
                },
                recv(replies) -> reply => match reply {
                    Ok(reply) => batch.add_reply(reply),
                    Err(_) => {
                        replies = never();
                        reader_gone = true;
                    }
                },
                default(next_ping.saturating_duration_since(Instant::now())) => {
                    batch.push(Piece::Own(encode_frame(Frame::ping(Bytes::new()))));
                    next_ping = Instant::now() + self.ping_interval;
                }
            }
            // Whatever else is queued goes out in the same syscall.
            while !batch.is_full() {
                if let Ok(reply) = replies.try_recv() {
                    batch.add_reply(reply);
                } else if let Ok(item) = events.try_recv() {
                    self.take(&mut batch, item);
                } else {
                    break;
                }
            }
            if self.hangup.is_too_slow() {
                // Queued events are moot now: tell the peer why, and end.
                batch.frames.clear();
                batch.close_with(CloseCode::Policy, "slow consumer");
            }
            if let Some(close) = batch.close.take() {
                batch.push(Piece::Own(close));
                if let Err(e) = write_frames(&self.socket, &batch.frames, self.format, None) {
                    debug!("{id} could not send close: {e}");
                }
                self.finish_after_close(replies);
                return;
            }
            if !batch.frames.is_empty() {
                trace!("{id} writes {} frames", batch.frames.len());
                if let Err(e) =
                    write_frames(&self.socket, &batch.frames, self.format, Some(&self.hangup))
                {
                    debug!("{id} write failed: {e}");
                    let _ = self.socket.shutdown(Shutdown::Both); // wakes the reader
                    return;
                }
                batch.frames.clear();
                if !reader_gone {
                    pace.after_write(&self.permit);
                }
            }
            if reader_gone {
                // The peer's side ended without a close frame: nothing to say.
                let _ = self.socket.shutdown(Shutdown::Both);
                return;
            }
        }
    }

    /// Adds an item from the queue to the batch.
    fn take(&self, batch: &mut Batch, item: Outbound) {
        self.hangup.took(&item);
        batch.add_outbound(item);
    }

    /// Our close frame is out: half-close, give the reader `CLOSE_GRACE` to see
    /// the peer's answer and FIN, then cut whatever is left.
    fn finish_after_close(&self, replies: Receiver<Reply>) {
        let _ = self.socket.shutdown(Shutdown::Write);
        let deadline = Instant::now() + CLOSE_GRACE;
        while replies.recv_deadline(deadline).is_ok() {} // until the reader ends, or time is up
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// Writes every frame, a batch to a `writev`, giving up between two calls once
/// `hangup` (if given: not for the close frame itself) says the hub dropped
/// this connection: a peer that reads a trickle
/// would otherwise keep a dropped connection's writer busy, each call inside
/// the send timeout. (Giving up mid-frame leaves nothing but cutting the socket.)
fn write_frames(
    socket: &TcpStream,
    frames: &[Piece],
    format: Format,
    hangup: Option<&Hangup>,
) -> io::Result<()> {
    // The slices live on the heap, not the stack: every writer thread keeps
    // the stack pages it has ever touched, and a few KiB of slices would be
    // a page more for each of ten thousand connections. They always take a
    // full batch's room (see `Batch::push`): a vector sized to each batch
    // would be freed in every size up to glibc's per-thread cache limit, and
    // that cache keeps what it is given.
    let mut slices: Vec<IoSlice> = Vec::with_capacity(MAX_BATCH_FRAMES);
    for group in frames.chunks(MAX_BATCH_FRAMES) {
        slices.clear();
        slices.extend(group.iter().map(|f| IoSlice::new(f.bytes(format))));
        let mut remaining = &mut slices[..];
        while !remaining.is_empty() {
            if hangup.is_some_and(|h| h.is_too_slow()) {
                return Err(io::Error::other("dropped as a slow consumer"));
            }
            match (&*socket).write_vectored(remaining) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut remaining, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// The address to dial to wake an accept loop blocked on `addr`.
pub fn wake_address(addr: SocketAddr) -> SocketAddr {
    let mut wake = addr;
    if wake.ip().is_unspecified() {
        wake.set_ip(match addr {
            SocketAddr::V4(_) => [127, 0, 0, 1].into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    wake
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_query_defaults_to_the_lobby() {
        let Ok(Route::Chat {
            rooms,
            name,
            format,
            since,
        }) = parse_chat_query("")
        else {
            panic!("an empty query is valid");
        };
        assert_eq!(rooms, vec![RoomName::parse("lobby").expect("valid")]);
        assert!(name.is_none() && since.is_none() && format == Format::Json);
        assert!(parse_chat_query("room=a&room=b&name=Zo%C3%AB&format=text&since=7").is_ok());
        assert!(parse_chat_query("room=bad%20room").is_err());
        assert!(parse_chat_query("since=soon").is_err());
        assert!(parse_chat_query("format=xml").is_err());
    }
}
