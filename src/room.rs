//! Names checked once at the edge, `RoomName` and `Name`; and one `Room`.
//!
//! Everything a peer sends is a `&str` until it passes through one of these
//! constructors; past the edge a `RoomName` is known to be valid, so the hub and
//! the codecs never check again. Both are cheap to clone (`Arc<str>`), because a
//! room name is copied into every event of that room.
//!
//! A `Room` is its members and its history, with what that history may hold
//! in bytes; the ceilings on all rooms together live in `rooms`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::protocol::{is_unprintable, ClientId, Event, ParseError};
use crate::queue::{Queue, RunPosition};

/// The longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 64;
/// The longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// A room name: 1–64 characters of `A-Z a-z 0-9 _ - .`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RoomName(Arc<str>);

impl RoomName {
    /// Checks `raw` and wraps it, or says why it is not a room name.
    pub fn parse(raw: &str) -> Result<RoomName, ParseError> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_ROOM_CHARS
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if ok {
            Ok(RoomName(raw.into()))
        } else {
            Err(ParseError::BadRoom)
        }
    }

    /// The room name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A display name: 1–32 printable characters. Names need not be unique.
///
/// "Printable" is checked, not assumed: a name may hold no control character
/// (ESC, BEL, DEL, C1), no bidi control (U+202E would turn `alice` and the
/// message after it around) and no line separator (`protocol::is_unprintable`);
/// letters of every script, spaces inside and emoji are fine.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Name(Arc<str>);

impl Name {
    /// Checks `raw` and wraps it, or says why it is not a name.
    pub fn parse(raw: &str) -> Result<Name, ParseError> {
        let chars = raw.chars().count();
        let ok = (1..=MAX_NAME_CHARS).contains(&chars) && !raw.chars().any(is_unprintable);
        if ok && !raw.trim().is_empty() {
            Ok(Name(raw.into()))
        } else {
            Err(ParseError::BadName)
        }
    }

    /// The default name of connection number `n`: `guest-<n>`.
    pub fn guest(n: u64) -> Name {
        Name(format!("guest-{n}").into())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// A room: who is in it and what was said lately. Plain data, owned by the
/// hub through `Rooms`, which keeps the hub-wide accounts of every room's
/// history: only `Rooms` changes a room's history or its `idle` time.
pub struct Room {
    /// Members in joining order, each with its queue, so fan-out needs no lookup.
    pub members: Vec<RoomMember>,
    /// The last `--history` events at most, oldest first; ids increase along it.
    history: VecDeque<Kept>,
    /// What the kept events may hold, in bytes (`Event::held_bytes`).
    events_bytes: usize,
    /// While the room has no members (see `Rooms`).
    pub(crate) idle: Option<Idle>,
    /// While it keeps history: the id it is filed under in `Rooms`' order of
    /// oldest events (its oldest event's, or older).
    pub(crate) filed_oldest: Option<u64>,
}

/// One kept event and the bytes it is counted for.
struct Kept {
    event: Arc<Event>,
    bytes: usize,
}

/// When a room without members was last used, and when it was filed under
/// in `Rooms`' expiry order (its last use then, or earlier).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Idle {
    pub(crate) since: Instant,
    pub(crate) filed: Instant,
}

/// One member's seat in a room.
pub struct RoomMember {
    /// The member.
    pub client: ClientId,
    /// A clone of the hub's end of the member's queue (one per room it is in).
    pub queue: Queue,
    /// Where in the hub's runs it joined.
    pub joined_at: RunPosition,
}

/// A history shorter than a quarter of its allocation gives half of it back
/// (a room whose history was evicted must not keep room for `--history`
/// events), unless it is this small anyway.
const SHRINK_ABOVE_SLOTS: usize = 16;

impl Room {
    /// An empty room.
    pub fn new() -> Room {
        Room {
            members: Vec::new(),
            history: VecDeque::new(),
            events_bytes: 0,
            idle: None,
            filed_oldest: None,
        }
    }

    /// Whether `client` is a member.
    pub fn has(&self, client: ClientId) -> bool {
        self.members.iter().any(|m| m.client == client)
    }

    /// Removes `client`; says whether it was there.
    pub fn remove(&mut self, client: ClientId) -> bool {
        let before = self.members.len();
        self.members.retain(|m| m.client != client);
        self.members.len() != before
    }

    /// Keeps `event` for replay, dropping the oldest past `cap` (at least 1)
    /// events. Called by `Rooms` only, which counts the change in
    /// `history_bytes`.
    pub(crate) fn record(&mut self, event: Arc<Event>, cap: usize) {
        if self.history.len() >= cap {
            self.drop_oldest();
        }
        let bytes = event.held_bytes();
        self.events_bytes += bytes;
        self.history.push_back(Kept { event, bytes });
    }

    /// Drops the oldest kept event, if any. Called by `Rooms` only.
    pub(crate) fn drop_oldest(&mut self) {
        let Some(oldest) = self.history.pop_front() else {
            return;
        };
        self.events_bytes -= oldest.bytes;
        let slots = self.history.capacity();
        if slots > SHRINK_ABOVE_SLOTS && self.history.len() < slots / 4 {
            self.history.shrink_to(slots / 2);
        }
    }

    /// The kept events with an id above `since`, oldest first.
    pub fn since(&self, since: u64) -> impl Iterator<Item = &Arc<Event>> + '_ {
        let start = self
            .history
            .partition_point(|kept| kept.event.id().unwrap_or(0) <= since);
        self.history.range(start..).map(|kept| &kept.event)
    }

    /// The newest `limit` kept events, oldest first.
    pub fn newest(&self, limit: usize) -> impl Iterator<Item = &Arc<Event>> + '_ {
        let skip = self.history.len().saturating_sub(limit);
        self.history.range(skip..).map(|kept| &kept.event)
    }

    /// The id of the oldest kept event, if any.
    pub fn oldest_id(&self) -> Option<u64> {
        self.history.front().and_then(|kept| kept.event.id())
    }

    /// The id of the newest kept event, or 0.
    pub fn last_id(&self) -> u64 {
        self.history
            .back()
            .and_then(|kept| kept.event.id())
            .unwrap_or(0)
    }

    /// How many events are kept.
    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// What the history may hold, in bytes: each kept event once every
    /// encoding is cached (`Event::held_bytes`), and every slot of the
    /// queue that keeps them, in use or not.
    pub fn history_bytes(&self) -> usize {
        self.events_bytes + self.history.capacity() * std::mem::size_of::<Kept>()
    }
}

impl Default for Room {
    fn default() -> Room {
        Room::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_follow_the_spec() {
        for good in ["lobby", "a", "dev.ops_2-x", &"r".repeat(64)] {
            assert!(RoomName::parse(good).is_ok(), "{good} should be a room");
        }
        for bad in ["", "has space", "émoji", "a/b", "#dev", &"r".repeat(65)] {
            assert!(RoomName::parse(bad).is_err(), "{bad} should not be a room");
        }
    }

    #[test]
    fn names_are_one_to_32_printable_characters() {
        for good in ["alice", "Zoë", "a b", &"é".repeat(32), "名前", "👩‍💻 dev"] {
            assert!(Name::parse(good).is_ok(), "{good} should be a name");
        }
        for bad in [
            "",
            "   ",
            "tab\there",
            "nl\n",
            &"x".repeat(33),
            "esc\x1b[2J",
            "del\x7f",
            "csi\u{9b}",
            "\u{202e}evil",
            "\u{2066}isolated\u{2069}",
            "mark\u{200f}",
            "arabic\u{61c}mark",
            "line\u{2028}sep",
            "para\u{2029}sep",
        ] {
            assert!(Name::parse(bad).is_err(), "{bad:?} should not be a name");
        }
    }
}
