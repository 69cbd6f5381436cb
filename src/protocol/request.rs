//! What comes in: one `Request`, from either dialect — a JSON command or a
//! plain-text line (`/join dev`, or any other line as a message) — with a
//! clear `ParseError` for anything else.

use serde::Deserialize;

use crate::room::{Name, RoomName};

use super::Event;

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
    /// A fresh token for this connection (`/token TOKEN`), handled by the
    /// connection itself (`auth`), never by the hub.
    Refresh(String),
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
    Refresh { token: String },
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
            "token" => return Ok(Request::Refresh(needs_arg("TOKEN")?.to_owned())),
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
        JsonCommand::Refresh { token } => Request::Refresh(token),
    })
}

/// Whether `json` nests `{`/`[` deeper than `max`, strings skipped (one pass,
/// no allocation).
pub(super) fn nesting_exceeds(json: &str, max: usize) -> bool {
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
