//! What the hub puts in each member's queue, and the bound it keeps there.
//!
//! An `Outbound` item is one event, a shared *run* of events (one slot and at
//! most one writer wake-up for many events), a backlog for replay, or the
//! goodbye. `Hangup` is the queue's other half: the count of events waiting
//! (which `--send-buffer` bounds), the slow flag, the socket to shut, and the
//! writer to nudge. The hub counts in; the consumer counts out (`took`) for
//! every item it receives.

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;

use crate::admission::Admission;
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
    /// The server is shutting down: say goodbye (WebSocket close 1001) and end.
    GoingAway,
}

impl Outbound {
    /// The events this item carries, oldest first (none for `GoingAway`).
    pub fn events(&self) -> &[Arc<Event>] {
        match self {
            Outbound::Event(event) => std::slice::from_ref(event),
            Outbound::Run(run, from) => run.0.get(*from as usize..).unwrap_or_default(),
            Outbound::Backlog(backlog) => &backlog.0,
            Outbound::GoingAway => &[],
        }
    }

    /// Hands over each event it carries, oldest first: moved where the item
    /// owns them, cloned only out of a shared run.
    pub fn for_each_event(self, f: impl FnMut(Arc<Event>)) {
        match self {
            Outbound::Event(event) => std::iter::once(event).for_each(f),
            Outbound::Run(run, from) => run.0.iter().skip(from as usize).cloned().for_each(f),
            Outbound::Backlog(backlog) => backlog.0.into_iter().for_each(f),
            Outbound::GoingAway => {}
        }
    }

    /// How many events it counts for against `--send-buffer`.
    pub(super) fn counted(&self) -> usize {
        match self {
            Outbound::Event(_) | Outbound::Backlog(_) => 1,
            Outbound::Run(..) => self.events().len(),
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
    pub(super) fn part_from(run: &Arc<Run>, from: usize) -> Option<Outbound> {
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
    pub(super) run: u64,
    pub(super) offset: usize,
}

impl RunPosition {
    /// A seat whose own `joined` an engine has yet to sequence: it gets
    /// nothing until then (`Hub::seated`), as with the memory engine,
    /// where a member's first event in a room is its own `joined`.
    pub(super) const WAITING: RunPosition = RunPosition {
        run: u64::MAX,
        offset: usize::MAX,
    };

    /// Whether it is `WAITING`.
    pub(super) fn is_waiting(self) -> bool {
        self.run == RunPosition::WAITING.run
    }

    /// Where the member's part of run `number` begins.
    pub(super) fn start_in(self, number: u64) -> usize {
        if self.run == number || self.is_waiting() {
            self.offset
        } else {
            0
        }
    }
}

/// How the hub reaches a connection beyond its queue: to mark it too slow and
/// wake its threads, or to cut it when even a goodbye will not fit.
pub struct Hangup {
    too_slow: AtomicBool,
    /// Events in the queue, which `--send-buffer` bounds: one slot can carry
    /// a whole run, so the bound counts events, not slots. The hub adds an
    /// item's events before it sends it; the consumer takes them off as it
    /// receives it (`took`).
    pub(super) queued: AtomicUsize,
    /// `--send-buffer`: the most events `queued` may reach.
    pub(super) bound: usize,
    socket: Option<Arc<TcpStream>>,
    /// What dropping it as slow shuts on `socket`: reading only, where the
    /// writer still owes a goodbye (WebSocket's close 1008), or both ways,
    /// which also wakes a writer blocked on the peer (SSE owes nothing).
    on_slow: Shutdown,
    /// The writer thread, once it has said so: the hub nudges it awake when
    /// its queue passes half full while it lingers (`transport::Pace`).
    writer: OnceLock<Thread>,
    /// Where the hub counts members whose queue lags (`lags_at`), set
    /// when it takes the connection in (`Hub::connect`).
    pub(super) admission: OnceLock<Arc<Admission>>,
}

impl Hangup {
    /// A hangup for a connection on `socket` (`None` for transports whose
    /// threads notice a closed queue on their own, like gRPC), whose queue
    /// may hold `bound` events (`--send-buffer`).
    ///
    /// The queue itself is an unbounded channel: this count is its bound. Every
    /// item counts for at least one event but `GoingAway`, so it never holds
    /// more than `bound + 1` items, and it allocates slots as it fills, in
    /// blocks of 31, instead of `bound` slots up front, which a bounded
    /// channel allocates for every idle connection (`docs/performance.md`).
    pub fn new(socket: Option<Arc<TcpStream>>, bound: usize) -> Arc<Hangup> {
        Hangup::build(socket, bound, Shutdown::Read)
    }

    /// A hangup for a stream that owes a slow peer no goodbye (SSE): dropped
    /// as slow, its socket is shut both ways at once, so the peer sees the end
    /// now and a write blocked on it fails now.
    pub fn cut_when_slow(socket: Arc<TcpStream>, bound: usize) -> Arc<Hangup> {
        Hangup::build(Some(socket), bound, Shutdown::Both)
    }

    fn build(socket: Option<Arc<TcpStream>>, bound: usize, on_slow: Shutdown) -> Arc<Hangup> {
        Arc::new(Hangup {
            too_slow: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            bound,
            socket,
            on_slow,
            writer: OnceLock::new(),
            admission: OnceLock::new(),
        })
    }

    /// Adds `count` events to the queue's count; returns the new count.
    pub(super) fn count_in(&self, count: usize) -> usize {
        let before = self.queued.fetch_add(count, Ordering::AcqRel);
        let after = before + count;
        if !self.lags_at(before) && self.lags_at(after) {
            if let Some(admission) = self.admission.get() {
                admission.lags();
            }
        }
        after
    }

    /// Takes `count` events off the queue's count.
    pub(super) fn count_out(&self, count: usize) {
        let before = self.queued.fetch_sub(count, Ordering::AcqRel);
        if self.lags_at(before) && !self.lags_at(before - count) {
            if let Some(admission) = self.admission.get() {
                admission.caught_up();
            }
        }
    }

    /// Whether a queue of `queued` events lags: more than a quarter full.
    /// (Half full is when the hub nudges its writer; new members stop at a
    /// quarter, while the joins already under way still fit.)
    pub(super) fn lags_at(&self, queued: usize) -> bool {
        queued * 4 > self.bound
    }

    /// Called by the connection's writer thread: lets the hub cut its linger
    /// short when its queue fills (see `nudge`).
    pub fn writer_is_current_thread(&self) {
        let _ = self.writer.set(std::thread::current()); // set once; later calls change nothing
    }

    /// Wakes a lingering writer early. Cheap when it is not parked: `unpark`
    /// then only marks a token, with no system call.
    pub(super) fn nudge(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }

    /// Called by the consumer for every item it receives from its queue:
    /// those events no longer count against `--send-buffer`.
    pub fn took(&self, item: &Outbound) {
        self.count_out(item.counted());
    }

    /// Whether the hub dropped this connection as a slow consumer.
    pub fn is_too_slow(&self) -> bool {
        self.too_slow.load(Ordering::Acquire)
    }

    /// Marks the connection too slow and wakes its threads: `shutdown` never
    /// blocks. For WebSocket it shuts reading only, and leaves the writing
    /// side to the writer, which still owes the peer a close 1008 frame.
    pub(super) fn drop_as_slow(&self) {
        self.too_slow.store(true, Ordering::Release);
        if let Some(socket) = &self.socket {
            let _ = socket.shutdown(self.on_slow); // already closed is fine
        }
    }

    /// Ends the connection without a goodbye.
    pub(super) fn cut(&self) {
        if let Some(socket) = &self.socket {
            let _ = socket.shutdown(Shutdown::Both); // already closed is fine
        }
    }
}

impl Drop for Hangup {
    /// A member gone while its queue lagged no longer lags.
    fn drop(&mut self) {
        let queued = *self.queued.get_mut();
        if self.lags_at(queued) {
            if let Some(admission) = self.admission.get() {
                admission.caught_up();
            }
        }
    }
}
