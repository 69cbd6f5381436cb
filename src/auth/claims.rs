//! What a token may say (the SPEC's claims table), and the room patterns of
//! `rooms` and `publish`: an exact room name, or a prefix ending in `*`
//! (`team-*`; `*` alone is every room).
//!
//! `aud`, `iss`, `exp` and `nbf` are checked by `verify` before these are
//! read; a claim of the wrong shape makes the whole token invalid rather than
//! quietly granting less, so a backend's mistake shows at once.

use serde::{Deserialize, Serialize};

use crate::room::RoomName;

/// The claims switchboard reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id; presence lists it as `user`.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// The display name, if the token sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether `nick` may change the name.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fixed_name: bool,
    /// Rooms it may join and read.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// Rooms it may send to; absent: the same as `rooms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<String>>,
}

/// One entry of `rooms` or `publish`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomPattern {
    /// This room only.
    Exact(RoomName),
    /// Every room whose name starts with this (`""` for `*`: every room).
    Prefix(String),
}

/// A pattern that is neither a room name nor a prefix ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither a room name nor a prefix ending in *")]
pub struct BadPattern(pub String);

impl RoomPattern {
    /// Reads `team-*`, `*` or `lobby`.
    pub fn parse(raw: &str) -> Result<RoomPattern, BadPattern> {
        let bad = || BadPattern(raw.to_owned());
        match raw.strip_suffix('*') {
            Some("") => Ok(RoomPattern::Prefix(String::new())),
            // The prefix must itself be the start of a valid room name.
            Some(prefix) => RoomName::parse(prefix)
                .map(|_| RoomPattern::Prefix(prefix.to_owned()))
                .map_err(|_| bad()),
            None => RoomName::parse(raw)
                .map(RoomPattern::Exact)
                .map_err(|_| bad()),
        }
    }

    /// Whether `room` matches.
    pub fn matches(&self, room: &RoomName) -> bool {
        match self {
            RoomPattern::Exact(exact) => exact == room,
            RoomPattern::Prefix(prefix) => room.as_str().starts_with(prefix.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(raw: &str) -> RoomName {
        RoomName::parse(raw).expect("valid")
    }

    #[test]
    fn patterns_are_exact_names_or_prefixes() {
        let team = RoomPattern::parse("team-*").expect("valid");
        assert!(team.matches(&room("team-a")) && team.matches(&room("team-")));
        assert!(!team.matches(&room("team")) && !team.matches(&room("teams")));
        let all = RoomPattern::parse("*").expect("valid");
        assert!(all.matches(&room("anything")));
        let exact = RoomPattern::parse("lobby").expect("valid");
        assert!(exact.matches(&room("lobby")) && !exact.matches(&room("lobby2")));
    }

    #[test]
    fn stars_elsewhere_and_bad_names_are_refused() {
        for bad in ["", "a*b", "*a", "**", "a b*", "x/y"] {
            assert!(RoomPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_sub_and_exp_are_required() {
        let c: Claims = serde_json::from_str(r#"{"sub":"alice","exp":5}"#).expect("valid");
        assert_eq!(
            (c.rooms.len(), c.publish, c.name, c.fixed_name),
            (0, None, None, false)
        );
        assert!(serde_json::from_str::<Claims>(r#"{"exp":5}"#).is_err());
        assert!(serde_json::from_str::<Claims>(r#"{"sub":"a","exp":1,"rooms":"x"}"#).is_err());
    }
}
