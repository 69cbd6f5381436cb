//! An `Event`: built once by the hub, shared as `Arc<Event>` by every
//! member's queue, and encoded for each wire (JSON, text line, WebSocket
//! frame, SSE block) the first time a writer asks, then cached. Also what an
//! event may come to hold in bytes, which history's budget counts.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;

use crate::room::{Name, RoomName};

use super::text::{escape_unprintable, is_unprintable};
use super::{ClientId, Format, Member, RoomCount};

/// What an event says. Serialises to the SPEC's JSON, `type` first.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Body {
    /// Sent to a connection when it opens, and again after `nick`.
    Welcome {
        /// The connection's id.
        id: ClientId,
        /// Its display name.
        name: Name,
        /// The rooms it is in, oldest join first.
        rooms: Vec<RoomName>,
    },
    /// A chat message in a room.
    Message {
        /// The room it was sent to.
        room: RoomName,
        /// Hub-wide event id.
        id: u64,
        /// The sender's display name.
        from: Name,
        /// The sender's connection id (`c7`), or the publishing API (`rest`, `grpc`).
        from_id: Arc<str>,
        /// What was said.
        text: String,
        /// Unix milliseconds.
        ts: u64,
    },
    /// Someone joined a room (a member's own join included).
    Joined {
        /// The room.
        room: RoomName,
        /// Hub-wide event id.
        id: u64,
        /// The member's display name.
        name: Name,
        /// The member's connection id.
        from_id: Arc<str>,
        /// Unix milliseconds.
        ts: u64,
    },
    /// Someone left a room, or their connection ended.
    Left {
        /// The room.
        room: RoomName,
        /// Hub-wide event id.
        id: u64,
        /// The member's display name.
        name: Name,
        /// The member's connection id.
        from_id: Arc<str>,
        /// Unix milliseconds.
        ts: u64,
    },
    /// Who is in a room, in joining order (the answer to `who`).
    Presence {
        /// The room.
        room: RoomName,
        /// Its members.
        members: Vec<Member>,
    },
    /// The rooms that exist (the answer to `rooms`).
    Rooms {
        /// Each room with its member count.
        rooms: Vec<RoomCount>,
    },
    /// The list of commands (the answer to `/help`).
    Help {
        /// The help text.
        text: &'static str,
    },
    /// Something the client sent could not be done; the connection lives on.
    Error {
        /// A stable code: `bad_request`, `bad_room`, `bad_name`, `not_member`,
        /// `too_large`, `rate_limited`, `unsupported`, `unavailable` (a room
        /// past `--max-rooms`).
        code: &'static str,
        /// What went wrong, for people.
        message: String,
    },
}

/// The `/help` text.
pub const HELP: &str =
    "commands: /join ROOM, /leave ROOM, /nick NAME, /who [ROOM], /rooms, /help; \
any other line is a message to the room you joined last";

/// An event, shared by every queue it is fanned out to, with its encodings
/// cached so that each is computed at most once.
pub struct Event {
    body: Body,
    /// When it was made: how long it then waits for a writer is the load
    /// signal writers pace by (`pace`).
    born: Instant,
    pub(super) json: OnceLock<String>,
    pub(super) ws_json: OnceLock<Bytes>,
    pub(super) ws_text: OnceLock<Bytes>,
    pub(super) sse: OnceLock<String>,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.body.fmt(f)
    }
}

impl Event {
    /// Wraps a body; nothing is encoded until a writer asks.
    pub fn new(body: Body) -> Event {
        Event {
            body,
            born: Instant::now(),
            json: OnceLock::new(),
            ws_json: OnceLock::new(),
            ws_text: OnceLock::new(),
            sse: OnceLock::new(),
        }
    }

    /// When it was made.
    pub fn born(&self) -> Instant {
        self.born
    }

    /// An `error` event.
    pub fn error(code: &'static str, message: impl Into<String>) -> Event {
        Event::new(Body::Error {
            code,
            message: message.into(),
        })
    }

    /// What the event says.
    pub fn body(&self) -> &Body {
        &self.body
    }

    /// The hub-wide id of a room event (`message`, `joined`, `left`).
    pub fn id(&self) -> Option<u64> {
        match &self.body {
            Body::Message { id, .. } | Body::Joined { id, .. } | Body::Left { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// The room of a room event (`message`, `joined`, `left`).
    pub fn room(&self) -> Option<&RoomName> {
        match &self.body {
            Body::Message { room, .. } | Body::Joined { room, .. } | Body::Left { room, .. } => {
                Some(room)
            }
            _ => None,
        }
    }

    /// The event's `type` as it appears on the wire.
    pub fn kind(&self) -> &'static str {
        match &self.body {
            Body::Welcome { .. } => "welcome",
            Body::Message { .. } => "message",
            Body::Joined { .. } => "joined",
            Body::Left { .. } => "left",
            Body::Presence { .. } => "presence",
            Body::Rooms { .. } => "rooms",
            Body::Help { .. } => "help",
            Body::Error { .. } => "error",
        }
    }

    /// The event as one JSON object (cached, without spare capacity: serde
    /// grows its buffer by doubling, and a kept event holds its JSON for as
    /// long as it is in history).
    pub fn json(&self) -> &str {
        self.json.get_or_init(|| {
            let mut json = serde_json::to_string(&self.body)
                .expect("Body has only strings, numbers and lists");
            json.shrink_to_fit();
            json
        })
    }

    /// The most memory a room event (`message`, `joined`, `left`) holds once
    /// every encoding a writer may cache is filled: the event itself, its
    /// text, its names, its JSON, both WebSocket frames and its SSE block.
    /// Worked out from the fields' lengths without encoding anything, since
    /// the hub counts every event it keeps by it (`--max-history-bytes`) and
    /// never serialises. Other events are never kept: for them it encodes
    /// them to measure.
    pub fn held_bytes(&self) -> usize {
        let (names, text) = match &self.body {
            Body::Message {
                room,
                from,
                from_id,
                text,
                ..
            } => ([room.as_str(), from.as_str(), from_id], Some(text)),
            Body::Joined {
                room,
                name,
                from_id,
                ..
            }
            | Body::Left {
                room,
                name,
                from_id,
                ..
            } => ([room.as_str(), name.as_str(), from_id], None),
            _ => {
                let json = self.json().len();
                let line = self.text_line().len();
                return EVENT_BYTES
                    + json
                    + (json + MAX_FRAME_HEADER_BYTES)
                    + (line + MAX_FRAME_HEADER_BYTES)
                    + (json + SSE_LINES_BYTES);
            }
        };
        // Each name counted as if the event had its own copy (a REST
        // publish's are). Escaped, a name is at most twice as long: room
        // names need no escape, display names and ids are printable (only
        // `"` and `\` double). Bounded by length, the hub does not read a
        // name another thread just wrote: that costs a cache miss each.
        let [room, from, from_id] = names;
        let names_json = room.len() + 2 * (from.len() + from_id.len());
        let names_owned: usize = names.iter().map(|name| ARC_COUNTS_BYTES + name.len()).sum();
        let text_json = text.map_or(0, |text| json_string_bound(text));
        let json = JSON_SKELETON_BYTES + 2 * MAX_DIGITS + names_json + text_json;
        // A text line shows the same strings, the text escaped its own way.
        let text_line = text.map_or(0, |text| line_string_bound(text));
        let line = LINE_SKELETON_BYTES + names_json + text_line;
        EVENT_BYTES
            + names_owned
            + text.map_or(0, String::capacity)
            + json // `json`
            + (json + MAX_FRAME_HEADER_BYTES) // `ws_json`
            + (line + MAX_FRAME_HEADER_BYTES) // `ws_text`
            + (json + SSE_LINES_BYTES) // `sse`
    }

    /// The event as one readable line, without a newline, with every
    /// unprintable character escaped (not cached: only `format=text`
    /// subscribers ask, through `ws_frame`).
    pub fn text_line(&self) -> String {
        let mut line = String::new();
        let _ = match &self.body {
            Body::Welcome { id, name, rooms } => {
                let rooms: Vec<&str> = rooms.iter().map(RoomName::as_str).collect();
                write!(line, "* welcome {name} ({id}); rooms: {}", rooms.join(", "))
            }
            Body::Message {
                room, from, text, ..
            } => write!(line, "[{room}] {from}: {text}"),
            Body::Joined { room, name, .. } => write!(line, "[{room}] * {name} joined"),
            Body::Left { room, name, .. } => write!(line, "[{room}] * {name} left"),
            Body::Presence { room, members } => {
                let names: Vec<String> = members
                    .iter()
                    .map(|m| format!("{} ({})", m.name, m.id))
                    .collect();
                write!(line, "[{room}] here: {}", names.join(", "))
            }
            Body::Rooms { rooms } if rooms.is_empty() => write!(line, "* no rooms yet"),
            Body::Rooms { rooms } => {
                let rooms: Vec<String> = rooms
                    .iter()
                    .map(|r| format!("{} ({})", r.name, r.members))
                    .collect();
                write!(line, "* rooms: {}", rooms.join(", "))
            }
            Body::Help { text } => write!(line, "* {text}"),
            Body::Error { code, message } => write!(line, "! {code}: {message}"),
        };
        // The whole line, not only the message: names are checked, but an
        // error may quote what a peer sent, and fields added later are
        // covered without a thought.
        match escape_unprintable(&line) {
            Cow::Borrowed(_) => line,
            Cow::Owned(escaped) => escaped,
        }
    }

    /// The event as a complete WebSocket text frame in `format` (cached): every
    /// member's writer sends these same bytes, because server frames are unmasked.
    /// Borrowed: a writer holding the event hands these bytes to `writev`.
    pub fn ws_frame(&self, format: Format) -> &Bytes {
        let cell = match format {
            Format::Json => &self.ws_json,
            Format::Text => &self.ws_text,
        };
        cell.get_or_init(|| match format {
            Format::Json => text_frame(self.json().to_owned()),
            Format::Text => text_frame(self.text_line()),
        })
    }

    /// The event as a Server-Sent Events block (cached): `id:` (room events
    /// only), `event:` and `data:` lines and the blank line that ends it.
    pub fn sse_block(&self) -> &[u8] {
        self.sse
            .get_or_init(|| {
                let mut block = String::with_capacity(self.json().len() + SSE_LINES_BYTES);
                if let Some(id) = self.id() {
                    let _ = writeln!(block, "id: {id}");
                }
                let _ = write!(block, "event: {}\ndata: {}\n\n", self.kind(), self.json());
                block
            })
            .as_bytes()
    }
}

/// An `Event` behind its `Arc`: the struct and the two reference counts.
pub(super) const EVENT_BYTES: usize = std::mem::size_of::<Event>() + ARC_COUNTS_BYTES;
/// The reference counts at the head of every `Arc` allocation.
const ARC_COUNTS_BYTES: usize = 2 * std::mem::size_of::<usize>();
/// A room event's JSON without its strings and numbers: keys, quotes,
/// punctuation (73 bytes for the longest, `message`).
const JSON_SKELETON_BYTES: usize = 80;
/// A room event's text line without its strings (`[] : `, `[] *  joined`).
const LINE_SKELETON_BYTES: usize = 16;
/// The most digits a `u64` (an id, a `ts`) takes.
const MAX_DIGITS: usize = 20;
/// A server's WebSocket frame header: 2 bytes, and 8 more for a long payload.
const MAX_FRAME_HEADER_BYTES: usize = 10;
/// An SSE block's lines around the JSON: `id: <20 digits>`, `event: message`,
/// `data: ` and the newlines.
const SSE_LINES_BYTES: usize = 48;

/// At least the length of `s` as a JSON string's contents: `"` and `\`
/// take two bytes, a control character six (`\u001b`; serde writes `\n`
/// and its like in two).
fn json_string_bound(s: &str) -> usize {
    // Branch-free, so that it runs many bytes at a time: the hub calls it
    // for the text of every message it keeps.
    let escapes: usize = s
        .bytes()
        .map(|b| usize::from(b < 0x20) * 5 + usize::from(b == b'"' || b == b'\\'))
        .sum();
    s.len() + escapes
}

/// At least the length of `text` once `escape_unprintable` has escaped it,
/// counted without escaping: a backslash may double, `\n` and its like take
/// two bytes, another ASCII control four (`\x1b`), any other unprintable
/// character `\u{H..}`. It follows `escape_unprintable`'s rules; the test
/// `held_bytes_is_at_least_what_an_event_holds_with_every_encoding_cached`
/// holds the two together.
fn line_string_bound(text: &str) -> usize {
    let ascii: usize = text
        .bytes()
        .map(|b| usize::from(b < 0x20 || b == 0x7f) * 3 + usize::from(b == b'\\'))
        .sum();
    let other: usize = if text.is_ascii() {
        0 // the common case, without decoding a character
    } else {
        text.chars()
            .filter(|&c| !c.is_ascii() && is_unprintable(c))
            .map(|c| {
                let hex_digits = (u32::from(c).ilog2() / 4 + 1) as usize;
                "\\u{}".len() + hex_digits - c.len_utf8()
            })
            .sum()
    };
    text.len() + ascii + other
}

/// Encodes `text` as one final, unmasked WebSocket text frame.
pub fn text_frame(text: String) -> Bytes {
    encode_frame(Frame::message(text, OpCode::Data(Data::Text), true))
}

/// The room an HTTP/1.1 chunk's size line needs: eight hex digits cover 4 GiB.
pub const CHUNK_SIZE_LINE_ROOM: usize = 10;

/// Writes the size line of an HTTP/1.1 chunk of `len` bytes, `{len:x}\r\n`,
/// into `room`, and returns it (SSE bodies are chunked).
pub fn chunk_size_line(len: usize, room: &mut [u8; CHUNK_SIZE_LINE_ROOM]) -> &[u8] {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut room[..]);
    write!(cursor, "{len:x}\r\n").expect("a size line fits its room");
    let end = cursor.position() as usize;
    &room[..end]
}

/// Encodes any frame to its wire bytes.
pub fn encode_frame(frame: Frame) -> Bytes {
    let mut wire = Vec::with_capacity(frame.len());
    frame
        .format(&mut wire)
        .expect("formatting into a Vec cannot fail");
    Bytes::from(wire)
}
