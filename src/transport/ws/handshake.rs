//! The WebSocket handshake, read and checked by hand on `httparse`: a whole
//! head within `MAX_HEAD_BYTES` and the request deadline, the path (`/ws` or
//! `/echo`), the upgrade headers, the origin rule, and the subscription.
//! With `--jwt-*`, `token` then checks the token in the head it returns.
//! Runs on the connection's reader thread, before its writer exists.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::Instant;

use crate::protocol::{Format, ParseError};
use crate::room::{Name, RoomName};
use crate::subscription::{Subscription, SubscriptionBuilder};
use crate::transport::Shared;

/// The largest HTTP request head accepted for a handshake.
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// The most header lines a handshake may have.
const MAX_HEADERS: usize = 64;

/// What a handshake asked for.
pub(super) enum Route {
    Echo,
    Chat {
        rooms: Vec<RoomName>,
        name: Option<Name>,
        format: Format,
        since: Option<u64>,
    },
}

/// A handshake refused with an HTTP status.
pub(super) struct Refusal {
    pub(super) status: u16,
    pub(super) reason: &'static str,
    pub(super) message: String,
    pub(super) metric: &'static str,
}

impl Refusal {
    pub(super) fn new(
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

/// A handshake accepted: where to, the client's key, and everything read:
/// the request head (`head[..head_len]`), then any bytes past it.
pub(super) struct Accepted {
    pub(super) route: Route,
    pub(super) key: String,
    pub(super) head: Vec<u8>,
    pub(super) head_len: usize,
}

/// Reads and checks the handshake request; on success returns the route, the
/// client's key and any bytes read past the request head.
#[inline(never)]
pub(super) fn handshake(socket: &TcpStream, shared: &Shared) -> Result<Accepted, Refusal> {
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
        head,
        head_len,
    })
}

/// The subscription (`room=`, `name=`, `since=`: see `subscription`) and
/// `format=json|text`.
pub(super) fn parse_chat_query(query: &str) -> Result<Route, ParseError> {
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

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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
