//! What a subscriber asks for when it connects: rooms, a name, and where to
//! start (`since`). One parser for every transport, so WebSocket, SSE and gRPC
//! accept the same things and refuse them with the same errors.
//!
//! Runs on the connection's own thread, before the hub hears of it: a request
//! the hub would refuse is refused here, at the edge, with `bad_request`,
//! `bad_room` or `bad_name`. Past `MAX_ROOMS` distinct rooms it stops at once,
//! so a query of 40,000 rooms costs no more than one of 65.

use crate::protocol::ParseError;
use crate::room::{Name, RoomName};

/// The most rooms one connection may be in (joins past it are refused too).
pub const MAX_ROOMS: usize = 64;
/// The room a subscriber who names none joins.
pub const DEFAULT_ROOM: &str = "lobby";

/// A subscription, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// Distinct rooms, in the order asked; `lobby` when none was named.
    pub rooms: Vec<RoomName>,
    /// The display name asked for, if any.
    pub name: Option<Name>,
    /// Replay the history after this event id first.
    pub since: Option<u64>,
}

/// Builds a `Subscription` one field at a time, checking each as it comes.
#[derive(Debug, Default)]
pub struct SubscriptionBuilder {
    rooms: Vec<RoomName>,
    name: Option<Name>,
    since: Option<u64>,
}

impl SubscriptionBuilder {
    /// Adds a room; a repeat is ignored, the 65th distinct one refused.
    pub fn room(&mut self, raw: &str) -> Result<(), ParseError> {
        let room = RoomName::parse(raw)?;
        if !self.rooms.contains(&room) {
            if self.rooms.len() == MAX_ROOMS {
                return Err(ParseError::BadRequest(format!(
                    "at most {MAX_ROOMS} rooms per connection"
                )));
            }
            self.rooms.push(room);
        }
        Ok(())
    }

    /// Sets the display name.
    pub fn name(&mut self, raw: &str) -> Result<(), ParseError> {
        self.name = Some(Name::parse(raw)?);
        Ok(())
    }

    /// Sets where replay starts, from its text form.
    pub fn since(&mut self, raw: &str) -> Result<(), ParseError> {
        let id = raw
            .trim()
            .parse::<u64>()
            .map_err(|_| ParseError::BadRequest(format!("an event id is a number, not {raw:?}")))?;
        self.since = Some(id);
        Ok(())
    }

    /// Sets where replay starts.
    pub fn since_id(&mut self, id: u64) {
        self.since = Some(id);
    }

    /// Reads `room=` (repeatable), `name=`, and `since=` or `last_event_id=`
    /// from a URL query; `other` sees every other key (unknown ones are
    /// ignored, as HTTP servers do).
    pub fn query(
        &mut self,
        query: &str,
        mut other: impl FnMut(&str, &str) -> Result<(), ParseError>,
    ) -> Result<(), ParseError> {
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "room" => self.room(&value)?,
                "name" => self.name(&value)?,
                "since" | "last_event_id" => self.since(&value)?,
                key => other(key, &value)?,
            }
        }
        Ok(())
    }

    /// The subscription: `lobby` when no room was named.
    pub fn finish(self) -> Subscription {
        let mut rooms = self.rooms;
        if rooms.is_empty() {
            rooms.push(RoomName::parse(DEFAULT_ROOM).expect("the default room name is valid"));
        }
        Subscription {
            rooms,
            name: self.name,
            since: self.since,
        }
    }
}

impl Subscription {
    /// A subscription from a URL query alone (`room`, `name`, `since` or
    /// `last_event_id`; other keys ignored).
    pub fn from_query(query: &str) -> Result<Subscription, ParseError> {
        let mut wanted = SubscriptionBuilder::default();
        wanted.query(query, |_, _| Ok(()))?;
        Ok(wanted.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &Subscription) -> Vec<&str> {
        s.rooms.iter().map(RoomName::as_str).collect()
    }

    #[test]
    fn no_room_means_the_lobby() {
        let s = Subscription::from_query("").expect("valid");
        assert_eq!(names(&s), ["lobby"]);
        assert_eq!((s.name, s.since), (None, None));
    }

    #[test]
    fn rooms_keep_their_order_without_repeats() {
        let s =
            Subscription::from_query("room=a&room=b&room=a&name=al%20ice&since=7").expect("valid");
        assert_eq!(names(&s), ["a", "b"]);
        assert_eq!(s.name.as_ref().map(Name::as_str), Some("al ice"));
        assert_eq!(s.since, Some(7));
        let s = Subscription::from_query("last_event_id=9").expect("valid");
        assert_eq!(s.since, Some(9));
    }

    #[test]
    fn the_65th_room_is_refused_without_quadratic_work() {
        let query: String = (0..40_000).map(|n| format!("room=r{n}&")).collect();
        let started = std::time::Instant::now();
        assert!(matches!(
            Subscription::from_query(&query),
            Err(ParseError::BadRequest(_))
        ));
        assert!(started.elapsed() < std::time::Duration::from_millis(200));
        let at_the_bound: String = (0..MAX_ROOMS).map(|n| format!("room=r{n}&")).collect();
        let s = Subscription::from_query(&at_the_bound).expect("64 rooms are fine");
        assert_eq!(s.rooms.len(), MAX_ROOMS);
    }

    #[test]
    fn bad_rooms_names_and_ids_are_refused() {
        assert_eq!(
            Subscription::from_query("room=a%20b"),
            Err(ParseError::BadRoom)
        );
        assert!(matches!(
            Subscription::from_query("since=x"),
            Err(ParseError::BadRequest(_))
        ));
        assert!(Subscription::from_query("since=-1").is_err());
        assert!(Subscription::from_query("name=").is_err());
    }

    #[test]
    fn other_keys_reach_the_caller() {
        let mut format = None;
        let mut wanted = SubscriptionBuilder::default();
        wanted
            .query("format=text&x=1", |key, value| {
                if key == "format" {
                    format = Some(value.to_owned());
                }
                Ok(())
            })
            .expect("valid");
        assert_eq!(format.as_deref(), Some("text"));
    }
}
