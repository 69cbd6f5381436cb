//! Presence across nodes: this node's copy of who is in which room on the
//! *other* nodes (its own members are the hub's).
//!
//! Kept by the relay thread from the `joined` and `left` events it relays
//! (each names the member's node instance and node), and replaced whole by a
//! snapshot of Redis' presence hashes each time it (re)subscribes. Read by
//! the hub thread through the engine (`who`, `rooms`, `GET /rooms`) under a
//! lock held only for a copy: never a round trip to Redis. The members of a
//! node that dies are taken out by the heartbeat script on a live node,
//! which publishes their `left` events: this copy follows those like any
//! other. A `nick` comes as a join of a member it knows: its new name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::engine::Remote;
use crate::protocol::ClientId;
use crate::room::{Name, RoomName};

use super::wire::Change;

/// A member on another node.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Its node instance (the token in payloads and presence fields).
    pub instance: String,
    /// Its connection id there (`c7`).
    pub from_id: String,
    /// Its name when it joined.
    pub name: String,
    /// Its node's `--node-name`.
    pub node: String,
}

/// The other nodes' members, room by room.
#[derive(Default)]
pub struct Replica {
    rooms: Mutex<HashMap<RoomName, Vec<Entry>>>,
}

impl Replica {
    /// A `joined` or `left` relayed from another node instance.
    pub fn apply(&self, room: &RoomName, instance: &str, change: &Change) {
        let mut rooms = self.lock();
        let members = rooms.entry(room.clone()).or_default();
        let same = |e: &Entry| e.instance == instance && e.from_id == change.from_id;
        if change.joined {
            // One it knows already: a new name (`nick`), or a refresh.
            if let Some(known) = members.iter_mut().find(|e| same(e)) {
                known.name.clone_from(&change.name);
            } else {
                members.push(Entry {
                    instance: instance.to_owned(),
                    from_id: change.from_id.clone(),
                    name: change.name.clone(),
                    node: change.node.clone(),
                });
            }
        } else {
            members.retain(|e| !same(e));
            if members.is_empty() {
                rooms.remove(room);
            }
        }
    }

    /// Everything, from a snapshot.
    pub fn replace(&self, snapshot: HashMap<RoomName, Vec<Entry>>) {
        *self.lock() = snapshot;
    }

    /// `room`'s members on other nodes.
    pub fn members(&self, room: &RoomName) -> Vec<Remote> {
        let rooms = self.lock();
        let Some(members) = rooms.get(room) else {
            return Vec::new();
        };
        members
            .iter()
            .filter_map(|e| {
                Some(Remote {
                    id: ClientId(e.from_id.strip_prefix('c')?.parse().ok()?),
                    name: Name::parse(&e.name).ok()?,
                    node: Arc::from(e.node.as_str()),
                })
            })
            .collect()
    }

    /// Rooms with members on other nodes, and how many.
    pub fn rooms(&self) -> Vec<(RoomName, usize)> {
        let rooms = self.lock();
        rooms
            .iter()
            .map(|(room, members)| (room.clone(), members.len()))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RoomName, Vec<Entry>>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }
}
