//! The HTTP side on `--http`: the chat page, SSE, the REST API, `/healthz`
//! and `/metrics`. `listener` runs the threads (an accept loop, a thread per
//! connection); this file routes each request and turns every refusal into
//! one JSON shape.
//!
//! Errors are one enum, `ApiError`, with one status and one stable code per
//! case; every error body is `{"error":"<code>","message":"<for people>"}`.

pub mod listener;
pub mod rest;

use std::io::Cursor;

use log::debug;
use serde::Serialize;
use tiny_http::{Header, Method, Request, Response};

use crate::auth::TokenError;
use crate::engine::Unavailable;
use crate::hub::{HubGone, PublishError, Refused};
use crate::origin::OriginRefused;
use crate::protocol::ParseError;
use crate::rooms::RoomLimit;
use crate::transport::{sse, Shared};

pub use listener::{bind, spawn_listener};

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
    /// Tokens are on (`--jwt-*`) and the request has no good one.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The token does not allow this room.
    #[error("{0}")]
    NotAllowed(String),
    /// A browser on another site's page (`origin::OriginRule`).
    #[error(transparent)]
    Forbidden(#[from] OriginRefused),
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
    /// A new room at `--max-rooms`.
    #[error(transparent)]
    RoomLimit(#[from] RoomLimit),
    /// The engine cannot reach Redis (`--redis`).
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
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
            ApiError::Token(TokenError::Unavailable) => 503,
            ApiError::Unauthorized(_) | ApiError::Token(_) => 401,
            ApiError::NotAllowed(_) => 403,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Full(_)
            | ApiError::RoomLimit(_)
            | ApiError::Unavailable(_)
            | ApiError::ShuttingDown => 503,
            ApiError::Timeout => 408,
        }
    }

    /// The stable code in the body's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Parse(e) => e.code(),
            ApiError::Token(TokenError::Unavailable) => "unavailable",
            ApiError::Unauthorized(_) | ApiError::Token(_) => "unauthorized",
            ApiError::NotAllowed(_) => "forbidden",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::UnsupportedMediaType(_) => "unsupported",
            ApiError::Full(_) | ApiError::ShuttingDown => "unavailable",
            ApiError::Unavailable(_) => Unavailable::CODE,
            ApiError::Timeout => "timeout",
            ApiError::RoomLimit(_) => RoomLimit::CODE,
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
            ApiError::Token(TokenError::Unavailable) => {}
            ApiError::Unauthorized(_) | ApiError::Token(_) => {
                reply.add_header(header("WWW-Authenticate", "Bearer"))
            }
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

impl From<sse::Refused> for ApiError {
    fn from(refused: sse::Refused) -> ApiError {
        match refused {
            sse::Refused::Parse(e) => ApiError::Parse(e),
            sse::Refused::Token(e) => ApiError::Token(e),
            sse::Refused::Full(max) => ApiError::Full(max),
            sse::Refused::ShuttingDown => ApiError::ShuttingDown,
        }
    }
}

impl From<HubGone> for ApiError {
    fn from(_: HubGone) -> ApiError {
        ApiError::ShuttingDown
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> ApiError {
        match e {
            PublishError::Stopped(gone) => gone.into(),
            PublishError::Refused(Refused::RoomLimit(limit)) => limit.into(),
            PublishError::Refused(Refused::Unavailable(down)) => down.into(),
        }
    }
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
        crate::auth::without_token(request.url()),
        error.status(),
        error
    );
    let _ = request.respond(error.reply());
}

/// The routing table.
fn route(
    request: &mut Request,
    path: &str,
    query: &str,
    shared: &Shared,
    page_html: &str,
) -> Result<Reply, ApiError> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let read = matches!(request.method(), Method::Get | Method::Head);
    let not_allowed = |allow: &'static str| ApiError::MethodNotAllowed {
        method: request.method().to_string(),
        path: path.to_owned(),
        allow,
    };
    match segments.as_slice() {
        [""] if read => Ok(page(page_html)),
        ["healthz"] if read => Ok(health(shared)),
        ["metrics"] if read => Ok(metrics(request, shared)),
        ["rooms"] if read => rest::list_rooms(request, query, shared),
        ["rooms", room] if read => rest::describe_room(request, room, query, shared),
        ["rooms", room, "messages"] if read => rest::history(request, room, query, shared),
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

/// `200 ok`, or, with `--redis` while Redis is out of reach, `503 redis
/// unavailable` (a load balancer then sends new clients elsewhere).
fn health(shared: &Shared) -> Reply {
    match shared.metrics.redis() {
        Some(redis) if !redis.is_up() => text(503, "redis unavailable"),
        _ => text(200, "ok"),
    }
}

fn text(status: u16, body: &str) -> Reply {
    Response::from_data(format!("{body}\n").into_bytes())
        .with_status_code(status)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name, value).expect("our own headers are valid ASCII")
}
