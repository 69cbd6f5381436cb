//! What a verified token allows, asked in one place: `Access`.
//!
//! Every transport attaches an `Access` to its subscriber at the handshake;
//! the hub asks it before each join, message, `who` and replay, and REST asks
//! it before publishing or reading history. `Access::Open` (tokens off)
//! allows everything, so the code that asks does not care whether tokens are
//! on.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::protocol::Event;
use crate::room::{Name, RoomName};

use super::claims::{Claims, RoomPattern};
use super::verify::TokenError;

/// The most patterns `rooms` and `publish` may hold together: each join is
/// checked against them one by one.
pub const MAX_PATTERNS: usize = 256;
/// The longest `sub`, in bytes.
pub const MAX_USER_BYTES: usize = 256;

/// A verified token, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Grants {
    /// The user id (`sub`).
    pub user: Arc<str>,
    /// The token's display name, which wins over `?name=`.
    pub name: Option<Name>,
    /// Whether `nick` is refused.
    pub fixed_name: bool,
    read: Vec<RoomPattern>,
    publish: Vec<RoomPattern>,
    /// Unix seconds past which the token is no longer good: `exp` plus the
    /// verifier's leeway.
    pub good_until: u64,
}

impl Grants {
    /// Reads verified claims; `leeway` is added to `exp`.
    pub fn from_claims(claims: Claims, leeway: Duration) -> Result<Grants, TokenError> {
        let bad = |why: String| TokenError::BadClaim(why);
        if claims.sub.is_empty()
            || claims.sub.len() > MAX_USER_BYTES
            || claims.sub.chars().any(char::is_control)
        {
            return Err(bad(format!(
                "sub must be 1-{MAX_USER_BYTES} bytes without control characters"
            )));
        }
        let name = claims
            .name
            .as_deref()
            .map(Name::parse)
            .transpose()
            .map_err(|e| bad(format!("name: {e}")))?;
        let patterns = |list: &[String], claim: &str| {
            list.iter()
                .map(|raw| RoomPattern::parse(raw).map_err(|e| bad(format!("{claim}: {e}"))))
                .collect::<Result<Vec<_>, _>>()
        };
        let read = patterns(&claims.rooms, "rooms")?;
        let publish = match &claims.publish {
            Some(list) => patterns(list, "publish")?,
            None => read.clone(),
        };
        if read.len() + publish.len() > MAX_PATTERNS {
            return Err(bad(format!(
                "rooms and publish hold at most {MAX_PATTERNS} patterns together"
            )));
        }
        Ok(Grants {
            user: Arc::from(claims.sub),
            name,
            fixed_name: claims.fixed_name,
            read,
            publish,
            good_until: claims.exp.saturating_add(leeway.as_secs()),
        })
    }

    /// When the token stops being good, on this process's monotonic clock.
    pub fn deadline(&self) -> Instant {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let left = Duration::from_secs(self.good_until).saturating_sub(now);
        // Far-future tokens are capped rather than overflowing `Instant`.
        Instant::now() + left.min(Duration::from_secs(10 * 365 * 24 * 3600))
    }
}

/// What one subscriber may do.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Access {
    /// Tokens are off: everything.
    #[default]
    Open,
    /// What this token grants.
    Token(Arc<Grants>),
}

impl Access {
    /// Whether it may join `room` and read its events and history.
    pub fn may_read(&self, room: &RoomName) -> bool {
        match self {
            Access::Open => true,
            Access::Token(grants) => grants.read.iter().any(|p| p.matches(room)),
        }
    }

    /// Whether it may send messages to `room`.
    pub fn may_publish(&self, room: &RoomName) -> bool {
        match self {
            Access::Open => true,
            Access::Token(grants) => grants.publish.iter().any(|p| p.matches(room)),
        }
    }

    /// Whether `nick` may change its name.
    pub fn may_rename(&self) -> bool {
        match self {
            Access::Open => true,
            Access::Token(grants) => !grants.fixed_name,
        }
    }

    /// Its name: the token's, else the one asked for (`?name=`), else `None`
    /// (the caller's default, `guest-<n>`).
    pub fn name(&self, asked: Option<Name>) -> Option<Name> {
        match self {
            Access::Token(grants) if grants.name.is_some() => grants.name.clone(),
            _ => asked,
        }
    }

    /// The token's user id, if tokens are on.
    pub fn user(&self) -> Option<&Arc<str>> {
        match self {
            Access::Open => None,
            Access::Token(grants) => Some(&grants.user),
        }
    }

    /// When the connection must end, if tokens are on.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            Access::Open => None,
            Access::Token(grants) => Some(grants.deadline()),
        }
    }
}

/// The `forbidden` error event: the token does not allow `what`; the
/// connection lives.
pub fn forbidden(what: impl Into<String>) -> Event {
    Event::error("forbidden", what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: &str) -> Claims {
        serde_json::from_str(json).expect("valid claims")
    }

    fn room(raw: &str) -> RoomName {
        RoomName::parse(raw).expect("valid")
    }

    #[test]
    fn publish_defaults_to_rooms_and_may_narrow_it() {
        let g = Grants::from_claims(
            claims(r#"{"sub":"a","exp":9,"rooms":["team-*","lobby"]}"#),
            Duration::ZERO,
        )
        .expect("valid");
        let access = Access::Token(Arc::new(g));
        assert!(access.may_read(&room("team-x")) && access.may_publish(&room("lobby")));
        assert!(!access.may_read(&room("other")) && !access.may_publish(&room("other")));
        let g = Grants::from_claims(
            claims(r#"{"sub":"a","exp":9,"rooms":["*"],"publish":["news"]}"#),
            Duration::from_secs(5),
        )
        .expect("valid");
        assert_eq!(g.good_until, 14);
        let access = Access::Token(Arc::new(g));
        assert!(access.may_read(&room("x")) && !access.may_publish(&room("x")));
        assert!(access.may_publish(&room("news")));
    }

    #[test]
    fn no_rooms_claim_allows_none_and_open_allows_all() {
        let g =
            Grants::from_claims(claims(r#"{"sub":"a","exp":9}"#), Duration::ZERO).expect("valid");
        let access = Access::Token(Arc::new(g));
        assert!(!access.may_read(&room("lobby")) && !access.may_publish(&room("lobby")));
        assert!(Access::Open.may_read(&room("x")) && Access::Open.may_rename());
    }

    #[test]
    fn the_token_name_wins_and_fixed_names_stay() {
        let g = Grants::from_claims(
            claims(r#"{"sub":"a","exp":9,"name":"Alice","fixed_name":true}"#),
            Duration::ZERO,
        )
        .expect("valid");
        let access = Access::Token(Arc::new(g));
        let asked = Name::parse("mallory").ok();
        assert_eq!(access.name(asked.clone()).expect("named").as_str(), "Alice");
        assert!(!access.may_rename());
        assert_eq!(Access::Open.name(asked.clone()), asked);
    }

    #[test]
    fn bad_claims_refuse_the_whole_token() {
        for json in [
            r#"{"sub":"","exp":9}"#,
            r#"{"sub":"a\u0007","exp":9}"#,
            r#"{"sub":"a","exp":9,"rooms":["a*b"]}"#,
            r#"{"sub":"a","exp":9,"publish":["no way"]}"#,
            r#"{"sub":"a","exp":9,"name":""}"#,
        ] {
            assert!(
                Grants::from_claims(claims(json), Duration::ZERO).is_err(),
                "{json}"
            );
        }
    }
}
