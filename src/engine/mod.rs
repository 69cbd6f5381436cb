//! The engine: ids and history, behind one small boundary the hub talks to.
//!
//! ```text
//!            sequence(draft) ──> Now(event)                     (memory: same call)
//!   [hub] ──                 ──> Later ··· Answer::Sequenced ──> recv(answers)
//!            history(read)   ──> Now(events)  /  Later ··· Answer::History
//! ```
//!
//! **What it owns.** The engine gives each room event its hub-wide id, keeps
//! it in its room's history, and reads a room's history back (`since` on
//! connect, `GET /rooms/{room}/messages`). The hub keeps everything else:
//! clients, membership, fan-out, runs, slow consumers. So the hub *drafts*
//! an event (a `Draft`: everything but the id), the engine *sequences* it,
//! and the hub fans the sequenced event out to the room's members.
//!
//! **Which threads.** `Engine` methods are called on the hub thread only, and
//! must return at once: no blocking I/O, no waiting on a lock or a reply. The
//! default, `MemoryEngine`, does its work inside the call and answers `Now`.
//! A networked engine (`RedisEngine`) hands the work to threads of its own with
//! a `try_send` and answers `Later`; the result then arrives as an `Answer` on
//! `answers()`, which the hub's loop selects on beside its commands, and is
//! fanned out then. Either way the hub never waits on a round trip: while
//! one publish travels, it serves the next command.
//!
//! **What comes in, what goes out.** In: `sequence(ticket, draft)` and
//! `history(ticket, read)`; the hub numbers each call with a `Ticket`, so
//! that a `Later` answer finds who was waiting for it (a REST publisher
//! waiting for its id, a subscriber waiting for its backlog). Out: `Now` at
//! once, or `Later` and then exactly one `Answer` carrying the same ticket.
//! An engine may also send `Answer::Sequenced` with `Ticket::NONE` for events
//! nobody on this node asked for (another node's publishes, with Redis).
//!
//! **The contract that keeps replay gap-free.** An engine answers in the
//! order it was asked, and a history read sees every event sequenced before
//! it was asked. With `Now` that is trivially true. With `Later`, the hub
//! joins a subscriber that asked for `since` to its rooms only when its
//! backlog arrives: every event answered before the backlog is in the
//! backlog, every event answered after it reaches the new member live. So
//! nothing is missed and nothing is sent twice, as with the memory engine,
//! where registering and snapshotting happen in one hub step.
//!
//! **Seats follow the notices.** With `Later`, membership still changes at
//! once in the hub, but a member's view keeps to the memory engine's: a new
//! seat takes events from its own `joined` on (until that comes back it
//! waits), and a member that leaves keeps its seat until its own `left`
//! reaches it.
//!
//! **Where the memory engine keeps history.** In one process a room's life
//! hangs on both its members and its history (`--max-rooms` counts rooms
//! with either; a room without members expires with its history). So the
//! memory engine keeps its history in the hub's own table of rooms
//! (`Rooms`), which the hub lends to every call as `local`, rather than in
//! a second table that would have to mirror the first. An engine whose
//! history lives elsewhere ignores `local`: the hub's rooms then hold members
//! only.
//!
//! **How a second engine plugs in** (as `engine/redis/` did, step by step):
//! 1. Write a type that implements `Engine`, in a module of its own. Its
//!    constructor starts its threads (`os::threads::spawn_named`): say a
//!    publisher that runs one script per draft (increment the counter,
//!    append to the room's stream, publish), pipelining what is queued, and
//!    a subscriber that turns what Redis publishes into `Answer`s.
//! 2. `sequence`: `try_send` the ticket and draft to the publisher and
//!    answer `Later`; a full queue is an engine that cannot keep up: answer
//!    `Unavailable`, never wait. `history`: the same with a read. Work it
//!    took and then could not do is answered `Answer::Failed`.
//! 3. Keep the contract above: answer in the order asked, so a read's answer
//!    must not overtake the events sequenced before it (for Redis: the read
//!    script publishes a marker, and the read is answered when the
//!    subscription reaches it).
//! 4. `answers()` returns the receiving end of the channel those threads
//!    send `Answer`s on (bounded: the engine's threads may wait on the hub,
//!    never the other way round).
//! 5. Choose it in `Server::launch` (`--redis` picks `RedisEngine`), or
//!    pass it to `Server::start_with_engine`.
//!
//! `tests/engine_double.rs` holds an engine built exactly that way, with one
//! thread standing in for Redis, and runs the real server on it.

mod memory;
pub mod redis;

use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::protocol::{Body, ClientId, Event};
use crate::room::{Name, RoomName};
use crate::rooms::Rooms;

pub use memory::MemoryEngine;
pub use redis::RedisEngine;

/// Ids and history (see the module doc). Called on the hub thread only;
/// every method returns at once.
pub trait Engine: Send {
    /// Gives `draft` the next hub-wide id and keeps it in its room's history.
    fn sequence(&mut self, local: &mut Rooms, ticket: Ticket, draft: Draft) -> Sequenced;

    /// Reads history: the events of `read.rooms` after `read.since` (or the
    /// newest), in id order, at most `read.limit`.
    fn history(&mut self, local: &Rooms, ticket: Ticket, read: Read) -> Reading;

    /// Where `Later` answers arrive; the hub selects on it. An engine that
    /// always answers `Now` returns `crossbeam_channel::never()`.
    fn answers(&self) -> Receiver<Answer>;

    /// This node's name, when there are several (presence lists it).
    fn node(&self) -> Option<Arc<str>> {
        None
    }

    /// The members of `room` on other nodes, as this node knows them now
    /// (read from memory: never a round trip).
    fn elsewhere(&self, _room: &RoomName) -> Vec<Remote> {
        Vec::new()
    }

    /// Every room with members on other nodes, and how many.
    fn rooms_elsewhere(&self) -> Vec<(RoomName, usize)> {
        Vec::new()
    }

    /// A member joined (`joined`) or left `room` without a notice (a room
    /// past `--join-notices-max`): presence on other nodes must still know.
    /// Returns at once, as every method here.
    fn unannounced(&mut self, _room: &RoomName, _name: &Name, _from_id: &str, _joined: bool) {}

    /// When history lives outside the hub's `Rooms` (Redis): asks which
    /// rooms have history kept, and each one's newest id (`room`: that one
    /// only; `None`: every room), answers `true`, and an `Answer::Stored`
    /// with the same ticket follows. `false` (the memory engine): the hub's
    /// own rooms say it all. Returns at once.
    fn stored(&mut self, _ticket: Ticket, _room: Option<&RoomName>) -> bool {
        false
    }

    /// A member's name changed (`nick`): presence on other nodes must show
    /// the new one in each of `rooms`. Returns at once.
    fn renamed(&mut self, _rooms: &[RoomName], _name: &Name, _from_id: &str) {}
}

/// A member connected to another node.
#[derive(Clone, Debug)]
pub struct Remote {
    /// Its connection id there.
    pub id: ClientId,
    /// Its name when it joined.
    pub name: Name,
    /// That node's `--node-name`.
    pub node: Arc<str>,
}

/// Numbers a call to the engine, so that a `Later` answer finds its asker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket(pub u64);

impl Ticket {
    /// For events nobody on this node asked for.
    pub const NONE: Ticket = Ticket(0);
}

/// A room event before it has an id.
#[derive(Clone, Debug)]
pub struct Draft {
    /// The room it goes to.
    pub room: RoomName,
    /// When it happened, Unix milliseconds.
    pub ts: u64,
    /// What happened.
    pub what: What,
}

/// The kinds of room events (the ones with an id).
#[derive(Clone, Debug)]
pub enum What {
    /// A chat message.
    Message {
        /// The sender's display name.
        from: Name,
        /// The sender's connection id, or `rest`/`grpc`.
        from_id: Arc<str>,
        /// What was said.
        text: String,
    },
    /// Someone joined.
    Joined {
        /// Their display name.
        name: Name,
        /// Their connection id.
        from_id: Arc<str>,
    },
    /// Someone left.
    Left {
        /// Their display name.
        name: Name,
        /// Their connection id.
        from_id: Arc<str>,
    },
}

impl Draft {
    /// The event, with the id the engine gave it.
    pub fn into_event(self, id: u64) -> Event {
        let Draft { room, ts, what } = self;
        Event::new(match what {
            What::Message {
                from,
                from_id,
                text,
            } => Body::Message {
                room,
                id,
                from,
                from_id,
                text,
                ts,
            },
            What::Joined { name, from_id } => Body::Joined {
                room,
                id,
                name,
                from_id,
                ts,
            },
            What::Left { name, from_id } => Body::Left {
                room,
                id,
                name,
                from_id,
                ts,
            },
        })
    }
}

/// What `sequence` says.
#[derive(Debug)]
pub enum Sequenced {
    /// Done: the event, with its id, kept in history.
    Now(Arc<Event>),
    /// Handed over: an `Answer::Sequenced` with the same ticket will follow.
    Later,
    /// Not sequenced, and no id spent: the room is gone (everyone left), or
    /// the engine cannot take more now.
    Refused,
    /// Not sequenced: the engine cannot reach where ids and history live
    /// (Redis is down). The publisher is told `unavailable`.
    Unavailable,
}

/// A history read.
#[derive(Clone, Debug)]
pub struct Read {
    /// The rooms to read, merged in id order.
    pub rooms: Vec<RoomName>,
    /// Only events after this id; `None` for the newest.
    pub since: Option<u64>,
    /// At most this many (`usize::MAX` for all that is kept).
    pub limit: usize,
}

/// The engine cannot reach where ids and history live (Redis is down): the
/// publisher is told `unavailable` (REST 503, gRPC `UNAVAILABLE`, an error
/// event) and its connection lives.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("redis unavailable: nothing can be published until it is back; try again shortly")]
pub struct Unavailable;

impl Unavailable {
    /// The error code peers get.
    pub const CODE: &'static str = "unavailable";

    /// The `error` event that tells a connection.
    pub fn to_event(self) -> Event {
        Event::error(Self::CODE, self.to_string())
    }
}

/// What `history` says.
#[derive(Debug)]
pub enum Reading {
    /// The events, in id order.
    Now(Vec<Arc<Event>>),
    /// Handed over: an `Answer::History` with the same ticket will follow.
    Later,
}

/// What an engine sends on `answers()` after it said `Later`.
#[derive(Debug)]
pub enum Answer {
    /// An event, sequenced; `Ticket::NONE` if nobody here asked for it.
    Sequenced(Ticket, Arc<Event>),
    /// A history read, in id order.
    History(Ticket, Vec<Arc<Event>>),
    /// What the ticket asked for did not happen, or may not have: the engine
    /// lost its way to Redis meanwhile. A publisher is told `unavailable`.
    Failed(Ticket),
    /// The rooms whose history the engine keeps, each with its newest id
    /// (the answer to `stored`).
    Stored(Ticket, Vec<(RoomName, u64)>),
    /// A room's history is gone (Redis came back empty): events after
    /// `last_id`, the last this node relayed, may never arrive. Its members
    /// are told `history_lost`.
    Lost {
        /// The room.
        room: RoomName,
        /// The last id of it this node relayed.
        last_id: u64,
    },
}

/// Merges reads of several rooms into one answer: in id order, at most
/// `limit`, the oldest after `since` or else the newest. For engines that
/// read room by room (`MemoryEngine`, test doubles).
pub fn merge(mut events: Vec<Arc<Event>>, since: Option<u64>, limit: usize) -> Vec<Arc<Event>> {
    events.sort_unstable_by_key(|e| e.id());
    match since {
        Some(_) => events.truncate(limit),
        None => {
            let skip = events.len().saturating_sub(limit);
            events.drain(..skip);
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: u64) -> Arc<Event> {
        let draft = Draft {
            room: RoomName::parse("r").expect("valid"),
            ts: 0,
            what: What::Joined {
                name: Name::guest(id),
                from_id: "c1".into(),
            },
        };
        Arc::new(draft.into_event(id))
    }

    fn ids(events: &[Arc<Event>]) -> Vec<u64> {
        events.iter().filter_map(|e| e.id()).collect()
    }

    #[test]
    fn merged_reads_are_in_id_order_the_oldest_after_since_or_else_the_newest() {
        let rooms = || vec![event(5), event(2), event(9), event(7)];
        assert_eq!(ids(&merge(rooms(), Some(1), 3)), [2, 5, 7]);
        assert_eq!(ids(&merge(rooms(), None, 3)), [5, 7, 9]);
        assert_eq!(ids(&merge(rooms(), None, usize::MAX)), [2, 5, 7, 9]);
    }
}
