//! What the Redis engine writes in Redis: key names, and each event's payload.
//!
//! One payload per event, the same in the room's stream and on the channel:
//!
//! ```text
//! {id} {epoch} {seq} {origin} {ticket} {draft as JSON}
//! 42   1764000000123456 17 9f3a… 311 {"room":"lobby","ts":…,"kind":"message",…}
//! ```
//!
//! The Lua publish script writes the first three (the hub-wide id, the room's
//! epoch and the room's own count of events); the node writes the rest: which
//! node instance asked (`origin`) and under which ticket, so that the node's
//! relay can answer its own hub's `Later` with that ticket. Plain text around
//! JSON, because the script must not parse JSON (Lua's cjson rewrites numbers).
//! Everything read back is checked: a payload that does not parse is skipped
//! and logged, never trusted.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::engine::{Draft, What};
use crate::protocol::Event;
use crate::room::{Name, RoomName};

/// Every key and channel starts with this.
const PREFIX: &str = "switchboard";

/// The hub-wide id counter.
pub fn counter_key() -> String {
    format!("{PREFIX}:id")
}

/// A room's history: a stream whose entry ids are `{event id}-0`.
pub fn stream_key(room: &str) -> String {
    format!("{PREFIX}:room:{room}")
}

/// A room's epoch and event count (a hash that lives and dies with its stream).
pub fn meta_key(room: &str) -> String {
    format!("{PREFIX}:meta:{room}")
}

/// A room's members on every node: `INSTANCE|CLIENT` → the member's JSON.
pub fn presence_key(room: &str) -> String {
    format!("{PREFIX}:presence:{room}")
}

/// The rooms that have a presence hash.
pub fn presence_rooms_key() -> String {
    format!("{PREFIX}:presence-rooms")
}

/// Every node instance, scored by its last heartbeat (Unix ms).
pub fn nodes_key() -> String {
    format!("{PREFIX}:nodes")
}

/// The channel a node announces presence on without a room event: its
/// members again after Redis came back (`refresh`), and joins and leaves in
/// rooms past `--join-notices-max`: `+ {room} {instance}|{client} {member
/// JSON}`, or `- {room} {instance}|{client}`.
pub fn presence_channel() -> String {
    format!("{PREFIX}:presence")
}

/// Reads a presence announcement: the room, the instance, who.
pub fn decode_refresh(payload: &[u8]) -> Option<(RoomName, String, Change)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(4, ' ');
    let joined = match parts.next()? {
        "+" => true,
        "-" => false,
        _ => return None,
    };
    let room = RoomName::parse(parts.next()?).ok()?;
    let (instance, from_id) = parts.next()?.split_once('|')?;
    let (name, node) = if joined {
        let member: serde_json::Value = serde_json::from_str(parts.next()?).ok()?;
        let name = member["name"].as_str()?.to_owned();
        (name, member["node"].as_str()?.to_owned())
    } else {
        (String::new(), String::new())
    };
    let change = Change {
        joined,
        from_id: from_id.to_owned(),
        name,
        node,
    };
    Some((room, instance.to_owned(), change))
}

/// A member's field in its room's presence hash.
pub fn presence_field(instance: &str, from_id: &str) -> String {
    format!("{instance}|{from_id}")
}

/// A member as the presence hash keeps it: the `name`, `from_id` and `node`
/// fields of a draft, so that a script can build a `left` for it.
pub fn presence_value(name: &str, from_id: &str, node: &str) -> String {
    let member = serde_json::json!({"name": name, "from_id": from_id, "node": node});
    member.to_string()
}

/// The channel every node subscribes to: every room's events, in id order.
pub fn events_channel() -> String {
    format!("{PREFIX}:events")
}

/// The channel only this node instance subscribes to: its read markers.
pub fn node_channel(instance: &str) -> String {
    format!("{PREFIX}:node:{instance}")
}

/// A draft as the payload carries it.
#[derive(Serialize, Deserialize)]
struct WireDraft<'a> {
    room: &'a str,
    ts: u64,
    kind: &'a str,
    name: &'a str,
    from_id: &'a str,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    /// The node of whoever joined or left (presence across nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
}

/// The draft's JSON, the part of the payload a node writes.
pub fn encode_draft(draft: &Draft, node: &str) -> String {
    let (kind, name, from_id, text) = match &draft.what {
        What::Message {
            from,
            from_id,
            text,
        } => ("message", from, from_id, Some(text.clone())),
        What::Joined { name, from_id } => ("joined", name, from_id, None),
        What::Left { name, from_id } => ("left", name, from_id, None),
    };
    let node = (kind != "message").then_some(node);
    let wire = WireDraft {
        room: draft.room.as_str(),
        ts: draft.ts,
        kind,
        name: name.as_str(),
        from_id,
        text,
        node,
    };
    serde_json::to_string(&wire).expect("a draft always serializes")
}

/// An event read back from Redis, with where it stands in its room.
#[derive(Debug)]
pub struct Relayed {
    /// The event, with its id.
    pub event: Arc<Event>,
    /// Its room.
    pub room: RoomName,
    /// The room's epoch when it was published.
    pub epoch: String,
    /// Its place among the room's events in that epoch (1, 2, …).
    pub seq: u64,
    /// The node instance that published it.
    pub origin: String,
    /// That node's ticket for it.
    pub ticket: u64,
    /// For `joined` and `left`: who, for presence across nodes.
    pub presence: Option<Change>,
}

/// A member joined or left a room on some node.
#[derive(Clone, Debug)]
pub struct Change {
    /// Joined (else left).
    pub joined: bool,
    /// Its connection id there.
    pub from_id: String,
    /// Its name.
    pub name: String,
    /// That node's name.
    pub node: String,
}

impl Relayed {
    /// Its id.
    pub fn id(&self) -> u64 {
        self.event.id().unwrap_or(0)
    }
}

/// Parses a payload; `None` (and a log line) for anything malformed.
pub fn decode(payload: &[u8]) -> Option<Relayed> {
    let decoded = decode_checked(payload);
    if decoded.is_none() {
        log::warn!(
            "skipped a malformed event from redis: {:?}",
            String::from_utf8_lossy(&payload[..payload.len().min(200)])
        );
    }
    decoded
}

fn decode_checked(payload: &[u8]) -> Option<Relayed> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(6, ' ');
    let id: u64 = parts.next()?.parse().ok()?;
    let epoch = parts.next()?.to_owned();
    let seq: u64 = parts.next()?.parse().ok()?;
    let origin = parts.next()?.to_owned();
    let ticket: u64 = parts.next()?.parse().ok()?;
    let wire: WireDraft = serde_json::from_str(parts.next()?).ok()?;
    let room = RoomName::parse(wire.room).ok()?;
    let name = Name::parse(wire.name).ok()?;
    let from_id: Arc<str> = wire.from_id.into();
    let presence = matches!(wire.kind, "joined" | "left").then(|| Change {
        joined: wire.kind == "joined",
        from_id: wire.from_id.to_owned(),
        name: wire.name.to_owned(),
        node: wire.node.unwrap_or("").to_owned(),
    });
    let what = match (wire.kind, wire.text) {
        ("message", Some(text)) => What::Message {
            from: name,
            from_id,
            text,
        },
        ("joined", None) => What::Joined { name, from_id },
        ("left", None) => What::Left { name, from_id },
        _ => return None,
    };
    let draft = Draft {
        room: room.clone(),
        ts: wire.ts,
        what,
    };
    Some(Relayed {
        event: Arc::new(draft.into_event(id)),
        room,
        epoch,
        seq,
        origin,
        ticket,
        presence,
    })
}

/// The events of stream entries as XRANGE / XREVRANGE return them
/// (`[[id, [field, value, …]], …]`), their payload in field `p`.
pub fn decode_entries(entries: &::redis::Value) -> Vec<Relayed> {
    use ::redis::Value;
    let Value::Array(entries) = entries else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            let Value::Array(parts) = entry else {
                return None;
            };
            let Some(Value::Array(fields)) = parts.get(1) else {
                return None;
            };
            let payload = fields.chunks(2).find_map(|pair| match pair {
                [Value::BulkString(k), Value::BulkString(v)] if k == b"p" => Some(v),
                _ => None,
            })?;
            decode(payload)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Body;

    #[test]
    fn a_payload_carries_the_draft_and_its_place_and_anything_else_is_refused() {
        let draft = Draft {
            room: RoomName::parse("lobby").expect("valid"),
            ts: 7,
            what: What::Message {
                from: Name::parse("alice").expect("valid"),
                from_id: "c3".into(),
                text: "hi there { } \"quoted\"".into(),
            },
        };
        let payload = format!("42 1700 5 node-a 9 {}", encode_draft(&draft, "a"));
        let got = decode(payload.as_bytes()).expect("parses");
        assert_eq!((got.id(), got.seq, got.ticket), (42, 5, 9));
        assert_eq!(
            (got.epoch.as_str(), got.origin.as_str()),
            ("1700", "node-a")
        );
        match got.event.body() {
            Body::Message { text, room, .. } => {
                assert_eq!(text, "hi there { } \"quoted\"");
                assert_eq!(room.as_str(), "lobby");
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "x 1 1 n 1 {}",
            "1 1 1 n 1 {\"room\":\"bad room\",\"ts\":1,\"kind\":\"left\",\"name\":\"a\",\"from_id\":\"c\"}",
            "1 1 1 n 1 {\"room\":\"r\",\"ts\":1,\"kind\":\"message\",\"name\":\"a\",\"from_id\":\"c\"}",
            "1 1 1 n",
        ] {
            assert!(decode(bad.as_bytes()).is_none(), "{bad}");
        }
    }
}
