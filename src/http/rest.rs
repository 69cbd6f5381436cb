//! The REST API: publish into a room, list rooms, describe one, read history.
//!
//! Runs on the `http-w` worker threads. Each endpoint is request/reply with
//! the hub (`HubHandle::publish`, `rooms`, `describe`, `history`): a one-slot
//! reply channel travels with the command, so the hub stays the only owner of
//! rooms and history and no lock is needed. A publish waits while the hub's
//! command queue is full, the same back-pressure every publisher gets.
//!
//! Messages published here carry `from_id: "rest"` and the sender name the
//! body gives (`from`), or `api`.
//!
//! A browser on another site's page may not publish: a `text/plain` POST
//! needs no CORS preflight, so without this check any page a visitor opens
//! could post into rooms through the visitor's browser. `publish` asks the
//! same rule as the WebSocket handshake (`origin::OriginRule`); requests
//! without `Origin` (curl, programs) are not browsers' and pass.
//!
//! With tokens on (`--jwt-*`), every endpoint here needs the API key or a
//! token (`Authorization: Bearer`, or `?token=`), and a token's rooms bound
//! what it reads (401 without one, 403 for a room it does not allow); the
//! API key, the operator's, allows every room.

use std::io::{ErrorKind, Read};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use tiny_http::Request;

use super::{json, json_bytes, ApiError, Reply};
use crate::auth::{self, Access};
use crate::protocol::ParseError;
use crate::room::{Name, RoomName};
use crate::transport::Shared;

/// History events returned when `limit` is not given.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;
/// The most history events one request returns (a larger `limit` is cut).
pub const MAX_HISTORY_LIMIT: usize = 1000;
/// What a JSON body may add around the text (`{"text":..,"from":..}`).
const ENVELOPE_BYTES: usize = 4096;
/// The sender name when the body gives none.
const DEFAULT_FROM: &str = "api";

/// `GET /rooms`: every room (that the token may read), sorted by name.
pub fn list_rooms(request: &Request, query: &str, shared: &Shared) -> Result<Reply, ApiError> {
    let access = reader(request, query, shared)?;
    let mut rooms = shared.hub.rooms()?;
    rooms.retain(|r| access.may_read(&r.name));
    Ok(json(200, &rooms))
}

/// `GET /rooms/{room}`: its members and their transports, or 404.
pub fn describe_room(
    request: &Request,
    room: &str,
    query: &str,
    shared: &Shared,
) -> Result<Reply, ApiError> {
    let access = reader(request, query, shared)?;
    let room = RoomName::parse(room)?;
    may_read(&access, &room)?;
    match shared.hub.describe(room.clone())? {
        Some(detail) => Ok(json(200, &detail)),
        None => Err(no_room(&room)),
    }
}

/// `GET /rooms/{room}/messages?since=ID&limit=N`: history, oldest first.
/// Without `since`, the newest `limit` events; with it, the first `limit`
/// after `since`, so a client can page forward.
pub fn history(
    request: &Request,
    room: &str,
    query: &str,
    shared: &Shared,
) -> Result<Reply, ApiError> {
    let access = reader(request, query, shared)?;
    let room = RoomName::parse(room)?;
    may_read(&access, &room)?;
    let mut since = None;
    let mut limit = DEFAULT_HISTORY_LIMIT;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "since" => since = Some(number("since", &value)?),
            "limit" => limit = number("limit", &value)?.min(MAX_HISTORY_LIMIT as u64) as usize,
            _ => {} // unknown parameters are ignored, as HTTP servers do
        }
    }
    let Some(events) = shared.hub.history(room.clone(), since, limit)? else {
        return Err(no_room(&room));
    };
    // Each event's JSON is cached on the event: join the encodings, don't
    // serialise again.
    let mut body = Vec::with_capacity(events.iter().map(|e| e.json().len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (n, event) in events.iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event.json().as_bytes());
    }
    body.push(b']');
    Ok(json_bytes(200, body))
}

/// `POST /rooms/{room}/messages`: a JSON `{"text","from"}` or `text/plain`
/// body (then `?from=NAME` names the sender). `202 {"id":N}`.
pub fn publish(
    request: &mut Request,
    room: &str,
    query: &str,
    shared: &Shared,
) -> Result<Reply, ApiError> {
    // Before the key: a page elsewhere is refused whether or not it has one
    // (it could not send one anyway, without a preflight this API never grants).
    let verdict = shared.origins.check(
        header(request, "Origin"),
        header(request, "Sec-Fetch-Site"),
        header(request, "Host"),
    );
    if let Err(refused) = verdict {
        shared.metrics.refused("origin"); // counted with the WebSocket's refusals
        return Err(refused.into());
    }
    let access = match shared.config.jwt {
        None => {
            authorize(request, shared.config.api_key.as_deref())?;
            Access::Open
        }
        Some(_) => caller(request, query, shared)?,
    };
    let room = RoomName::parse(room)?;
    if !access.may_publish(&room) {
        let message = format!("your token does not let you send to #{room}");
        return Err(ApiError::NotAllowed(message));
    }
    let kind = body_kind(request)?;
    let limit = shared.config.max_message_bytes;
    let body = read_body(request, limit + kind.envelope())?;
    let (text, from) = match kind {
        BodyKind::Json => {
            let message: JsonMessage = serde_json::from_slice(&body).map_err(|e| {
                bad(format!(
                    r#"the body must be {{"text":"...","from":"name"}}: {e}"#
                ))
            })?;
            (message.text, message.from)
        }
        BodyKind::Text => {
            let text = String::from_utf8(body).map_err(|_| bad("the body is not UTF-8".into()))?;
            let from = form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == "from")
                .map(|(_, value)| value.into_owned());
            (text, from)
        }
    };
    if text.len() > limit {
        return Err(ParseError::TooLarge {
            len: text.len(),
            limit,
        }
        .into());
    }
    if text.trim().is_empty() {
        return Err(bad("message text is empty".into()));
    }
    let from = match from {
        Some(name) => Some(Name::parse(&name)?),
        None => None,
    };
    // A token's own name wins, as on every transport.
    let from = access
        .name(from)
        .unwrap_or_else(|| Name::parse(DEFAULT_FROM).expect("the default sender name is valid"));
    let id = shared.hub.publish(room, from, Arc::from("rest"), text)?;
    Ok(json(202, &json!({ "id": id })))
}

/// A publish body in JSON.
#[derive(Deserialize)]
struct JsonMessage {
    text: String,
    from: Option<String>,
}

/// The body formats `publish` accepts.
#[derive(Clone, Copy)]
enum BodyKind {
    Json,
    Text,
}

impl BodyKind {
    /// Bytes a body may have beyond the text limit.
    fn envelope(self) -> usize {
        match self {
            BodyKind::Json => ENVELOPE_BYTES,
            BodyKind::Text => 0,
        }
    }
}

/// With `--api-key`, publishing needs `Authorization: Bearer KEY`.
fn authorize(request: &Request, key: Option<&str>) -> Result<(), ApiError> {
    let Some(key) = key else {
        return Ok(());
    };
    let given = header(request, "Authorization").ok_or(ApiError::Unauthorized(
        "publishing needs Authorization: Bearer <api key>",
    ))?;
    let token = given.strip_prefix("Bearer ").unwrap_or("").trim();
    if same_secret(token.as_bytes(), key.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("wrong API key"))
    }
}

/// With tokens on: who a request speaks for. The API key (the operator's)
/// may do anything; else the token decides; neither is a 401.
fn caller(request: &Request, query: &str, shared: &Shared) -> Result<Access, ApiError> {
    let authorization = header(request, "Authorization");
    if let (Some(key), Some(given)) = (
        shared.config.api_key.as_deref(),
        authorization.and_then(auth::bearer),
    ) {
        if same_secret(given.as_bytes(), key.as_bytes()) {
            return Ok(Access::Open);
        }
    }
    let from_query = form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned());
    let token = auth::presented(from_query.as_deref(), authorization);
    auth::admit(shared.config.jwt.as_ref(), token).map_err(|e| {
        shared.metrics.refused("token");
        ApiError::Token(e)
    })
}

/// What a read may see: everything with tokens off, else as `caller`.
fn reader(request: &Request, query: &str, shared: &Shared) -> Result<Access, ApiError> {
    match shared.config.jwt {
        None => Ok(Access::Open),
        Some(_) => caller(request, query, shared),
    }
}

/// A 403 unless `access` may read `room`.
fn may_read(access: &Access, room: &RoomName) -> Result<(), ApiError> {
    if access.may_read(room) {
        Ok(())
    } else {
        let message = format!("your token does not let you read #{room}");
        Err(ApiError::NotAllowed(message))
    }
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell an attacker how much of a guessed key was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn body_kind(request: &Request) -> Result<BodyKind, ApiError> {
    let raw = header(request, "Content-Type").unwrap_or("");
    let media = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json" => Ok(BodyKind::Json),
        "text/plain" => Ok(BodyKind::Text),
        "" => Err(ApiError::UnsupportedMediaType(
            "say what the body is: Content-Type: application/json or text/plain".into(),
        )),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "{other} is not accepted; send application/json or text/plain"
        ))),
    }
}

/// Reads at most `limit` bytes of body; more is a 413, refused before
/// reading when `Content-Length` already says so.
fn read_body(request: &mut Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = |len| ApiError::Parse(ParseError::TooLarge { len, limit });
    if let Some(len) = request.body_length().filter(|&len| len > limit) {
        return Err(too_large(len));
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(limit as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| match e.kind() {
            ErrorKind::TimedOut | ErrorKind::WouldBlock => ApiError::Timeout,
            _ => bad(format!("could not read the body: {e}")),
        })?;
    if body.len() > limit {
        return Err(too_large(body.len()));
    }
    Ok(body)
}

fn header<'r>(request: &'r Request, name: &'static str) -> Option<&'r str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

fn number(what: &str, raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| bad(format!("{what} must be a whole number, not {raw:?}")))
}

fn bad(message: String) -> ApiError {
    ApiError::Parse(ParseError::BadRequest(message))
}

fn no_room(room: &RoomName) -> ApiError {
    ApiError::NotFound(format!(
        "no room named {room}: a room exists while it has members or history"
    ))
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"k3y", b"k3y"));
        assert!(!same_secret(b"k3y", b"k3z"));
        assert!(!same_secret(b"k3", b"k3y"));
        assert!(!same_secret(b"", b"k"));
    }
}
