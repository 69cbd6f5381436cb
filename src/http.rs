//! The HTTP listener on `--http` (tiny_http): the chat page, SSE, the REST
//! API, `/healthz` and `/metrics`.
//!
//! ```text
//! tiny_http's threads --Request--> [http] --Request (bounded)--> [http-w1..4]
//!                                                                  |  quick: answer inline,
//!                                                                  |  asking the hub if need be
//!                                                                  +--GET /events--> [sse c9]
//! ```
//!
//! tiny_http parses requests on its own threads and hands them out through
//! `recv()`. The `http` thread only takes them and passes them on to a few
//! workers over a bounded channel, so one slow request (a client that sends
//! its body byte by byte, a hub busy under load) delays neither `/healthz`
//! nor the next SSE subscriber; a full channel makes `http` wait, which is
//! back-pressure on tiny_http and, through it, on new requests. A request
//! that lives as long as its client (`GET /events`) gets a thread of its
//! own (`transport::sse`).
//!
//! Every socket tiny_http accepts inherits a send timeout from the listener
//! (`bind`): tiny_http never lends out the socket itself, and without it a
//! write to a peer that stopped reading would block its thread forever.
//!
//! Errors are one enum, `ApiError`, with one status and one stable code per
//! case; every error body is `{"error":"<code>","message":"<for people>"}`.

pub mod rest;

use std::io::{self, Cursor};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver};
use log::{debug, warn};
use serde::Serialize;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::hub::HubGone;
use crate::protocol::ParseError;
use crate::threads::{spawn_named, READER_STACK_BYTES, WRITER_STACK_BYTES};
use crate::transport::{sse, Shared};

/// Worker threads answering requests (SSE streams have their own threads).
const WORKERS: usize = 4;
/// Requests waiting for a worker before the `http` thread waits too.
const WAITING_REQUESTS: usize = 64;
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

/// Binds `addr` for tiny_http. Sockets accepted from a listener inherit its
/// send timeout (`SO_SNDTIMEO`, on Linux), so every write tiny_http or
/// an SSE stream makes gives up after `write_timeout` on a peer that stopped
/// reading; the listener's receive timeout stays unset, as `accept` obeys it.
pub fn bind(addr: SocketAddr, write_timeout: Duration) -> io::Result<Server> {
    let listener = with_send_timeout(TcpListener::bind(addr)?, write_timeout)?;
    Server::from_listener(listener, None)
        .map_err(|e| io::Error::other(format!("cannot serve HTTP on {addr}: {e}")))
}

/// Starts the `http` thread and its workers on `server`; they end when
/// `server.unblock()` is called. `ws_addr` is where the chat page will dial.
pub fn spawn_listener(
    server: Arc<Server>,
    shared: Shared,
    ws_addr: SocketAddr,
) -> io::Result<JoinHandle<()>> {
    let site = Arc::new(Site {
        page: PAGE.replace("__WS_PORT__", &ws_addr.port().to_string()),
        shared,
    });
    let (to_workers, requests) = bounded::<Request>(WAITING_REQUESTS);
    let mut workers = Vec::with_capacity(WORKERS);
    for n in 1..=WORKERS {
        let (site, requests) = (Arc::clone(&site), requests.clone());
        // Workers parse request bodies: a reader's stack.
        workers.push(spawn_named(
            format!("http-w{n}"),
            READER_STACK_BYTES,
            move || work(&requests, &site),
        )?);
    }
    spawn_named("http".into(), WRITER_STACK_BYTES, move || {
        for request in server.incoming_requests() {
            if site.shared.shutting_down() {
                let _ = request.respond(ApiError::ShuttingDown.reply()); // the client may be gone
                break;
            }
            if to_workers.send(request).is_err() {
                break; // every worker is gone: only a panic does that
            }
        }
        drop(to_workers); // the workers finish what is queued, then end
        for worker in workers {
            if worker.join().is_err() {
                warn!("an http worker panicked");
            }
        }
        debug!("http loop ends");
    })
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

/// What the workers share: the server's handles and the page, rendered once.
struct Site {
    shared: Shared,
    page: String,
}

fn work(requests: &Receiver<Request>, site: &Site) {
    for mut request in requests {
        let url = request.url().to_owned();
        let (path, query) = url.split_once('?').unwrap_or((&url, ""));
        if path == "/events" && matches!(request.method(), Method::Get) {
            sse::open(request, query, &site.shared);
            continue;
        }
        match route(&mut request, path, query, site) {
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
