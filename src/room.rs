//! Names checked once at the edge: `RoomName` and `Name`.
//!
//! Everything a peer sends is a `&str` until it passes through one of these
//! constructors; past the edge a `RoomName` is known to be valid, so the hub and
//! the codecs never check again. Both are cheap to clone (`Arc<str>`), because a
//! room name is copied into every event of that room.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use crossbeam_channel::Sender;
use serde::Serialize;

use crate::hub::{Hangup, Outbound, RunPosition};
use crate::protocol::{is_unprintable, ClientId, Event, ParseError};

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

/// A room: who is in it and what was said lately. Plain data, owned by the hub.
pub struct Room {
    /// Members in joining order, each with its queue, so fan-out needs no lookup.
    pub members: Vec<RoomMember>,
    /// The last `--history` events, oldest first; ids increase along it.
    pub history: VecDeque<Arc<Event>>,
}

/// One member's seat in a room.
pub struct RoomMember {
    /// The member.
    pub client: ClientId,
    /// A clone of the member's queue sender (one per room it is in).
    pub queue: Sender<Outbound>,
    /// The member's hangup, to nudge its writer when the queue fills.
    pub hangup: Arc<Hangup>,
    /// Where in the hub's runs it joined.
    pub joined_at: RunPosition,
}

impl Room {
    /// An empty room.
    pub fn new() -> Room {
        Room {
            members: Vec::new(),
            history: VecDeque::new(),
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

    /// Keeps `event` for replay, dropping the oldest past `cap` events.
    pub fn record(&mut self, event: Arc<Event>, cap: usize) {
        if cap == 0 {
            return;
        }
        if self.history.len() == cap {
            self.history.pop_front();
        }
        self.history.push_back(event);
    }

    /// The kept events with an id above `since`, oldest first.
    pub fn since(&self, since: u64) -> impl Iterator<Item = &Arc<Event>> + '_ {
        let start = self
            .history
            .partition_point(|e| e.id().unwrap_or(0) <= since);
        self.history.range(start..)
    }

    /// The id of the newest kept event, or 0.
    pub fn last_id(&self) -> u64 {
        self.history.back().and_then(|e| e.id()).unwrap_or(0)
    }

    /// A room exists while it has members or history.
    pub fn is_gone(&self) -> bool {
        self.members.is_empty() && self.history.is_empty()
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
