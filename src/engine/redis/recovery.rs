//! Catching up after a (re)subscription: what each room's members missed,
//! or that its history is gone.
//!
//! Called on the relay thread, just after it subscribed again, on a command
//! connection of its own. One `RECOVER` script per chunk of rooms reads, for
//! every room this node tracks, its epoch, its count of events (`seq`) and
//! its events after the last id relayed, and raises the hub-wide counter to
//! the highest id this node has seen (a Redis that came back empty must not
//! hand out old ids again). A room is caught up when its epoch is the one
//! this node knew and its events continue its count; otherwise its history
//! was lost (Redis restarted empty, or more than `--history` events went by)
//! and its members are told so, with the last id they got.

use std::collections::HashMap;

use ::redis::{Client, RedisResult, Value};

use super::presence::Entry;
use super::relay::Track;
use super::{link, scripts, wire};
use crate::room::RoomName;

/// Rooms read by one script (each is a few keys: a bound on argument size
/// and on how long Redis is busy with one script).
const CHUNK: usize = 200;

/// Every room's presence on nodes other than `instance`, read once after
/// subscribing (`scripts::SNAPSHOT`).
pub fn snapshot(client: &Client, instance: &str) -> RedisResult<HashMap<RoomName, Vec<Entry>>> {
    let mut con = link::connect(client)?;
    let found: Vec<Value> = ::redis::cmd("EVAL")
        .arg(scripts::SNAPSHOT)
        .arg(1)
        .arg(wire::presence_rooms_key())
        .query(&mut con)?;
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    let mut rooms: HashMap<RoomName, Vec<Entry>> = HashMap::new();
    for room in &found {
        let Value::Array(parts) = room else { continue };
        let (Some(name), Some(Value::Array(fields))) = (parts.first(), parts.get(1)) else {
            continue;
        };
        let Ok(name) = RoomName::parse(&text(name)) else {
            continue;
        };
        for pair in fields.chunks(2) {
            let [field, member] = pair else { continue };
            let field = text(field);
            let Some((owner, from_id)) = field.split_once('|') else {
                continue;
            };
            let member: serde_json::Value = serde_json::from_str(&text(member)).unwrap_or_default();
            let (Some(who), Some(node)) = (member["name"].as_str(), member["node"].as_str()) else {
                continue;
            };
            if owner == instance {
                continue; // this node's own members are the hub's
            }
            rooms.entry(name.clone()).or_default().push(Entry {
                instance: owner.to_owned(),
                from_id: from_id.to_owned(),
                name: who.to_owned(),
                node: node.to_owned(),
            });
        }
    }
    Ok(rooms)
}

/// What a recovery found.
#[derive(Default)]
pub struct Recovered {
    /// Rooms whose history is lost, with the last id relayed in each.
    pub lost: Vec<(RoomName, u64)>,
    /// Every room's events after the last relayed, in id order.
    pub events: Vec<wire::Relayed>,
}

/// Reads what `tracks` missed; resets the tracks of lost rooms.
pub fn recover(
    client: &Client,
    tracks: &mut HashMap<RoomName, Track>,
    floor: u64,
) -> RedisResult<Recovered> {
    let mut con = link::connect(client)?;
    let rooms: Vec<RoomName> = tracks.keys().cloned().collect();
    let mut recovered = Recovered::default();
    let empty: [RoomName; 0] = [];
    let chunks: Vec<&[RoomName]> = if rooms.is_empty() {
        vec![&empty[..]] // once all the same: it raises the counter
    } else {
        rooms.chunks(CHUNK).collect()
    };
    for chunk in chunks {
        let mut cmd = ::redis::cmd("EVAL");
        cmd.arg(scripts::RECOVER).arg(2 * chunk.len() + 1);
        for room in chunk {
            cmd.arg(wire::stream_key(room.as_str()))
                .arg(wire::meta_key(room.as_str()));
        }
        cmd.arg(wire::counter_key()).arg(floor);
        for room in chunk {
            cmd.arg(tracks.get(room).map_or(0, |t| t.id));
        }
        let found: Vec<Value> = cmd.query(&mut con)?;
        for (room, found) in chunk.iter().zip(found) {
            let Some(track) = tracks.get_mut(room) else {
                continue;
            };
            let (epoch, seq, events) = parse(&found);
            if !continues(track, &epoch, seq, &events) {
                recovered.lost.push((room.clone(), track.id));
                track.epoch = epoch;
                track.seq = seq;
            }
            recovered.events.extend(events);
        }
    }
    recovered.events.sort_by_key(wire::Relayed::id);
    Ok(recovered)
}

/// Whether a room's state in Redis follows on from what this node relayed.
fn continues(track: &Track, epoch: &str, seq: u64, events: &[wire::Relayed]) -> bool {
    // A track reset after a loss ('' and 0) takes whatever epoch comes next.
    let same_epoch =
        (!epoch.is_empty() && epoch == track.epoch) || (track.epoch.is_empty() && track.seq == 0);
    if !same_epoch {
        return false;
    }
    match events.first() {
        Some(first) => first.seq == track.seq + 1,
        None => seq == track.seq,
    }
}

/// `{epoch, seq, entries}` as the script returns them.
fn parse(found: &Value) -> (String, u64, Vec<wire::Relayed>) {
    let text = |v: Option<&Value>| match v {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::Int(n)) => n.to_string(),
        _ => String::new(),
    };
    let Value::Array(parts) = found else {
        return (String::new(), 0, Vec::new());
    };
    let epoch = text(parts.first());
    let seq = text(parts.get(1)).parse().unwrap_or(0);
    let mut events = parts.get(2).map(wire::decode_entries).unwrap_or_default();
    events.sort_by_key(wire::Relayed::id);
    (epoch, seq, events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_continues_only_in_the_same_epoch_with_the_next_seq() {
        let track = Track {
            epoch: "e1".into(),
            seq: 5,
            id: 40,
        };
        assert!(continues(&track, "e1", 5, &[]), "nothing new");
        assert!(!continues(&track, "e1", 7, &[]), "trimmed away");
        assert!(!continues(&track, "", 0, &[]), "Redis came back empty");
        assert!(!continues(&track, "e2", 1, &[]), "a new history");
        let reset = Track {
            epoch: String::new(),
            seq: 0,
            id: 40,
        };
        assert!(continues(&reset, "", 0, &[]), "still empty: said once");
        assert!(continues(&reset, "e2", 0, &[]));
    }
}
