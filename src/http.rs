//! The HTTP listener on `--http`: the chat page, SSE, the REST API,
//! `/healthz` and `/metrics`.
//!
//! ```text
//! [http-accept] --spawn--> [http c7]  requests one after another, each
//!      |                      |         answered on this thread (asking the
//!      |                      |         hub if need be)
//!      |                      +--GET /events--> the same thread becomes the
//!      |                                        SSE stream (`transport::sse`)
//!      +--TcpStream--> [http-refuse]  (503 over --max-http-connections)
//! ```
//!
//! The same shape as the WebSocket side: an accept thread and one thread per
//! connection, so a slow client (a body sent byte by byte, a response read
//! byte by byte) holds only its own thread, never `/healthz` or the next
//! subscriber. tiny_http parses each request and writes each response
//! (`ClientConnection`, on our thread); its own accept loop and thread pool
//! are not used.
//!
//! Every HTTP connection is bounded. Plain connections (page, REST, health,
//! metrics) count under `--max-http-connections`; a connection that becomes
//! an SSE stream gives its place back and counts under `--max-connections`
//! instead, so subscribers filling that limit leave `/healthz` and
//! `/metrics` reachable. Each request must arrive whole within
//! `request_timeout` (idle keep-alive time included), and its head within
//! `tiny_http::Limits`; an unread body is drained only up to a bound, past
//! which the connection closes. Every socket inherits a send timeout from the
//! listener (`bind`), so no write blocks for ever on a peer that stopped
//! reading.
//!
//! Errors are one enum, `ApiError`, with one status and one stable code per
//! case; every error body is `{"error":"<code>","message":"<for people>"}`.

pub mod rest;

use std::collections::HashMap;
use std::io::{self, Cursor};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use log::{debug, warn};
use serde::Serialize;
use tiny_http::{ClientConnection, Header, Limits, Method, Request, Response};

use crate::hub::HubGone;
use crate::metrics::Metrics;
use crate::protocol::{ClientId, ParseError};
use crate::threads::{spawn_named, READER_STACK_BYTES, WRITER_STACK_BYTES};
use crate::transport::refuse::{linger_then_close, spawn_connection, Refuser};
use crate::transport::{sse, ConnectionLimit, Permit, Shared};

/// The chat page, with `__WS_PORT__` where the WebSocket port goes.
const PAGE: &str = include_str!("page/index.html");

/// A response with its whole body in memory (everything but SSE).
pub type Reply = Response<Cursor<Vec<u8>>>;

/// Why an HTTP request was refused; each case has one status and one code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A bad room, name, id, body...: 400 with the parse error's own code,
    /// except `TooLarge`, which is 413.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// `--api-key` is set and the request did not carry it.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// No such path, or no such room.
    #[error("{0}")]
    NotFound(String),
    /// The path exists, the method does not.
    #[error("{method} is not allowed on {path}; allowed: {allow}")]
    MethodNotAllowed {
        /// What was asked.
        method: String,
        /// Where.
        path: String,
        /// What works there (the `Allow` header).
        allow: &'static str,
    },
    /// A body that is neither JSON nor plain text.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// At `--max-connections`.
    #[error("at the connection limit ({0}); try again later")]
    Full(usize),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The body did not arrive within the request deadline.
    #[error("the request did not arrive in time")]
    Timeout,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::Parse(ParseError::TooLarge { .. }) => 413,
            ApiError::Parse(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Full(_) | ApiError::ShuttingDown => 503,
            ApiError::Timeout => 408,
        }
    }

    /// The stable code in the body's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Parse(e) => e.code(),
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::UnsupportedMediaType(_) => "unsupported",
            ApiError::Full(_) | ApiError::ShuttingDown => "unavailable",
            ApiError::Timeout => "timeout",
        }
    }

    /// The JSON error response.
    pub fn reply(&self) -> Reply {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
            message: String,
        }
        let body = Body {
            error: self.code(),
            message: self.to_string(),
        };
        let mut reply = json(self.status(), &body);
        match self {
            ApiError::MethodNotAllowed { allow, .. } => reply.add_header(header("Allow", allow)),
            ApiError::Unauthorized(_) => reply.add_header(header("WWW-Authenticate", "Bearer")),
            // The body it refused is not read: the connection cannot carry
            // another request.
            ApiError::Parse(ParseError::TooLarge { .. }) | ApiError::Timeout => {
                reply.add_header(header("Connection", "close"))
            }
            _ => {}
        }
        reply
    }
}

impl From<HubGone> for ApiError {
    fn from(_: HubGone) -> ApiError {
        ApiError::ShuttingDown
    }
}

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
    for stream in listener.incoming() {
        if shared.shutting_down() {
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors, most often: back off instead of spinning.
                warn!("http accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let _ = stream.set_nodelay(true); // a small SSE event must not wait for Nagle
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
    linger_then_close(&socket);
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
pub struct PlainSlot {
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

/// Sets a listener's `SO_SNDTIMEO`. std has the setter on `TcpStream` only,
/// but the option means the same on any socket: the descriptor visits a
/// `TcpStream` for one call and comes back (safe conversions, no copy).
fn with_send_timeout(listener: TcpListener, timeout: Duration) -> io::Result<TcpListener> {
    let socket = TcpStream::from(OwnedFd::from(listener));
    socket.set_write_timeout(Some(timeout))?;
    Ok(TcpListener::from(OwnedFd::from(socket)))
}

/// Builds a JSON response from anything serialisable.
pub fn json(status: u16, body: &impl Serialize) -> Reply {
    let body = serde_json::to_vec(body).expect("API types have only strings, numbers and lists");
    json_bytes(status, body)
}

/// Builds a JSON response from bytes that already are JSON.
pub fn json_bytes(status: u16, body: Vec<u8>) -> Reply {
    Response::from_data(body)
        .with_status_code(status)
        .with_header(header("Content-Type", "application/json"))
}

/// Answers `request` with `error`; the client may be gone, which is fine.
pub fn respond(request: Request, error: ApiError) {
    debug!(
        "http {} {}: {} {}",
        request.method(),
        request.url(),
        error.status(),
        error
    );
    let _ = request.respond(error.reply());
}

/// What every connection thread shares: the server's handles, the page
/// (rendered once), the plain-connection limit and the request bounds.
struct Site {
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
            return sse::serve(request, query, id, socket, slot, &self.shared);
        }
        match route(&mut request, path, query, self) {
            Ok(reply) => {
                let _ = request.respond(reply); // the client may be gone
            }
            Err(e) => respond(request, e),
        }
    }
}

/// The routing table.
fn route(request: &mut Request, path: &str, query: &str, site: &Site) -> Result<Reply, ApiError> {
    let shared = &site.shared;
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let read = matches!(request.method(), Method::Get | Method::Head);
    let not_allowed = |allow: &'static str| ApiError::MethodNotAllowed {
        method: request.method().to_string(),
        path: path.to_owned(),
        allow,
    };
    match segments.as_slice() {
        [""] if read => Ok(page(&site.page)),
        ["healthz"] if read => Ok(text(200, "ok")),
        ["metrics"] if read => Ok(metrics(request, shared)),
        ["rooms"] if read => rest::list_rooms(shared),
        ["rooms", room] if read => rest::describe_room(room, shared),
        ["rooms", room, "messages"] if read => rest::history(room, query, shared),
        ["rooms", room, "messages"] if matches!(request.method(), Method::Post) => {
            rest::publish(request, room, query, shared)
        }
        ["rooms", _, "messages"] => Err(not_allowed("GET, HEAD, POST")),
        ["events"] => Err(not_allowed("GET")),
        [""] | ["healthz"] | ["metrics"] | ["rooms"] | ["rooms", _] => {
            Err(not_allowed("GET, HEAD"))
        }
        _ => Err(ApiError::NotFound(format!("nothing at {path}"))),
    }
}

fn page(page: &str) -> Reply {
    Response::from_data(page.as_bytes().to_vec())
        .with_header(header("Content-Type", "text/html; charset=utf-8"))
        .with_header(header("Cache-Control", "no-cache"))
}

/// Prometheus text, or OpenMetrics for a scraper that asks for it (the
/// encoder writes OpenMetrics, which Prometheus's text parser also reads).
fn metrics(request: &Request, shared: &Shared) -> Reply {
    let wants_openmetrics = request.headers().iter().any(|h| {
        h.field.equiv("Accept") && h.value.as_str().contains("application/openmetrics-text")
    });
    let content_type = if wants_openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    shared
        .metrics
        .set_members_lagging(shared.hub.members_lagging());
    Response::from_data(shared.metrics.render().into_bytes())
        .with_header(header("Content-Type", content_type))
}

fn text(status: u16, body: &str) -> Reply {
    Response::from_data(format!("{body}\n").into_bytes())
        .with_status_code(status)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name, value).expect("our own headers are valid ASCII")
}
