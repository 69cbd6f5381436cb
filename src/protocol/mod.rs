//! What flows through the hub: `Request`s in, `Event`s out, and their codecs.
//!
//! Peers speak two dialects in: JSON commands (`{"type":"join","room":"dev"}`) and
//! plain-text lines for people at a terminal (`/join dev`, or any other line as
//! a message). Both parse to one `Request`, so the hub never sees the dialect.
//!
//! Out, an `Event` is built once by the hub and shared as `Arc<Event>` by every
//! member's queue. It caches each wire encoding the first time a writer asks for
//! it (`OnceLock`): a message to 1000 WebSocket members in JSON mode is
//! serialised once and framed once, by whichever writer thread gets there first,
//! and the hub thread itself never serialises anything.
//!
//! Text mode (`format=text`) is read by people at terminals, so a text line
//! never carries a character that acts instead of showing itself: control
//! characters (an ESC can clear a screen or retitle a window), bidi controls
//! (U+202E turns what follows around) and line separators come out escaped,
//! as `\x1b`, `\u{202e}`, `\n` (see `escape_unprintable`). JSON is for
//! programs and stays plain JSON: serde escapes every C0 control (ESC and BEL
//! become `\u001b`, `\u0007`), and what it leaves raw (DEL, C1, bidi
//! controls, U+2028/2029) is valid JSON that parsers read back as the same
//! text (JavaScript's too, since ES2019 made U+2028/2029 legal in strings).

//! Files: `event` is what goes out and its cached encodings, `request` what
//! comes in and its two parsers, `text` the escaping of text mode; this file
//! holds the small types both sides share.

mod event;
mod request;
#[cfg(test)]
mod tests;
mod text;

pub use event::{
    chunk_size_line, encode_frame, text_frame, Body, Event, CHUNK_SIZE_LINE_ROOM, HELP,
};
pub use request::{parse_line, ParseError, Request};
pub use text::{escape_unprintable, is_unprintable};

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::room::{Name, RoomName};

/// A connection's id, unique for the life of the process; shown as `c<n>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

impl Serialize for ClientId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// How a subscriber is connected; shown by `GET /rooms/{room}` and in metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// A WebSocket connection on `--ws`.
    Ws,
    /// A Server-Sent Events stream on `--http`.
    Sse,
    /// A gRPC stream on `--grpc`.
    Grpc,
}

impl Transport {
    /// The lowercase name used on the wire and in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Grpc => "grpc",
        }
    }
}

/// How a subscriber wants its events: JSON objects or readable lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per event (the default).
    Json,
    /// One human-readable line per event (`[lobby] alice: hi`).
    Text,
}

impl Format {
    /// Parses the `format=` query value.
    pub fn parse(raw: &str) -> Result<Format, ParseError> {
        match raw {
            "json" => Ok(Format::Json),
            "text" => Ok(Format::Text),
            _ => Err(ParseError::BadRequest(format!(
                "format must be json or text, not {raw:?}"
            ))),
        }
    }
}

/// One member of a `presence` list.
#[derive(Clone, Debug, Serialize)]
pub struct Member {
    /// The member's connection id (unique on its node).
    pub id: ClientId,
    /// The member's display name.
    pub name: Name,
    /// The node it is connected to (`--node-name`), with `--redis`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<Arc<str>>,
    /// The user id its token gave it (`sub`), when tokens are on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Arc<str>>,
}

/// One entry of a `rooms` list.
#[derive(Clone, Debug, Serialize)]
pub struct RoomCount {
    /// The room's name.
    pub name: RoomName,
    /// How many members it has now.
    pub members: usize,
}

/// Milliseconds since the Unix epoch, for `ts`.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
