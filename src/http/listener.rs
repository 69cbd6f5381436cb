//! The HTTP listener's threads: an accept loop and one thread per connection.
//!
//! ```text
//! [http-accept] --spawn--> [http c7]  requests one after another, each
//!      |                      |         answered on this thread
//!      |                      +--GET /events--> the same thread becomes the
//!      |                                        SSE stream (`transport::sse`)
//!      +--TcpStream--> [http-refuse]  (503 over --max-http-connections)
//! ```
//!
//! The same shape as the WebSocket side, so a slow client (a body sent byte
//! by byte, a response read byte by byte) holds only its own thread, never
//! `/healthz` or the next subscriber. tiny_http parses each request and
//! writes each response on that thread (`ClientConnection::from_tcp`); its
//! own accept loop and thread pool are not used.
//!
//! Every connection is bounded: plain ones by `--max-http-connections`
//! (`PlainSlot`), each request by `tiny_http::Limits` (head size, a
//! whole-request deadline, a bounded drain of an unread body). A connection
//! that becomes an SSE stream trades its plain place for one under
//! `--max-connections`, so subscribers at that limit leave `/healthz` and
//! `/metrics` reachable.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use log::{debug, warn};
use tiny_http::{ClientConnection, Limits, Method, Request};

use super::{respond, route, ApiError, PAGE};
use crate::metrics::Metrics;
use crate::os::threads::{spawn_named, READER_STACK_BYTES, WRITER_STACK_BYTES};
use crate::protocol::ClientId;
use crate::transport::refuse::{linger_then_close, spawn_connection, Refuser, CLOSE_GRACE};
use crate::transport::{sse, ConnectionLimit, Permit, Shared};

/// Binds `addr`. Sockets accepted from a listener inherit its send timeout
/// (`SO_SNDTIMEO`, on Linux), so every write to a peer that stopped reading
/// gives up after `write_timeout`; the listener's receive timeout stays unset,
/// as `accept` obeys it.
pub fn bind(addr: SocketAddr, write_timeout: Duration) -> io::Result<TcpListener> {
    with_send_timeout(TcpListener::bind(addr)?, write_timeout)
}

/// Starts the `http-accept` thread on `listener`. `ws_addr` is where the
/// chat page will dial.
pub fn spawn_listener(
    listener: TcpListener,
    shared: Shared,
    ws_addr: SocketAddr,
) -> io::Result<JoinHandle<()>> {
    let refuser = Refuser::spawn("http-refuse", shared.done.clone())?;
    let site = Arc::new(Site {
        page: PAGE.replace("__WS_PORT__", &ws_addr.port().to_string()),
        plain: ConnectionLimit::new(shared.config.max_http_connections),
        open: OpenSockets::default(),
        limits: Limits {
            request_timeout: shared.config.request_timeout,
            ..Limits::default()
        },
        shared,
    });
    spawn_named("http-accept".into(), WRITER_STACK_BYTES, move || {
        accept_loop(listener, site, refuser)
    })
}

fn accept_loop(listener: TcpListener, site: Arc<Site>, refuser: Refuser) {
    let shared = &site.shared;
    for stream in shared.accepted(&listener, "http") {
        let Some(permit) = site.plain.try_acquire() else {
            shared.metrics.refused("http_limit");
            debug!(
                "http connection refused: at --max-http-connections ({})",
                shared.config.max_http_connections
            );
            refuser.refuse(stream, "the server has too many HTTP connections open");
            continue;
        };
        let id = shared.ids.next();
        let slot = PlainSlot::new(permit, &shared.metrics);
        let conn_site = Arc::clone(&site);
        let spawned = spawn_connection(
            format!("http {id}"),
            READER_STACK_BYTES,
            stream,
            move |stream| serve(stream, id, slot, &conn_site),
        );
        if let Err((e, stream)) = spawned {
            shared.metrics.refused("threads");
            warn!("{id} http refused: cannot start a thread: {e}");
            if let Some(stream) = stream {
                refuser.refuse(stream, "the server cannot take more connections");
            }
        }
    }
    // Keep-alive connections wait for a next request that will not come:
    // end them now rather than at their deadline.
    site.open.shut_all();
    debug!("http accept loop ends");
}

/// One connection's thread: its requests, one after another, until the peer
/// closes, a request fails its bounds, or a request becomes an SSE stream.
fn serve(stream: TcpStream, id: ClientId, slot: PlainSlot, site: &Site) {
    let socket = Arc::new(stream);
    let _open = site.open.add(id, &socket);
    if site.shared.shutting_down() {
        return; // too late to be shut with the others
    }
    let mut slot = Some(slot);
    let mut connection = ClientConnection::from_tcp(Arc::clone(&socket), site.limits.clone());
    for request in connection.by_ref() {
        // Shutdown waits for requests under way, not for idle connections.
        let _busy = site.shared.done.clone();
        if site.shared.shutting_down() {
            respond(request, ApiError::ShuttingDown);
            break;
        }
        site.handle(request, id, &socket, &mut slot);
    }
    if let Some(status) = connection.refused() {
        site.shared.metrics.refused(refusal_reason(status));
        debug!("{id} http refused with {status}");
    }
    drop(connection);
    linger_then_close(&socket, CLOSE_GRACE);
}

/// The `reason` label for a request tiny_http refused with `status`.
fn refusal_reason(status: u16) -> &'static str {
    match status {
        408 => "timeout",
        413 | 414 | 431 => "too_large",
        _ => "bad_request",
    }
}

/// Every open HTTP connection's socket, so that shutdown can end the idle
/// ones at once. A lock, not the hub: this is not hub state, and it is
/// touched only as connections open and close.
#[derive(Default)]
struct OpenSockets(Mutex<HashMap<ClientId, Arc<TcpStream>>>);

impl OpenSockets {
    /// Registers `socket` until the returned guard drops.
    fn add<'a>(&'a self, id: ClientId, socket: &Arc<TcpStream>) -> impl Drop + 'a {
        self.lock().insert(id, Arc::clone(socket));
        Registered { sockets: self, id }
    }

    /// Shuts the reading side of every open connection: a thread waiting for
    /// a request sees the end, one streaming SSE is not disturbed.
    fn shut_all(&self) {
        for socket in self.lock().values() {
            let _ = socket.shutdown(Shutdown::Read); // already closed is fine
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, Arc<TcpStream>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Registered<'a> {
    sockets: &'a OpenSockets,
    id: ClientId,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.sockets.lock().remove(&self.id);
    }
}

/// A plain connection's place under `--max-http-connections`, counted in
/// `switchboard_http_connections` while it is held.
struct PlainSlot {
    _permit: Permit,
    metrics: Arc<Metrics>,
}

impl PlainSlot {
    fn new(permit: Permit, metrics: &Arc<Metrics>) -> PlainSlot {
        metrics.http_connections_add(1);
        PlainSlot {
            _permit: permit,
            metrics: Arc::clone(metrics),
        }
    }
}

impl Drop for PlainSlot {
    fn drop(&mut self) {
        self.metrics.http_connections_add(-1);
    }
}

/// What every connection thread shares: the server's handles, the page
/// (rendered once), the plain-connection limit and the request bounds.
pub(super) struct Site {
    shared: Shared,
    page: String,
    plain: Arc<ConnectionLimit>,
    open: OpenSockets,
    limits: Limits,
}

impl Site {
    /// Answers one request; `GET /events` turns this thread into its stream,
    /// which takes `slot`.
    fn handle(
        &self,
        mut request: Request,
        id: ClientId,
        socket: &Arc<TcpStream>,
        slot: &mut Option<PlainSlot>,
    ) {
        let url = request.url().to_owned();
        let (path, query) = url.split_once('?').unwrap_or((&url, ""));
        if path == "/events" && matches!(request.method(), Method::Get) {
            match sse::admit(&request, query, &self.shared) {
                Ok(admitted) => {
                    drop(slot.take()); // a subscriber now, not a plain request
                    sse::run(request, admitted, id, socket, &self.shared);
                }
                Err(refused) => respond(request, refused.into()),
            }
            return;
        }
        match route(&mut request, path, query, &self.shared, &self.page) {
            Ok(reply) => {
                let _ = request.respond(reply); // the client may be gone
            }
            Err(e) => respond(request, e),
        }
    }
}

/// Sets a listener's `SO_SNDTIMEO`. std has the setter on `TcpStream` only,
/// but the option means the same on any socket: the descriptor visits a
/// `TcpStream` for one call and comes back (safe conversions, no copy).
fn with_send_timeout(listener: TcpListener, timeout: Duration) -> io::Result<TcpListener> {
    let socket = TcpStream::from(OwnedFd::from(listener));
    socket.set_write_timeout(Some(timeout))?;
    Ok(TcpListener::from(OwnedFd::from(socket)))
}
