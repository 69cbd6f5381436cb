//! Every room, and how much the hub may keep for them: `Rooms`, owned by the
//! hub thread like everything else it holds (no lock: the thread is the lock).
//!
//! Without ceilings, any peer that may publish could make the server hold
//! whatever it liked: tens of thousands of rooms, each with `--history`
//! events of up to `--max-message-size`, kept for ever. Three ceilings bound
//! it (`docs/limits.md` has the defaults and why a 1 GB server survives them):
//!
//! - **Rooms**: at most `--max-rooms` exist at once. Creating one more (a
//!   publish or a join into a new room) is refused with `RoomLimit`: REST
//!   answers `503`, a connection gets an `unavailable` error event and lives
//!   on, and the rooms that exist keep working.
//! - **History memory**: all rooms' history together stays within
//!   `--max-history-bytes`. History is a replay buffer, so nobody is refused
//!   for it: past the budget, the oldest events of the whole hub are dropped
//!   first, whichever room they are in. One room alone can therefore never
//!   hold more than the budget either. The per-room `--history` count stays.
//! - **Time**: a room without members is forgotten, history and all,
//!   `--room-expiry` after it was last used (its last member left, or its
//!   last event). A room with members never expires.
//!
//! **Counting honestly.** A kept event counts for what it may come to hold
//! once every writer has cached its encodings (`Event::held_bytes`: the event,
//! its text, its JSON, both WebSocket frames and its SSE block), plus its slot
//! in the room's history. Counted when the event is kept, before any writer
//! has encoded it, so the budget is a ceiling on what history can grow to,
//! not on what it holds at the moment.
//!
//! **Finding the oldest event.** Ids increase across the whole hub, and each
//! room's history is in id order, so the hub-wide oldest event is the oldest
//! event of some room. `by_oldest` files every room that keeps history under
//! the id of its oldest event, or an older one: the per-room `--history` cap
//! drops a busy room's oldest event at every publish, and refiling it each
//! time would be two B-tree operations per publish. A room is filed once,
//! with its first kept event; `evict_over_budget` refiles a room it finds
//! stale at the front. So a publish costs no B-tree work until history is
//! over budget, and then O(log rooms) per eviction, on a map no larger than
//! `--max-rooms` whatever the number of events kept; never a scan. (A queue
//! of every event in the order kept would find the oldest in O(1), but the
//! events the cap drops from its middle would pile up behind live ones until
//! a full scan cleared them: a pause on the hub thread.)
//!
//! **Expiry** needs no timer per room: rooms without members are filed in
//! `idle` by the time they became idle, and the hub calls `expire` from its
//! loop every `Retention::sweep_interval`. A room used again while filed
//! (a publish, or a join then a leave) is not refiled at each use: when its
//! entry comes due, it is filed again under its last use, so each room has
//! exactly one entry.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::{ClientId, Event};
use crate::room::{Idle, Room, RoomMember, RoomName};

/// `--history`: events kept per room.
pub const DEFAULT_HISTORY: usize = 1000;
/// `--max-rooms`.
pub const DEFAULT_MAX_ROOMS: usize = 10_000;
/// `--max-history-bytes`: 256 MiB.
pub const DEFAULT_MAX_HISTORY_BYTES: usize = 256 * 1024 * 1024;
/// `--room-expiry`, in seconds: an hour.
pub const DEFAULT_ROOM_EXPIRY_SECS: u64 = 3600;
/// `--join-notices-max`: rooms up to this many members announce joins and leaves.
pub const DEFAULT_JOIN_NOTICES_MAX: usize = 1000;

/// The shortest time between two expiry sweeps.
const SWEEP_MIN: Duration = Duration::from_millis(10);
/// The longest: how late a room may be forgotten, at most.
const SWEEP_MAX: Duration = Duration::from_secs(30);

/// What the hub keeps, for how long, and which rooms announce their members
/// (from `Config::retention`).
#[derive(Clone, Debug)]
pub struct Retention {
    /// `--history`: events kept per room.
    pub history: usize,
    /// `--max-rooms`: rooms that may exist at once.
    pub max_rooms: usize,
    /// `--max-history-bytes`: what all rooms' history may hold together.
    pub max_history_bytes: usize,
    /// `--room-expiry`: how long a room without members keeps its history
    /// after its last use; zero forgets it as its last member leaves.
    pub room_expiry: Duration,
    /// `--join-notices-max`: a room with more members than this sends no
    /// `joined`/`left` notices, so that a crowd joining costs N, not N²/2,
    /// deliveries; 0 turns notices off everywhere.
    pub join_notices_max: usize,
}

impl Default for Retention {
    /// The command line's defaults.
    fn default() -> Retention {
        Retention {
            history: DEFAULT_HISTORY,
            max_rooms: DEFAULT_MAX_ROOMS,
            max_history_bytes: DEFAULT_MAX_HISTORY_BYTES,
            room_expiry: Duration::from_secs(DEFAULT_ROOM_EXPIRY_SECS),
            join_notices_max: DEFAULT_JOIN_NOTICES_MAX,
        }
    }
}

impl Retention {
    /// How often the hub calls `Rooms::expire`: a sixteenth of the expiry,
    /// so a room outlives it by that much at most, between 10 ms and 30 s.
    /// `None` when rooms without members are forgotten at once.
    pub fn sweep_interval(&self) -> Option<Duration> {
        if self.room_expiry.is_zero() {
            return None;
        }
        Some((self.room_expiry / 16).clamp(SWEEP_MIN, SWEEP_MAX))
    }
}

/// A room that could not be created: `--max-rooms` rooms exist. The peer is
/// told (REST `503`, an `unavailable` error event); its connection lives.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "#{room} cannot be created: the server holds its limit of {max} rooms (--max-rooms); \
     use a room that exists, or try again once unused rooms expire"
)]
pub struct RoomLimit {
    /// The room that was not created.
    pub room: RoomName,
    /// `--max-rooms`.
    pub max: usize,
}

impl RoomLimit {
    /// The error code peers get (REST body, `error` event, gRPC `UNAVAILABLE`).
    pub const CODE: &'static str = "unavailable";

    /// The `error` event that tells a connection.
    pub fn to_event(&self) -> Event {
        Event::error(Self::CODE, self.to_string())
    }
}

/// Every room, with the hub-wide accounts of their history (see the module doc).
pub struct Rooms {
    rooms: HashMap<RoomName, Room>,
    /// Rooms that keep history, by the id of their oldest kept event or an
    /// older one (`Room::filed_oldest`; see `evict_over_budget`).
    by_oldest: BTreeMap<u64, RoomName>,
    /// Rooms without members, by the time they are filed under (`Idle::filed`).
    idle: BTreeSet<(Instant, RoomName)>,
    retention: Retention,
    /// What every room's history holds, in bytes and in events.
    history_bytes: usize,
    history_events: usize,
}

impl Rooms {
    /// No rooms yet.
    pub fn new(retention: Retention) -> Rooms {
        Rooms {
            rooms: HashMap::new(),
            by_oldest: BTreeMap::new(),
            idle: BTreeSet::new(),
            retention,
            history_bytes: 0,
            history_events: 0,
        }
    }

    /// The room called `name`, if it exists.
    pub fn get(&self, name: &RoomName) -> Option<&Room> {
        self.rooms.get(name)
    }

    /// The members of `name`, to change a seat (never to add or remove one:
    /// `join` and `leave` do that, and keep the room's life in step).
    pub fn seats_mut(&mut self, name: &RoomName) -> Option<&mut [RoomMember]> {
        self.rooms.get_mut(name).map(|r| r.members.as_mut_slice())
    }

    /// Whether a join or a leave in `name` is announced: only while the room,
    /// counting the member who comes or goes, is within `--join-notices-max`.
    pub fn announces(&self, name: &RoomName, counting_the_member: usize) -> bool {
        let members = self.rooms.get(name).map_or(0, |r| r.members.len());
        members + counting_the_member <= self.retention.join_notices_max
    }

    /// Whether a room called `name` exists.
    pub fn contains(&self, name: &RoomName) -> bool {
        self.rooms.contains_key(name)
    }

    /// Every room, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&RoomName, &Room)> {
        self.rooms.iter()
    }

    /// How many rooms exist.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether no room exists.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// How often the hub should call `expire` (see `Retention::sweep_interval`).
    pub fn sweep_interval(&self) -> Option<Duration> {
        self.retention.sweep_interval()
    }

    /// How many more rooms may be created now.
    pub fn vacancies(&self) -> usize {
        self.retention.max_rooms.saturating_sub(self.rooms.len())
    }

    /// What all rooms' history holds, in bytes (see `Event::held_bytes`).
    pub fn history_bytes(&self) -> usize {
        self.history_bytes
    }

    /// How many events all rooms' history holds.
    pub fn history_events(&self) -> usize {
        self.history_events
    }

    /// Makes sure `name` exists, creating it if `--max-rooms` allows. The
    /// caller then joins it or records into it: a room left with neither
    /// members nor history is forgotten at once.
    pub fn create(&mut self, name: &RoomName) -> Result<(), RoomLimit> {
        if self.rooms.contains_key(name) {
            return Ok(());
        }
        if self.vacancies() == 0 {
            return Err(RoomLimit {
                room: name.clone(),
                max: self.retention.max_rooms,
            });
        }
        self.rooms.insert(name.clone(), Room::new());
        Ok(())
    }

    /// Adds `member` to `name`, creating the room if `--max-rooms` allows.
    pub fn join(&mut self, name: &RoomName, member: RoomMember) -> Result<(), RoomLimit> {
        self.create(name)?;
        let room = self.rooms.get_mut(name).expect("created above");
        if let Some(idle) = room.idle.take() {
            self.idle.remove(&(idle.filed, name.clone()));
        }
        room.members.push(member);
        Ok(())
    }

    /// Takes `client` out of `name`; says whether it was there. A room left
    /// without members starts to expire, or is forgotten at once if it keeps
    /// no history (or `--room-expiry` is zero).
    pub fn leave(&mut self, name: &RoomName, client: ClientId) -> bool {
        let Some(room) = self.rooms.get_mut(name) else {
            return false;
        };
        let removed = room.remove(client);
        self.settle(name);
        removed
    }

    /// After a room was created for an event an engine keeps elsewhere:
    /// forgets it again if it has neither members nor history.
    pub fn release(&mut self, name: &RoomName) {
        self.settle(name);
    }

    /// Keeps the event `make` makes (a room event, with an id above every
    /// kept one) in the history of `name`, then drops the hub's oldest events
    /// while history is over `--max-history-bytes`. Returns the event and how
    /// many that dropped (what the per-room `--history` cap drops is not
    /// counted: it is the cap); `None`, without making the event, if the room
    /// does not exist, so no id is spent on it.
    pub fn record(
        &mut self,
        name: &RoomName,
        make: impl FnOnce() -> Arc<Event>,
    ) -> Option<(Arc<Event>, u64)> {
        let cap = self.retention.history;
        let room = self.rooms.get_mut(name)?;
        let event = make();
        if cap > 0 {
            let (bytes_before, events_before) = (room.history_bytes(), room.history_len());
            room.record(Arc::clone(&event), cap);
            self.history_bytes = self.history_bytes - bytes_before + room.history_bytes();
            self.history_events = self.history_events - events_before + room.history_len();
            if room.filed_oldest.is_none() {
                // Its first kept event. (What the cap drops later leaves the
                // room filed below its oldest event: see `evict_over_budget`.)
                room.filed_oldest = room.oldest_id();
                if let Some(oldest) = room.filed_oldest {
                    self.by_oldest.insert(oldest, name.clone());
                }
            }
        }
        if room.members.is_empty() {
            match &mut room.idle {
                // Used now: its expiry starts again (its entry in `idle` is
                // checked when it comes due).
                Some(idle) if cap > 0 => idle.since = Instant::now(),
                _ => self.settle(name),
            }
        }
        Some((event, self.evict_over_budget()))
    }

    /// Forgets the rooms without members whose last use is `--room-expiry`
    /// before `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> u64 {
        let expiry = self.retention.room_expiry;
        let due = |since: Instant| since.checked_add(expiry).is_some_and(|at| at <= now);
        let mut expired = 0;
        while let Some((filed, name)) = self.idle.first().cloned() {
            if !due(filed) {
                break; // filed in time order: nothing later is due either
            }
            self.idle.pop_first();
            let Some(idle) = self.rooms.get_mut(&name).and_then(|r| r.idle.as_mut()) else {
                continue; // cannot happen: a room leaves `idle` as it stops being idle
            };
            if due(idle.since) {
                self.forget(&name);
                expired += 1;
            } else {
                // Used since it was filed: file it again under its last use.
                idle.filed = idle.since;
                self.idle.insert((idle.since, name));
            }
        }
        expired
    }

    /// Forgets every room (at shutdown).
    pub fn clear(&mut self) {
        self.rooms.clear();
        self.by_oldest.clear();
        self.idle.clear();
        self.history_bytes = 0;
        self.history_events = 0;
    }

    /// Drops the hub's oldest events until history fits the budget; returns
    /// how many. A room left without history and without members goes too.
    ///
    /// A room is filed in `by_oldest` under the id of its oldest event *or
    /// an older one*: what the per-room cap drops does not refile it, so a
    /// publish costs no B-tree work. The first entry is still where the
    /// hub's oldest event is, once checked: every other room is filed at or
    /// below its own oldest id, so none holds an event older than the first
    /// entry's id. A first entry found stale is refiled under the room's
    /// oldest id and the search goes on; each refile makes up for cap drops
    /// already made, so it costs O(log rooms) per drop at most, once.
    fn evict_over_budget(&mut self) -> u64 {
        let mut evicted = 0;
        while self.history_bytes > self.retention.max_history_bytes {
            let Some((filed, name)) = self.by_oldest.pop_first() else {
                break; // nothing kept: cannot happen while bytes are counted
            };
            let Some(room) = self.rooms.get_mut(&name) else {
                continue; // cannot happen: `forget` takes a room out of `by_oldest`
            };
            let oldest = room.oldest_id();
            room.filed_oldest = oldest;
            if oldest != Some(filed) {
                // The cap dropped events since it was filed: refile it.
                if let Some(oldest) = oldest {
                    self.by_oldest.insert(oldest, name);
                }
                continue;
            }
            let bytes_before = room.history_bytes();
            room.drop_oldest();
            self.history_bytes = self.history_bytes - bytes_before + room.history_bytes();
            self.history_events -= 1;
            evicted += 1;
            room.filed_oldest = room.oldest_id();
            match room.filed_oldest {
                Some(next) => {
                    self.by_oldest.insert(next, name);
                }
                None => self.settle(&name),
            }
        }
        evicted
    }

    /// After a change to a room without members: forgets it if it keeps
    /// nothing to replay (or expiry is zero), else notes it was used now,
    /// filing it in `idle` if it is not there yet.
    fn settle(&mut self, name: &RoomName) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        if !room.members.is_empty() {
            return;
        }
        if room.history_len() == 0 || self.retention.room_expiry.is_zero() {
            self.forget(name);
            return;
        }
        let now = Instant::now();
        match &mut room.idle {
            Some(idle) => idle.since = now, // its entry is checked when it comes due
            None => {
                room.idle = Some(Idle {
                    since: now,
                    filed: now,
                });
                self.idle.insert((now, name.clone()));
            }
        }
    }

    /// The only code that removes a room: it leaves every index and the
    /// accounts with it.
    fn forget(&mut self, name: &RoomName) {
        let Some(room) = self.rooms.remove(name) else {
            return;
        };
        if let Some(filed) = room.filed_oldest {
            self.by_oldest.remove(&filed);
        }
        if let Some(idle) = &room.idle {
            self.idle.remove(&(idle.filed, name.clone()));
        }
        self.history_bytes -= room.history_bytes();
        self.history_events -= room.history_len();
    }
}

#[cfg(test)]
mod tests;
