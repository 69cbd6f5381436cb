//! Between the proto messages and the hub's: events out in the one flat
//! proto shape, requests in through the same checks as every transport
//! (`INVALID_ARGUMENT` with a clear message for a bad one).

use std::net::SocketAddr;

use tonic::Status;

use crate::protocol::{Body, Event, ParseError, Request};
use crate::room::{Name, RoomName};

use super::proto::chat_request::Action;
use super::{proto, PUBLISH_DEFAULT_NAME};

/// One event in the flat proto shape (see the module doc for the mapping).
pub fn to_proto(event: &Event) -> proto::Event {
    let mut out = proto::Event {
        r#type: event.kind().to_owned(),
        ..Default::default()
    };
    match event.body() {
        Body::Message {
            room,
            id,
            from,
            from_id,
            text,
            ts,
        } => {
            out.room = room.to_string();
            out.id = *id;
            out.from = from.to_string();
            out.from_id = from_id.to_string();
            out.text = text.clone();
            out.ts = *ts as i64;
        }
        Body::Joined {
            room,
            id,
            name,
            from_id,
            ts,
        }
        | Body::Left {
            room,
            id,
            name,
            from_id,
            ts,
        } => {
            out.room = room.to_string();
            out.id = *id;
            out.from = name.to_string();
            out.from_id = from_id.to_string();
            out.ts = *ts as i64;
        }
        Body::Welcome { id, name, rooms } => {
            let rooms: Vec<&str> = rooms.iter().map(RoomName::as_str).collect();
            out.room = rooms.join(",");
            out.from = name.to_string();
            out.from_id = id.to_string();
        }
        Body::Presence { room, .. } => {
            out.room = room.to_string();
            out.text = event.text_line();
        }
        Body::Error { code, message } => out.text = format!("{code}: {message}"),
        Body::Rooms { .. } | Body::Help { .. } => out.text = event.text_line(),
    }
    out
}

/// Checks one `ChatRequest`.
pub(super) fn chat_request(
    request: proto::ChatRequest,
    max_message_bytes: usize,
) -> Result<Request, Status> {
    match request.action {
        None => Err(Status::invalid_argument(
            "a ChatRequest needs one of join, leave, send, nick or refresh",
        )),
        Some(Action::Join(room)) => Ok(Request::Join(room_name(&room)?)),
        Some(Action::Leave(room)) => Ok(Request::Leave(room_name(&room)?)),
        Some(Action::Nick(name)) => Ok(Request::Nick(display_name(&name)?)),
        Some(Action::Refresh(token)) => Ok(Request::Refresh(token)),
        Some(Action::Send(send)) => {
            // An empty room means the room joined last, as a WebSocket message without one.
            let room = match send.room.as_str() {
                "" => None,
                raw => Some(room_name(raw)?),
            };
            let text = message_text(send.text, max_message_bytes)?;
            Ok(Request::Say { room, text })
        }
    }
}

/// Checks one `PublishRequest`.
pub(super) fn publish_request(
    request: proto::PublishRequest,
    max_message_bytes: usize,
) -> Result<(RoomName, Name, String), Status> {
    let room = room_name(&request.room)?;
    let from = match request.from.as_str() {
        "" => Name::parse(PUBLISH_DEFAULT_NAME).expect("the default publisher name is valid"),
        raw => display_name(raw)?,
    };
    let text = message_text(request.text, max_message_bytes)?;
    Ok((room, from, text))
}

pub(super) fn room_name(raw: &str) -> Result<RoomName, Status> {
    RoomName::parse(raw).map_err(|e| invalid(e, raw))
}

pub(super) fn display_name(raw: &str) -> Result<Name, Status> {
    Name::parse(raw).map_err(|e| invalid(e, raw))
}

pub(super) fn message_text(text: String, max_message_bytes: usize) -> Result<String, Status> {
    if text.trim().is_empty() {
        return Err(Status::invalid_argument("message text is empty"));
    }
    if text.len() > max_message_bytes {
        let e = ParseError::TooLarge {
            len: text.len(),
            limit: max_message_bytes,
        };
        return Err(Status::invalid_argument(e.to_string()));
    }
    Ok(text)
}

/// `INVALID_ARGUMENT` saying what is wrong and what was sent (cut short: a
/// status message travels in an HTTP/2 header).
pub(super) fn invalid(e: ParseError, raw: &str) -> Status {
    const SHOWN_CHARS: usize = 40;
    let shown: String = raw.chars().take(SHOWN_CHARS).collect();
    let more = if raw.chars().count() > SHOWN_CHARS {
        "…"
    } else {
        ""
    };
    Status::invalid_argument(format!("{e} (got {shown:?}{more})"))
}

pub(super) fn show(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "-".to_owned(), |p| p.to_string())
}
