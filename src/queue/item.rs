//! What the hub puts in a member's queue: an `Outbound` item is one event, a
//! shared *run* of events (one slot and at most one writer wake-up for many
//! events), a backlog for replay, or the goodbye; and where in the hub's
//! runs a member joined (`RunPosition`). How many events an item counts for
//! against the queue's bound is `Outbound::counted`.

use std::sync::Arc;
use std::time::Instant;

use crate::protocol::Event;

/// What the hub puts in a subscriber's queue.
#[derive(Debug)]
pub enum Outbound {
    /// One event.
    Event(Arc<Event>),
    /// A run of events to one room (see the module doc), shared by all its
    /// members, from the given index on: a member that joined during the
    /// round missed the events before its own `joined`.
    Run(Arc<Run>, u32),
    /// Replayed history, in id order: it counts as one event however long it
    /// is, so a replay larger than `--send-buffer` does not count as a slow
    /// consumer. Boxed, so that `Outbound`, and with it every queue slot,
    /// stays at 16 bytes.
    Backlog(Box<Backlog>),
    /// The rest of a write the hub began itself (`queue::through`): these
    /// bytes go out before anything else.
    Unfinished(Box<super::Unfinished>),
    /// The server is shutting down: say goodbye (WebSocket close 1001) and end.
    GoingAway,
}

impl Outbound {
    /// The events this item carries, oldest first (none for `GoingAway`,
    /// nor for `Unfinished`, which carries bytes).
    pub fn events(&self) -> &[Arc<Event>] {
        match self {
            Outbound::Event(event) => std::slice::from_ref(event),
            Outbound::Run(run, from) => run.0.get(*from as usize..).unwrap_or_default(),
            Outbound::Backlog(backlog) => &backlog.0,
            Outbound::Unfinished(_) | Outbound::GoingAway => &[],
        }
    }

    /// Hands over each event it carries, oldest first: moved where the item
    /// owns them, cloned only out of a shared run.
    pub fn for_each_event(self, f: impl FnMut(Arc<Event>)) {
        match self {
            Outbound::Event(event) => std::iter::once(event).for_each(f),
            Outbound::Run(run, from) => run.0.iter().skip(from as usize).cloned().for_each(f),
            Outbound::Backlog(backlog) => backlog.0.into_iter().for_each(f),
            Outbound::Unfinished(_) | Outbound::GoingAway => {}
        }
    }

    /// When its oldest event was made, for a live item (an event or a run):
    /// how late a writer is to it says how busy the server is
    /// (`pace`). None for replayed history, which is old by design.
    pub fn born(&self) -> Option<Instant> {
        match self {
            Outbound::Event(_) | Outbound::Run(..) => self.events().first().map(|e| e.born()),
            Outbound::Backlog(_) | Outbound::Unfinished(_) | Outbound::GoingAway => None,
        }
    }

    /// How many events it counts for against `--send-buffer`.
    pub(crate) fn counted(&self) -> usize {
        match self {
            Outbound::Event(_) | Outbound::Backlog(_) => 1,
            Outbound::Run(..) => self.events().len(),
            Outbound::Unfinished(rest) => rest.events,
            Outbound::GoingAway => 0,
        }
    }
}

/// Events published to one room in one round, oldest first.
#[derive(Debug)]
pub struct Run(pub Vec<Arc<Event>>);

impl Run {
    /// What a member gets of `run` from its event `from` on: nothing, a
    /// plain event when one is left, or its share of the run.
    pub(crate) fn part_from(run: &Arc<Run>, from: usize) -> Option<Outbound> {
        match run.0.len().checked_sub(from)? {
            0 => None,
            1 => Some(Outbound::Event(Arc::clone(&run.0[from]))),
            _ => Some(Outbound::Run(Arc::clone(run), from as u32)),
        }
    }
}

/// Replayed events, oldest first.
#[derive(Debug)]
pub struct Backlog(pub Vec<Arc<Event>>);

/// Where a member joined a room, in the hub's runs: during run `run`, after
/// its first `offset` events. A member that joined before the current run
/// (`run` older) gets all of it.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunPosition {
    pub(crate) run: u64,
    pub(crate) offset: usize,
}

impl RunPosition {
    /// A seat whose own `joined` an engine has yet to sequence: it gets
    /// nothing until then (`Hub::seated`), as with the memory engine,
    /// where a member's first event in a room is its own `joined`.
    pub(crate) const WAITING: RunPosition = RunPosition {
        run: u64::MAX,
        offset: usize::MAX,
    };

    /// Whether it is `WAITING`.
    pub(crate) fn is_waiting(self) -> bool {
        self.run == RunPosition::WAITING.run
    }

    /// Where the member's part of run `number` begins.
    pub(crate) fn start_in(self, number: u64) -> usize {
        if self.run == number || self.is_waiting() {
            self.offset
        } else {
            0
        }
    }
}
