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
//!
//! This file accepts, starts the two threads and opens the connection;
//! `handshake` reads and checks the upgrade request, `reader` and `writer`
//! are the two threads' bodies.

mod handshake;
mod reader;
mod token;
mod writer;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};
use log::{debug, warn};
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};

use crate::auth::{Access, Expiry};
use crate::config::Config;
use crate::hub::{Command, Subscriber};
use crate::os::threads::{spawn_named, READER_STACK_BYTES, WRITER_STACK_BYTES};
use crate::protocol::{ClientId, Format, Transport};
use crate::queue::{self, Inbox, OnSlow, Queue, Through};
use crate::room::Name;
use crate::transport::refuse::{
    linger_then_close, respond, spawn_connection, Refuser, CLOSE_GRACE,
};
use crate::transport::{Permit, Shared};

use handshake::{handshake, Accepted, Refusal, Route};
use reader::{RateLimit, Reader, Reply};
use token::Signed;
use writer::Writer;

/// Replies the reader may queue for the writer before it waits: none, the
/// reader hands each one over in person: a queue of slots costs every idle
/// connection memory (`docs/performance.md`). Replies are rare on `/ws` (pongs, errors); on
/// `/echo` every frame is one, and waiting for the writer is the
/// back-pressure an echo owes a peer that sends faster than it reads.
const REPLY_QUEUE: usize = 0;

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
    for stream in shared.accepted(&listener, "ws") {
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

/// The reader thread's body: the opening, then the read loop.
///
/// The read loop runs under this thin frame; every step before it (`upgrade`
/// and the functions it calls) runs in frames of its own, never inlined
/// here, and returns before the loop starts: a thread keeps every stack page
/// it has ever touched, so a step's frame must not sit under the loop, which
/// lasts as long as the connection. Each step kept out cut a page of every
/// reader's stack (`docs/performance.md`).
fn serve(stream: TcpStream, id: ClientId, permit: Permit, shared: Shared) {
    let _done = shared.done.clone();
    if let Some(reader) = upgrade(stream, id, permit, &shared) {
        reader.run();
    }
}

/// The handshake, the writer, the opening: the reader for the read loop, or
/// `None` if the connection was refused or is already over.
#[inline(never)]
fn upgrade(
    stream: TcpStream,
    id: ClientId,
    permit: Permit,
    shared: &Shared,
) -> Option<Box<Reader>> {
    let peer = peer_name(&stream);
    let socket = Arc::new(stream);
    // Held by the reader for as long as it runs, and by the writer.
    let permit = Arc::new(permit);
    let accepted = match handshake(&socket, shared) {
        Ok(accepted) => accepted,
        Err(refusal) => {
            debug!(
                "{id} {peer} ws handshake refused: {} {}",
                refusal.status, refusal.message
            );
            refuse(&socket, shared, &refusal);
            return None;
        }
    };
    let Ok(signed) = token::authorize(&socket, id, &accepted, shared) else {
        return None; // refused with 401
    };
    // The writer starts before the upgrade, so a thread that cannot start is
    // still a 503.
    let expiry = signed.as_ref().map(|s| Arc::clone(&s.session.expiry));
    let link = match start_writer(&socket, id, &permit, shared, (&accepted.route, expiry)) {
        Ok(link) => link,
        Err(e) => {
            warn!("{id} refused: cannot start a thread: {e}");
            let busy = Refusal::new(
                503,
                "Service Unavailable",
                "threads",
                "the server cannot take more connections",
            );
            refuse(&socket, shared, &busy);
            return None;
        }
    };
    let Accepted {
        route,
        key,
        head,
        head_len,
    } = accepted;
    let WriterLink { replies, queue } = link;
    let reader = new_reader(id, socket, (head, head_len), replies, &shared.config);
    open(reader, shared, &peer, route, &key, queue, signed)
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
    let challenge: &[&str] = match refusal.status {
        401 => &["WWW-Authenticate: Bearer"],
        _ => &[],
    };
    respond(
        socket,
        refusal.status,
        refusal.reason,
        challenge,
        &refusal.message,
    );
    linger_then_close(socket, CLOSE_GRACE);
}

/// The writer's end of a connection, as the reader and the hub hold it.
struct WriterLink {
    /// What the protocol owes the peer (pong, close, errors, echo).
    replies: Sender<Reply>,
    /// The connection's queue, for the hub (`/ws` only).
    /// The hub's end of the connection's queue (`/ws` only).
    queue: Option<Queue>,
}

/// Starts the connection's writer thread.
#[inline(never)]
fn start_writer(
    socket: &Arc<TcpStream>,
    id: ClientId,
    permit: &Arc<Permit>,
    shared: &Shared,
    (route, expiry): (&Route, Option<Arc<Expiry>>),
) -> io::Result<WriterLink> {
    let config = &shared.config;
    let _ = socket.set_read_timeout(Some(config.ping_interval * 2));
    let _ = socket.set_write_timeout(Some(config.write_timeout));
    let (replies, replies_rx) = reply_queue(REPLY_QUEUE);
    // `/echo` gets one too, which the hub never sees: dropped below, its
    // channel reads as closed and the writer stops looking at it.
    let format = match route {
        Route::Chat { format, .. } => *format,
        Route::Echo => Format::Json,
    };
    let (queue, inbox) = subscriber_queue(config.send_buffer, socket, format);
    // Boxed, so that the closure moved through every frame of the spawn is
    // one pointer, not the writer's whole state.
    let writer = Box::new(Writer {
        id,
        socket: Arc::clone(socket),
        inbox,
        replies: replies_rx,
        format,
        ping_interval: config.ping_interval,
        // With a token, the writer ends the connection when it runs out,
        // unless the reader's refresh has moved that by then.
        expiry,
        _permit: Arc::clone(permit),
        _done: shared.done.clone(),
    });
    spawn_named(format!("ws-w {id}"), WRITER_STACK_BYTES, move || {
        writer.run()
    })?;
    let queue = match route {
        Route::Chat { .. } => Some(queue),
        Route::Echo => None,
    };
    Ok(WriterLink { replies, queue })
}

/// The reply queue, made out of line.
///
/// Building a channel assembles it on the stack, then allocates it with its
/// slots' alignment (`posix_memalign`), and every page of the reader's stack
/// that is touched stays resident for the life of the connection. Inlined
/// into `start_writer`, the queues took every reader's stack a page deeper;
/// out of line, the deepest point is the read loop again
/// (`docs/performance.md`).
#[inline(never)]
fn reply_queue<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    bounded(capacity)
}

/// The connection's event queue (`queue::bounded`), out of line like
/// `reply_queue` (inlined, it took every reader's stack a page deeper again).
/// Dropped as slow, its socket is shut for reading: the writer still owes
/// the peer a close 1008. The hub writes through to the socket when it can
/// (`queue::through`).
#[inline(never)]
fn subscriber_queue(events: usize, socket: &Arc<TcpStream>, format: Format) -> (Queue, Inbox) {
    let on_slow = OnSlow::ShutReading(Arc::clone(socket));
    queue::writing_through(
        events,
        on_slow,
        Through::websocket(Arc::clone(socket), format),
    )
}

/// Completes the handshake and joins the hub (for `/ws`); returns the reader
/// for the read loop, or `None` if the connection is already over.
#[inline(never)]
fn open(
    mut reader: Box<Reader>,
    shared: &Shared,
    peer: &str,
    route: Route,
    key: &str,
    queue: Option<Queue>,
    signed: Option<Box<Signed>>,
) -> Option<Box<Reader>> {
    let id = reader.id;
    if matches!(route, Route::Chat { .. }) {
        // The upgrade is answered once the connection may join: see `admission`.
        shared.hub.wait_to_join();
    }
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if (&*reader.socket).write_all(upgrade.as_bytes()).is_err() {
        return None; // dropping the reader's `replies` lets the writer end too
    }
    match route {
        Route::Echo => debug!("{id} {peer} ws echo open"),
        Route::Chat {
            rooms, name, since, ..
        } => {
            debug!("{id} {peer} ws open");
            let access = match signed {
                Some(signed) => {
                    let Signed { access, session } = *signed;
                    reader.session = Some(session);
                    access
                }
                None => Access::Open,
            };
            let subscriber = Subscriber {
                id,
                name: access.name(name).unwrap_or_else(|| Name::guest(id.0)),
                transport: Transport::Ws,
                queue: queue?,
                access,
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

/// The reader, boxed and built out of line: the protocol state is assembled
/// in this frame, which is gone before `open` starts, and `serve` holds only
/// a pointer under the read loop.
#[inline(never)]
fn new_reader(
    id: ClientId,
    socket: Arc<TcpStream>,
    (head, head_len): (Vec<u8>, usize),
    replies: Sender<Reply>,
    config: &Config,
) -> Box<Reader> {
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes));
    Box::new(Reader {
        id,
        socket,
        // Only the bytes read past the head, in an allocation of their own:
        // the head's buffer is not kept for the life of the connection.
        context: WebSocketContext::from_partially_read(
            head[head_len..].to_vec(),
            Role::Server,
            Some(ws_config),
        ),
        replies,
        chat: None,
        rate: config.rate_limit.map(RateLimit::new),
        max_message_bytes: config.max_message_bytes,
        session: None,
    })
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
