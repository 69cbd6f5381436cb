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

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;

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
    /// The member's connection id.
    pub id: ClientId,
    /// The member's display name.
    pub name: Name,
}

/// One entry of a `rooms` list.
#[derive(Clone, Debug, Serialize)]
pub struct RoomCount {
    /// The room's name.
    pub name: RoomName,
    /// How many members it has now.
    pub members: usize,
}

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
    json: OnceLock<String>,
    ws_json: OnceLock<Bytes>,
    ws_text: OnceLock<Bytes>,
    sse: OnceLock<String>,
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
            json: OnceLock::new(),
            ws_json: OnceLock::new(),
            ws_text: OnceLock::new(),
            sse: OnceLock::new(),
        }
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

/// Whether `c` acts rather than shows itself, so text mode escapes it and a
/// name may not contain it: C0 controls (ESC, BEL, CR, LF, TAB...), DEL and
/// C1 controls (U+0080-U+009F, U+009B is a CSI to some terminals); bidi
/// controls, which reorder what a reader sees (U+202A-U+202E embeddings and
/// overrides, U+2066-U+2069 isolates, U+200E/U+200F and U+061C marks); and the
/// line and paragraph separators U+2028/U+2029, which break lines.
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// `text` with every unprintable character (`is_unprintable`) written as an
/// escape: `\n`, `\r`, `\t`; `\xHH` for the other ASCII controls (ESC is
/// `\x1b`, DEL `\x7f`); `\u{H..}` for the rest (`\u{9b}`, `\u{202e}`).
///
/// A reader (or a program) can always tell an escape from text that looks
/// like one: a backslash the peer sent is doubled when what follows it would
/// otherwise read as an escape (`\`, `n`, `r`, `t`, `x`, `u`, or an escaped
/// character). So the rule to read a line back is: `\\` is one backslash,
/// `\n \r \t \xHH \u{H..}` are the characters they name, and a backslash
/// before anything else is itself. A lone backslash (`¯\_(ツ)_/¯`, `C:\Temp`)
/// stays single, because people read these lines.
pub fn escape_unprintable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c == '\\' || is_unprintable(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let looks_escaped = chars.peek().is_some_and(|&next| {
                    matches!(next, '\\' | 'n' | 'r' | 't' | 'x' | 'u') || is_unprintable(next)
                });
                out.push_str(if looks_escaped { r"\\" } else { r"\" });
            }
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            '\t' => out.push_str(r"\t"),
            c if is_unprintable(c) => {
                let code = u32::from(c);
                // Writing into a String cannot fail.
                let _ = if c.is_ascii() {
                    write!(out, r"\x{code:02x}")
                } else {
                    write!(out, r"\u{{{code:x}}}")
                };
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// An `Event` behind its `Arc`: the struct and the two reference counts.
const EVENT_BYTES: usize = std::mem::size_of::<Event>() + ARC_COUNTS_BYTES;
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

/// Encodes any frame to its wire bytes.
pub fn encode_frame(frame: Frame) -> Bytes {
    let mut wire = Vec::with_capacity(frame.len());
    frame
        .format(&mut wire)
        .expect("formatting into a Vec cannot fail");
    Bytes::from(wire)
}

/// Milliseconds since the Unix epoch, for `ts`.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What a client asks of the hub, whichever dialect it used.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// Send `text` to `room`, or to the room joined last.
    Say {
        /// The target room, if named.
        room: Option<RoomName>,
        /// The message.
        text: String,
    },
    /// Join a room.
    Join(RoomName),
    /// Leave a room.
    Leave(RoomName),
    /// Change the display name.
    Nick(Name),
    /// Ask who is in a room (or the room joined last).
    Who(Option<RoomName>),
    /// Ask which rooms exist.
    Rooms,
    /// Ask for the list of commands.
    Help,
}

/// Why a client's input was refused. Each becomes an `error` event with
/// `code()`; the connection lives on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// Malformed JSON, an unknown command, a missing field.
    #[error("{0}")]
    BadRequest(String),
    /// A room name outside the allowed alphabet or length.
    #[error("room names are 1-64 characters of A-Z a-z 0-9 _ - .")]
    BadRoom,
    /// A display name outside the allowed length, or with an unprintable
    /// character (`is_unprintable`).
    #[error("names are 1-32 printable characters (no control characters, bidi controls or line separators)")]
    BadName,
    /// A message over `--max-message-size`.
    #[error("message is {len} bytes; the limit is {limit}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Over the per-connection `--rate-limit`.
    #[error("slow down: at most {per_second} messages per second")]
    RateLimited {
        /// The limit.
        per_second: u32,
    },
    /// Something this endpoint does not do (a binary frame on `/ws`).
    #[error("{0}")]
    Unsupported(&'static str),
}

impl ParseError {
    /// The SPEC's error code.
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::BadRequest(_) => "bad_request",
            ParseError::BadRoom => "bad_room",
            ParseError::BadName => "bad_name",
            ParseError::TooLarge { .. } => "too_large",
            ParseError::RateLimited { .. } => "rate_limited",
            ParseError::Unsupported(_) => "unsupported",
        }
    }

    /// The `error` event that tells the client.
    pub fn to_event(&self) -> Event {
        Event::error(self.code(), self.to_string())
    }
}

/// A JSON command as it arrives, before its names are checked.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum JsonCommand {
    Message { room: Option<String>, text: String },
    Join { room: String },
    Leave { room: String },
    Nick { name: String },
    Who { room: Option<String> },
    Rooms {},
    Help {},
}

/// Parses one inbound text frame: a JSON command if it starts with `{`, a slash
/// command if it starts with `/` and names one, else a message.
pub fn parse_line(line: &str) -> Result<Request, ParseError> {
    let trimmed = line.trim();
    if trimmed.starts_with('{') {
        return parse_json(trimmed);
    }
    if let Some(rest) = trimmed.strip_prefix('/') {
        let (command, arg) = match rest.split_once(char::is_whitespace) {
            Some((command, arg)) => (command, arg.trim()),
            None => (rest, ""),
        };
        let needs_arg = |what: &str| {
            if arg.is_empty() {
                Err(ParseError::BadRequest(format!("usage: /{command} {what}")))
            } else {
                Ok(arg)
            }
        };
        match command {
            "join" => return Ok(Request::Join(RoomName::parse(needs_arg("ROOM")?)?)),
            "leave" => return Ok(Request::Leave(RoomName::parse(needs_arg("ROOM")?)?)),
            "nick" => return Ok(Request::Nick(Name::parse(needs_arg("NAME")?)?)),
            "who" if arg.is_empty() => return Ok(Request::Who(None)),
            "who" => return Ok(Request::Who(Some(RoomName::parse(arg)?))),
            "rooms" => return Ok(Request::Rooms),
            "help" => return Ok(Request::Help),
            _ => {} // any other line, slashes included, is a message (SPEC)
        }
    }
    // A terminal sends the line's end too; it is not part of the message.
    say(None, line.trim_end_matches(['\r', '\n']))
}

/// Commands are flat objects; anything nested deeper than this is refused
/// before serde sees it, because parsing deep nesting recurses, and reader
/// threads have small stacks.
const MAX_JSON_DEPTH: usize = 16;

fn parse_json(json: &str) -> Result<Request, ParseError> {
    if nesting_exceeds(json, MAX_JSON_DEPTH) {
        return Err(ParseError::BadRequest(format!(
            "JSON nested deeper than {MAX_JSON_DEPTH} levels; commands are flat objects"
        )));
    }
    let command: JsonCommand = serde_json::from_str(json).map_err(|e| {
        ParseError::BadRequest(format!("not a valid command: {e}; /help lists them"))
    })?;
    let room = |raw: Option<String>| raw.as_deref().map(RoomName::parse).transpose();
    Ok(match command {
        JsonCommand::Message { room: r, text } => return say(room(r)?, &text),
        JsonCommand::Join { room: r } => Request::Join(RoomName::parse(&r)?),
        JsonCommand::Leave { room: r } => Request::Leave(RoomName::parse(&r)?),
        JsonCommand::Nick { name } => Request::Nick(Name::parse(&name)?),
        JsonCommand::Who { room: r } => Request::Who(room(r)?),
        JsonCommand::Rooms {} => Request::Rooms,
        JsonCommand::Help {} => Request::Help,
    })
}

/// Whether `json` nests `{`/`[` deeper than `max`, strings skipped (one pass,
/// no allocation).
fn nesting_exceeds(json: &str, max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for byte in json.bytes() {
        match (in_string, escaped, byte) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'{' | b'[') => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            (false, _, b'}' | b']') => depth = depth.saturating_sub(1),
            (false, _, _) => {}
        }
    }
    false
}

fn say(room: Option<RoomName>, text: &str) -> Result<Request, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::BadRequest("message text is empty".into()));
    }
    Ok(Request::Say {
        room,
        text: text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).expect("test room names are valid")
    }

    #[test]
    fn slash_commands_and_plain_lines() {
        assert_eq!(parse_line("/join dev"), Ok(Request::Join(room("dev"))));
        assert_eq!(parse_line("/leave  dev "), Ok(Request::Leave(room("dev"))));
        assert_eq!(parse_line("/who"), Ok(Request::Who(None)));
        assert_eq!(parse_line("/rooms"), Ok(Request::Rooms));
        assert_eq!(parse_line("/help"), Ok(Request::Help));
        assert_eq!(
            parse_line("hello there"),
            Ok(Request::Say {
                room: None,
                text: "hello there".into()
            })
        );
        assert_eq!(
            parse_line("/shrug ok"),
            Ok(Request::Say {
                room: None,
                text: "/shrug ok".into()
            })
        );
        assert_eq!(parse_line("/join bad room").unwrap_err().code(), "bad_room");
        assert_eq!(parse_line("/join").unwrap_err().code(), "bad_request");
        assert_eq!(parse_line("/nick \u{7}").unwrap_err().code(), "bad_name");
        assert_eq!(parse_line("   ").unwrap_err().code(), "bad_request");
        assert_eq!(
            parse_line("typed at a terminal\r\n"),
            Ok(Request::Say {
                room: None,
                text: "typed at a terminal".into()
            })
        );
    }

    #[test]
    fn json_commands() {
        assert_eq!(
            parse_line(r#"{"type":"message","room":"dev","text":"hi"}"#),
            Ok(Request::Say {
                room: Some(room("dev")),
                text: "hi".into()
            })
        );
        assert_eq!(parse_line(r#"{"type":"rooms"}"#), Ok(Request::Rooms));
        assert_eq!(parse_line(r#"{"type":"who"}"#), Ok(Request::Who(None)));
        assert_eq!(
            parse_line(r#"{"type":"join","room":"a b"}"#)
                .unwrap_err()
                .code(),
            "bad_room"
        );
        assert_eq!(
            parse_line(r#"{"type":"dance"}"#).unwrap_err().code(),
            "bad_request"
        );
        assert_eq!(
            parse_line(r#"{"type":"message""#).unwrap_err().code(),
            "bad_request"
        );
        let deep = "{\"a\":".repeat(10_000);
        assert_eq!(parse_line(&deep).unwrap_err().code(), "bad_request");
        assert!(nesting_exceeds(r#"{"a":[[[[]]]]}"#, 4));
        assert!(!nesting_exceeds(r#"{"a":"[[[[[[[[\"{{{{{{"}"#, 1));
    }

    /// What an event holds with every encoding cached, measured.
    fn measured_bytes(event: &Event) -> usize {
        let _ = (event.ws_frame(Format::Json), event.ws_frame(Format::Text));
        let _ = event.sse_block();
        let text = match event.body() {
            Body::Message { text, .. } => text.capacity(),
            _ => 0,
        };
        let cached = event.json.get().expect("cached").capacity()
            + event.ws_json.get().expect("cached").len()
            + event.ws_text.get().expect("cached").len()
            + event.sse.get().expect("cached").capacity();
        EVENT_BYTES + text + cached
    }

    fn assert_holds_at_least_what_it_measures(event: &Event, text: &str) {
        let (held, measured) = (event.held_bytes(), measured_bytes(event));
        assert!(
            held >= measured,
            "{held} < {measured} for {:?}…",
            text.chars().take(24).collect::<String>()
        );
    }

    #[test]
    fn held_bytes_is_at_least_what_an_event_holds_with_every_encoding_cached() {
        let texts = [
            "hi".to_owned(),
            "x".repeat(70_000),
            "quotes \" and \\ backslashes \"\"".to_owned(),
            "lines\r\nand\ttabs\n".repeat(100),
            "\u{1b}[2J\u{1b}]0;title\u{7} and \u{0}".repeat(50),
            "Zoë ünïcödé 🎉 \u{202e}reversed\u{2028}".repeat(100),
            "del\u{7f} csi\u{9b} \u{61c}\u{2066}\\x1b \\\\ \\u{41}".repeat(100),
        ];
        for text in texts {
            for id in [1, u64::MAX] {
                let message = Event::new(Body::Message {
                    room: room(&"r".repeat(64)),
                    id,
                    from: Name::parse("\"quoted\" \\ name").expect("valid"),
                    from_id: "c18446744073709551615".into(),
                    text: text.clone(),
                    ts: u64::MAX,
                });
                assert_holds_at_least_what_it_measures(&message, &text);
            }
            let plain = Event::new(Body::Message {
                room: room("lobby"),
                id: 42,
                from: Name::parse("alice").expect("valid"),
                from_id: "c3".into(),
                text: text.clone(),
                ts: 1764000000000,
            });
            assert_holds_at_least_what_it_measures(&plain, &text);
        }
        let plain = Event::new(Body::Message {
            room: room("lobby"),
            id: 42,
            from: Name::parse("alice").expect("valid"),
            from_id: "c3".into(),
            text: "x".repeat(1000),
            ts: 1764000000000,
        });
        let over = plain.held_bytes() - measured_bytes(&plain);
        assert!(
            over < 400,
            "plain text is counted closely: {over} bytes over"
        );
        for body in [
            Body::Joined {
                room: room("lobby"),
                id: u64::MAX,
                name: Name::parse("\\\\\\").expect("valid"),
                from_id: "c1".into(),
                ts: u64::MAX,
            },
            Body::Left {
                room: room("lobby"),
                id: 7,
                name: Name::parse("bob").expect("valid"),
                from_id: "c1".into(),
                ts: 0,
            },
        ] {
            let event = Event::new(body);
            assert!(event.held_bytes() >= measured_bytes(&event));
        }
    }

    #[test]
    fn events_encode_as_the_spec_shows() {
        let event = Event::new(Body::Message {
            room: room("lobby"),
            id: 42,
            from: Name::parse("alice").expect("valid"),
            from_id: "c3".into(),
            text: "hi".into(),
            ts: 1764000000000,
        });
        assert_eq!(
            event.json(),
            r#"{"type":"message","room":"lobby","id":42,"from":"alice","from_id":"c3","text":"hi","ts":1764000000000}"#
        );
        assert_eq!(event.text_line(), "[lobby] alice: hi");
        let two_lines = Event::new(Body::Message {
            room: room("lobby"),
            id: 43,
            from: Name::parse("alice").expect("valid"),
            from_id: "c3".into(),
            text: "one\ntwo".into(),
            ts: 0,
        });
        assert_eq!(two_lines.text_line(), "[lobby] alice: one\\ntwo");
        assert!(event
            .sse_block()
            .starts_with(b"id: 42\nevent: message\ndata: {"));
        assert!(event.sse_block().ends_with(b"}\n\n"));
        let frame = event.ws_frame(Format::Json);
        assert_eq!(frame[0], 0x81, "FIN + text opcode");
        assert_eq!(&frame[2..], event.json().as_bytes());
        let error = ParseError::BadRoom.to_event();
        assert_eq!(
            error.text_line(),
            "! bad_room: room names are 1-64 characters of A-Z a-z 0-9 _ - ."
        );
    }

    /// Reads an escaped line back, by the rule `escape_unprintable` documents.
    fn unescape(line: &str) -> String {
        let hex = |digits: &str| {
            char::from_u32(u32::from_str_radix(digits, 16).expect("hex")).expect("a char")
        };
        let mut out = String::new();
        let mut rest = line;
        while let Some(at) = rest.find('\\') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (c, used) = match after.chars().next() {
                Some('\\') => ('\\', 1),
                Some('n') => ('\n', 1),
                Some('r') => ('\r', 1),
                Some('t') => ('\t', 1),
                Some('x') => (hex(&after[1..3]), 3),
                Some('u') => {
                    let end = after.find('}').expect("a \\u{..} is closed");
                    (hex(&after[2..end]), end + 1)
                }
                _ => ('\\', 0), // a backslash before anything else is itself
            };
            out.push(c);
            rest = &after[used..];
        }
        out.push_str(rest);
        out
    }

    #[test]
    fn text_mode_escapes_every_unprintable_character_visibly() {
        let escaped = |text: &str| escape_unprintable(text).into_owned();
        assert_eq!(
            escaped("\x1b[2J\x1b]0;title\x07"),
            r"\x1b[2J\x1b]0;title\x07"
        );
        assert_eq!(escaped("a\r\nb\tc\0d\x7f"), r"a\r\nb\tc\x00d\x7f");
        assert_eq!(escaped("csi\u{9b}31m nel\u{85}"), r"csi\u{9b}31m nel\u{85}");
        assert_eq!(
            escaped("\u{202e}olleh \u{2066}\u{2069} \u{200e}\u{200f}\u{61c}"),
            r"\u{202e}olleh \u{2066}\u{2069} \u{200e}\u{200f}\u{61c}"
        );
        assert_eq!(escaped("one\u{2028}two\u{2029}"), r"one\u{2028}two\u{2029}");
        // What people type stays as typed: letters of any script, emoji with
        // their joiners, a lone backslash.
        for plain in ["Zoë ﺱ 名前", "👩‍💻", r"¯\_(ツ)_/¯", r"C:\Temp", "tail\\"] {
            assert_eq!(escaped(plain), plain);
        }
    }

    #[test]
    fn an_escape_cannot_be_spoofed_with_backslashes_of_ones_own() {
        // Text that looks like an escape is told apart from the real thing.
        assert_eq!(escaped_line(r"\x1b"), r"\\x1b");
        assert_eq!(escaped_line("\x1b"), r"\x1b");
        assert_eq!(escaped_line(r"lit\n"), r"lit\\n");
        assert_eq!(escaped_line("\\\x1b"), r"\\\x1b");
        assert_eq!(escaped_line(r"\\a"), r"\\\a");
        // And every line reads back as exactly what was sent.
        for text in [
            r"\x1b",
            "\x1b",
            "\\\x1b",
            "\\\\\u{202e}",
            r"\u{202e}",
            r"\\\n",
            "\\\n\\",
            "\\",
            r"\q\",
            "mixed \\ \\\\ \\x \\u{41} \u{2028}\\\u{9b}",
        ] {
            let line = escaped_line(text);
            assert!(!line.chars().any(is_unprintable), "{line:?}");
            assert_eq!(unescape(&line), text, "{text:?} was written {line:?}");
        }
    }

    fn escaped_line(text: &str) -> String {
        escape_unprintable(text).into_owned()
    }

    #[test]
    fn a_whole_text_line_is_escaped_and_json_stays_json() {
        let event = Event::new(Body::Message {
            room: room("lobby"),
            id: 1,
            from: Name::parse("alice").expect("valid"),
            from_id: "c3".into(),
            text: "\x1b[2J\u{202e}x\u{2028}y\x7f".into(),
            ts: 0,
        });
        assert_eq!(
            event.text_line(),
            r"[lobby] alice: \x1b[2J\u{202e}x\u{2028}y\x7f"
        );
        let frame = event.ws_frame(Format::Text);
        assert!(!frame[2..].iter().any(|&b| b < 0x20 || b == 0x7f));
        // serde escapes the C0 controls; the rest is valid JSON as it is,
        // and reads back as the text that was sent.
        assert!(
            event.json().contains(r#""text":"\u001b[2J"#),
            "{}",
            event.json()
        );
        let back: serde_json::Value = serde_json::from_str(event.json()).expect("valid JSON");
        assert_eq!(back["text"], "\x1b[2J\u{202e}x\u{2028}y\x7f");
        // An error quoting what a peer sent is escaped as well.
        let quoted = ParseError::BadRequest("unknown variant `\x1b]0;t\x07`".into()).to_event();
        assert_eq!(
            quoted.text_line(),
            r"! bad_request: unknown variant `\x1b]0;t\x07`"
        );
    }
}
