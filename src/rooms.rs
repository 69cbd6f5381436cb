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
mod tests {
    use super::*;

    use crate::protocol::Body;
    use crate::queue::RunPosition;
    use crate::room::Name;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).expect("test room names are valid")
    }

    fn message(room_name: &str, id: u64, text: &str) -> Arc<Event> {
        Arc::new(Event::new(Body::Message {
            room: room(room_name),
            id,
            from: Name::guest(1),
            from_id: "c1".into(),
            text: text.to_owned(),
            ts: 0,
        }))
    }

    fn member(n: u64) -> RoomMember {
        let (queue, _) = crate::queue::bounded(16, crate::queue::OnSlow::Nothing);
        RoomMember {
            client: ClientId(n),
            queue,
            joined_at: RunPosition::default(),
        }
    }

    fn retention(history: usize, max_history_bytes: usize) -> Retention {
        Retention {
            history,
            max_history_bytes,
            ..Retention::default()
        }
    }

    /// Records `text` into `name` as the next id; returns how many were evicted.
    fn publish(rooms: &mut Rooms, next_id: &mut u64, name: &str, text: &str) -> u64 {
        *next_id += 1;
        rooms.create(&room(name)).expect("under the room limit");
        let id = *next_id;
        let (_, evicted) = rooms
            .record(&room(name), || message(name, id, text))
            .expect("the room exists");
        evicted
    }

    /// Every kept id, across rooms, in order; checks the accounts on the way.
    fn kept_ids(rooms: &Rooms) -> Vec<u64> {
        let mut ids: Vec<u64> = rooms
            .iter()
            .flat_map(|(_, r)| r.since(0).filter_map(|e| e.id()))
            .collect();
        ids.sort_unstable();
        let bytes: usize = rooms.iter().map(|(_, r)| r.history_bytes()).sum();
        assert_eq!(
            rooms.history_bytes(),
            bytes,
            "bytes are the sum of the rooms'"
        );
        assert_eq!(rooms.history_events(), ids.len(), "events are the sum too");
        ids
    }

    #[test]
    fn an_event_counts_for_all_its_encodings_and_a_room_for_its_slots() {
        let mut rooms = Rooms::new(retention(1000, usize::MAX));
        let mut id = 0;
        publish(&mut rooms, &mut id, "a", &"x".repeat(10_000));
        let held = rooms.history_bytes();
        // The text, and the JSON four times over (its own, a frame, the SSE
        // block, the text line), and a little more.
        assert!(held > 50_000 && held < 52_000, "{held}");
        publish(&mut rooms, &mut id, "b", "hi");
        assert_eq!(kept_ids(&rooms), [1, 2]);
    }

    #[test]
    fn the_per_room_cap_still_holds_and_what_it_drops_is_not_an_eviction() {
        let mut rooms = Rooms::new(retention(3, usize::MAX));
        let mut id = 0;
        for _ in 0..10 {
            assert_eq!(publish(&mut rooms, &mut id, "a", "hello"), 0);
        }
        assert_eq!(kept_ids(&rooms), [8, 9, 10]);
    }

    #[test]
    fn past_the_budget_the_hubs_oldest_events_go_first_whatever_their_room() {
        let text = "y".repeat(1000);
        let one = {
            let mut rooms = Rooms::new(retention(1000, usize::MAX));
            publish(&mut rooms, &mut 0, "a", &text);
            rooms.history_bytes()
        };
        let mut rooms = Rooms::new(retention(1000, 10 * one));
        let mut id = 0;
        let mut evicted = 0;
        for n in 0..100 {
            let name = ["a", "b", "b", "c"][n % 4];
            evicted += publish(&mut rooms, &mut id, name, &text);
            assert!(rooms.history_bytes() <= 10 * one);
        }
        let kept = kept_ids(&rooms);
        assert!(kept.len() >= 5, "{kept:?}");
        let newest: Vec<u64> = (100 - kept.len() as u64 + 1..=100).collect();
        assert_eq!(kept, newest, "the kept events are the newest");
        assert_eq!(evicted as usize + kept.len(), 100);
    }

    #[test]
    fn with_per_room_caps_too_each_eviction_takes_the_hubs_oldest_kept_event() {
        use std::collections::VecDeque;
        // A model: each room's ids under its cap; each eviction the smallest.
        const CAP: usize = 5;
        let mut model: HashMap<&str, VecDeque<u64>> = HashMap::new();
        let mut rooms = Rooms::new(retention(CAP, 60_000));
        let mut id = 0;
        let names = ["a", "b", "c", "d", "e", "f", "g"];
        let mut seed = 17u64;
        let mut evictions = 0;
        for n in 0..2000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let (name, size) = if n % 50 < 25 {
                ("a", 100) // a busy room, at its cap, with small messages
            } else {
                (
                    names[(seed >> 33) as usize % names.len()],
                    200 + (seed >> 40) as usize % 3000,
                )
            };
            let evicted = publish(&mut rooms, &mut id, name, &"m".repeat(size));
            let kept = model.entry(name).or_default();
            kept.push_back(id);
            if kept.len() > CAP {
                kept.pop_front();
            }
            for _ in 0..evicted {
                let (_, oldest) = model
                    .iter_mut()
                    .filter_map(|(name, ids)| ids.front().map(|&front| (front, name)))
                    .min()
                    .map(|(front, name)| (front, *name))
                    .expect("something to evict");
                model.get_mut(oldest).expect("in the model").pop_front();
            }
            evictions += evicted;
            let mut expected: Vec<u64> = model.values().flatten().copied().collect();
            expected.sort_unstable();
            assert_eq!(kept_ids(&rooms), expected, "after publish {n}");
            assert!(rooms.history_bytes() <= 60_000);
        }
        assert!(evictions > 500, "the budget was binding: {evictions}");
    }

    #[test]
    fn one_room_alone_cannot_hold_more_than_the_budget() {
        let budget = 100_000;
        let mut rooms = Rooms::new(retention(1000, budget));
        let mut id = 0;
        for _ in 0..50 {
            publish(&mut rooms, &mut id, "solo", &"z".repeat(5000));
            assert!(rooms.history_bytes() <= budget, "{}", rooms.history_bytes());
        }
        let kept = kept_ids(&rooms);
        assert_eq!(kept.last(), Some(&50));
        // An event bigger than the whole budget is not kept either.
        publish(&mut rooms, &mut id, "solo", &"w".repeat(budget));
        assert!(rooms.history_bytes() <= budget);
        assert!(
            !rooms.contains(&room("solo")),
            "no members, no history: gone"
        );
    }

    #[test]
    fn a_room_evicted_empty_stays_while_it_has_members() {
        let text = "v".repeat(2000);
        let mut rooms = Rooms::new(retention(1000, 30_000));
        rooms.join(&room("busy"), member(1)).expect("room for it");
        let mut id = 0;
        publish(&mut rooms, &mut id, "busy", &text);
        for _ in 0..20 {
            publish(&mut rooms, &mut id, "other", &text);
        }
        let busy = rooms
            .get(&room("busy"))
            .expect("a room with a member stays");
        assert_eq!(busy.history_len(), 0);
        assert_eq!(
            kept_ids(&rooms).first(),
            Some(&(id - kept_ids(&rooms).len() as u64 + 1))
        );
    }

    #[test]
    fn a_room_past_max_rooms_is_refused_and_rooms_that_exist_are_not() {
        let mut rooms = Rooms::new(Retention {
            max_rooms: 2,
            ..Retention::default()
        });
        rooms.join(&room("a"), member(1)).expect("first");
        rooms.create(&room("b")).expect("second");
        let refused = rooms.join(&room("c"), member(1)).expect_err("third");
        assert_eq!((refused.room, refused.max), (room("c"), 2));
        assert!(rooms.create(&room("c")).is_err());
        rooms.join(&room("a"), member(2)).expect("a exists");
        rooms.create(&room("b")).expect("b exists");
        assert_eq!(rooms.vacancies(), 0);
    }

    #[test]
    fn a_room_without_members_expires_after_its_last_use_and_one_with_members_never() {
        let expiry = Duration::from_secs(60);
        let mut rooms = Rooms::new(Retention {
            room_expiry: expiry,
            ..Retention::default()
        });
        let mut id = 0;
        let start = Instant::now();
        publish(&mut rooms, &mut id, "empty", "nobody here");
        rooms.join(&room("lived-in"), member(1)).expect("room");
        publish(&mut rooms, &mut id, "lived-in", "someone here");
        rooms.join(&room("left"), member(2)).expect("room");
        publish(&mut rooms, &mut id, "left", "soon empty");
        assert!(rooms.leave(&room("left"), ClientId(2)));

        assert_eq!(rooms.expire(start + expiry / 2), 0);
        assert_eq!(rooms.len(), 3);
        let late = Instant::now() + expiry;
        assert_eq!(rooms.expire(late), 2);
        assert!(rooms.contains(&room("lived-in")) && rooms.len() == 1);
        assert_eq!(kept_ids(&rooms), [2]);
        assert_eq!(rooms.expire(late + 10 * expiry), 0, "members keep it");
    }

    #[test]
    fn a_room_used_again_before_its_expiry_is_kept_for_another_expiry() {
        let expiry = Duration::from_millis(200);
        let mut rooms = Rooms::new(Retention {
            room_expiry: expiry,
            ..Retention::default()
        });
        let mut id = 0;
        publish(&mut rooms, &mut id, "r", "first");
        // Time passes between the two uses (this is the clock, not a wait
        // for something to happen).
        std::thread::sleep(expiry / 2);
        publish(&mut rooms, &mut id, "r", "again");
        let used = Instant::now();
        // Due by its filing, not by its last use: refiled, not forgotten.
        assert_eq!(rooms.expire(used + expiry / 4), 0);
        assert!(rooms.contains(&room("r")));
        assert_eq!(rooms.idle.len(), 1, "one entry per room");
        assert_eq!(rooms.expire(used + expiry), 1);
        assert!(rooms.is_empty() && rooms.idle.is_empty());
        assert_eq!(rooms.history_bytes(), 0);
    }

    #[test]
    fn joining_an_idle_room_stops_its_expiry() {
        let mut rooms = Rooms::new(Retention::default());
        publish(&mut rooms, &mut 0, "r", "kept");
        assert_eq!(rooms.idle.len(), 1);
        rooms.join(&room("r"), member(1)).expect("exists");
        assert!(rooms.idle.is_empty());
        assert_eq!(
            rooms.expire(Instant::now() + Duration::from_secs(86_400)),
            0
        );
        rooms.leave(&room("r"), ClientId(1));
        assert_eq!(rooms.idle.len(), 1);
    }

    #[test]
    fn a_room_with_nothing_to_replay_is_forgotten_as_its_last_member_leaves() {
        let mut rooms = Rooms::new(Retention::default());
        rooms.join(&room("r"), member(1)).expect("room");
        rooms.leave(&room("r"), ClientId(1));
        assert!(rooms.is_empty());
        // With no expiry, history goes with the last member too.
        let mut rooms = Rooms::new(Retention {
            room_expiry: Duration::ZERO,
            ..Retention::default()
        });
        rooms.join(&room("r"), member(1)).expect("room");
        publish(&mut rooms, &mut 0, "r", "said");
        rooms.leave(&room("r"), ClientId(1));
        assert!(rooms.is_empty());
        assert_eq!((rooms.history_bytes(), rooms.history_events()), (0, 0));
        publish(&mut rooms, &mut 1, "s", "to nobody");
        assert!(rooms.is_empty(), "kept for nobody");
    }

    #[test]
    fn sweeps_come_a_sixteenth_of_the_expiry_apart_within_bounds() {
        let every = |secs: u64| {
            Retention {
                room_expiry: Duration::from_secs(secs),
                ..Retention::default()
            }
            .sweep_interval()
        };
        assert_eq!(every(0), None);
        assert_eq!(every(16), Some(Duration::from_secs(1)));
        assert_eq!(every(3600), Some(SWEEP_MAX));
        assert_eq!(every(u64::MAX), Some(SWEEP_MAX));
        let short = Retention {
            room_expiry: Duration::from_millis(1),
            ..Retention::default()
        };
        assert_eq!(short.sweep_interval(), Some(SWEEP_MIN));
    }
}
