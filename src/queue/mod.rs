//! One subscriber's queue: **bounded at `--send-buffer` events**, made in one
//! place (`bounded`), with the hub's end (`Queue`) and the writer's end
//! (`Inbox`).
//!
//! The hub never waits on it: `Queue::offer` puts an item in, or refuses it,
//! as Go's `select { case send <- m: default: }` does, and a refused member is
//! dropped. For a WebSocket or SSE member with nothing queued and a writer
//! that is not writing, `offer` writes the item to the socket itself, without
//! waiting (`through`): the writer thread is woken only for what does not fit. The bound counts events, not slots, because one slot can carry a
//! whole run of events; the queue keeps that count itself: `offer` counts in,
//! and the only way to use an item the writer received is `Inbox::open`,
//! which counts it out. No caller can forget either half.
//!
//! Who is dropped (`Queue::offer`):
//! - full (more than `--send-buffer` events) *and* its writer stuck in one
//!   write for `STUCK_WRITE`: the peer does not read (`NotQueued::Slow`, counted
//!   in `switchboard_slow_consumers_dropped_total`). A writer that has merely
//!   not run yet (the machine is busy) is not slow: its queue may grow on;
//! - past the hard ceiling, `CEILING_FACTOR` times the bound, whatever its
//!   writer does: the server as a whole is behind, and no peer may make it
//!   hold more (`NotQueued::Ceiling`, `switchboard_queue_ceiling_dropped_total`);
//! - a consumer that does not report its writes (gRPC, in-process) is judged
//!   by the bound alone, as before.
//!
//! The channel under it is crossbeam's *unbounded* one, so that an idle
//! connection holds one block of 31 slots, allocated as it fills, instead of
//! `--send-buffer` slots up front (`docs/performance.md`, memory per idle
//! connection); the count is the bound. It never holds more than the
//! ceiling's events plus one goodbye.
//!
//! Threads: the hub calls `offer`; the connection's writer (a WebSocket
//! writer, an SSE stream's thread, a gRPC stream) holds the `Inbox`.

mod item;
mod through;

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::admission::Admission;

pub use item::{Backlog, Outbound, Run, RunPosition};
pub use through::{Through, Unfinished};

use through::Wrote;

/// Past `CEILING_FACTOR × --send-buffer` events a member is dropped however
/// its writer fares: the memory bound. The events are shared with every other
/// member (a run is one slot), so what it costs is mostly the events it keeps
/// alive.
pub const CEILING_FACTOR: usize = 8;

/// How long a writer must have been inside one write before a full queue
/// counts as the peer's fault: a write to a socket with room returns in
/// microseconds; one that waits this long waits for the peer to read.
pub const STUCK_WRITE: Duration = Duration::from_millis(200);

/// A subscriber's queue of at most `events` events (`--send-buffer`): the
/// hub's end and the writer's end. `on_slow` says what dropping it does to
/// the connection's socket.
pub fn bounded(events: usize, on_slow: OnSlow) -> (Queue, Inbox) {
    bounded_with(events, on_slow, None)
}

/// A queue like `bounded`'s, whose events the hub writes through to the
/// socket itself when it can (`through`); the writer holds `Inbox::hold`
/// while it takes from the queue and writes.
pub fn writing_through(events: usize, on_slow: OnSlow, through: Through) -> (Queue, Inbox) {
    bounded_with(events, on_slow, Some(through))
}

fn bounded_with(events: usize, on_slow: OnSlow, through: Option<Through>) -> (Queue, Inbox) {
    let (sender, receiver) = crossbeam_channel::unbounded();
    let (socket, how) = match on_slow {
        OnSlow::Nothing => (None, Shutdown::Both),
        OnSlow::ShutReading(socket) => (Some(socket), Shutdown::Read),
        OnSlow::ShutBoth(socket) => (Some(socket), Shutdown::Both),
    };
    let state = Arc::new(Hangup {
        too_slow: AtomicBool::new(false),
        queued: AtomicUsize::new(0),
        bound: events,
        writing_since: AtomicU64::new(NOT_WRITING),
        writes_watched: AtomicBool::new(false),
        socket,
        on_slow: how,
        writer: OnceLock::new(),
        admission: OnceLock::new(),
        through,
    });
    let queue = Queue {
        sender,
        state: Arc::clone(&state),
    };
    (queue, Inbox { receiver, state })
}

/// What dropping a member as slow does to its connection.
pub enum OnSlow {
    /// Nothing: its consumer notices the closed queue by itself (gRPC, tests).
    Nothing,
    /// Shut the socket for reading only: the writer still owes the peer a
    /// goodbye (WebSocket's close 1008), and the reader wakes.
    ShutReading(Arc<TcpStream>),
    /// Shut it both ways at once: the stream owes a slow peer nothing (SSE),
    /// and a write blocked on the peer fails now.
    ShutBoth(Arc<TcpStream>),
}

/// Where `offer` put an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offered {
    /// In the queue, for the writer thread.
    Queued,
    /// On the socket already: the hub wrote it itself (`through`).
    WrittenThrough,
}

/// Why `offer` refused an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotQueued {
    /// Full, and the peer does not read.
    Slow,
    /// At the hard ceiling.
    Ceiling,
    /// The writer's end is gone.
    Gone,
}

/// The hub's end of a subscriber's queue (one clone per room it is in).
#[derive(Clone)]
pub struct Queue {
    sender: Sender<Queued>,
    state: Arc<Hangup>,
}

impl Queue {
    /// Writes `item` through to the socket, or puts it in the queue, or says
    /// why not (see the module doc). Never waits. Nudges a lingering writer
    /// once the queue is half full.
    pub fn offer(&self, item: Outbound) -> Result<Offered, NotQueued> {
        let Some(through) = &self.state.through else {
            return self.enqueue(item);
        };
        // Under the lock, so that nothing can come between (`through`).
        let Some(_held) = through.try_hold() else {
            return self.enqueue(item); // its writer is writing
        };
        if !self.sender.is_empty() || self.state.too_slow.load(Ordering::Acquire) {
            return self.enqueue(item); // what is queued goes first
        }
        match through.write(&item) {
            Wrote::All => Ok(Offered::WrittenThrough),
            Wrote::Nothing => self.enqueue(item),
            Wrote::Part(rest) => self.enqueue(Outbound::Unfinished(Box::new(rest))),
        }
    }

    fn enqueue(&self, item: Outbound) -> Result<Offered, NotQueued> {
        let state = &*self.state;
        let count = item.counted();
        // Counted before the send, so that the writer's count out cannot come first.
        let queued = state.count_in(count);
        let refused = if queued > state.bound * CEILING_FACTOR {
            Some(NotQueued::Ceiling)
        } else if queued > state.bound && state.peer_is_stuck() {
            Some(NotQueued::Slow)
        } else {
            None
        };
        let sent = match refused {
            Some(why) => Err(why),
            None => self.sender.send(Queued(item)).map_err(|_| NotQueued::Gone),
        };
        match sent {
            Ok(()) if queued * 2 > state.bound => state.nudge(),
            Ok(()) => {}
            Err(_) => state.count_out(count),
        }
        sent.map(|()| Offered::Queued)
    }

    /// Queues the goodbye (shutdown), outside the count; if even that cannot
    /// be queued, cuts the connection.
    pub fn say_goodbye(&self) {
        if self.sender.send(Queued(Outbound::GoingAway)).is_err() {
            self.state.cut();
        }
    }

    /// The bound, in events (`--send-buffer`).
    pub fn bound(&self) -> usize {
        self.state.bound
    }

    /// Marks the member too slow and wakes its threads: `shutdown` never
    /// blocks. For WebSocket it shuts reading only, and leaves the writing
    /// side to the writer, which still owes the peer a close 1008 frame.
    pub fn drop_as_slow(&self) {
        self.state.too_slow.store(true, Ordering::Release);
        if let Some(socket) = &self.state.socket {
            let _ = socket.shutdown(self.state.on_slow); // already closed is fine
        }
    }

    /// Where the hub counts members whose queue lags (`Hangup::lags_at`):
    /// set once, as it takes the connection in.
    pub(crate) fn report_lag_to(&self, admission: &Arc<Admission>) {
        let _ = self.state.admission.set(Arc::clone(admission)); // set once
    }

    /// Events waiting now.
    pub fn queued(&self) -> usize {
        self.state.queued.load(Ordering::Acquire)
    }
}

/// An item as it waits in the queue: only `Inbox::open` turns it into the
/// `Outbound` it carries, and counts it out.
pub struct Queued(Outbound);

/// The writer's end of a subscriber's queue.
pub struct Inbox {
    receiver: Receiver<Queued>,
    state: Arc<Hangup>,
}

impl Inbox {
    /// The channel, to wait on it in a `select!` beside other things; open
    /// what it gives with `open`.
    pub fn channel(&self) -> &Receiver<Queued> {
        &self.receiver
    }

    /// The item in `queued`, counted out of the queue's bound.
    pub fn open(&self, queued: Queued) -> Outbound {
        self.state.count_out(queued.0.counted());
        queued.0
    }

    /// The next item, if one is waiting.
    pub fn try_recv(&self) -> Result<Outbound, TryRecvError> {
        self.receiver.try_recv().map(|queued| self.open(queued))
    }

    /// Every item until the hub lets go of the queue (blocking).
    pub fn iter(&self) -> impl Iterator<Item = Outbound> + '_ {
        self.receiver.iter().map(|queued| self.open(queued))
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.receiver.is_empty()
    }

    /// Events waiting now.
    pub fn queued(&self) -> usize {
        self.state.queued.load(Ordering::Acquire)
    }

    /// The bound, in events (`--send-buffer`).
    pub fn bound(&self) -> usize {
        self.state.bound
    }

    /// For a queue the hub writes through: the socket's write lock, held
    /// while taking from the queue and writing what was taken (see
    /// `through`). None for other queues.
    pub fn hold(&self) -> Option<std::sync::MutexGuard<'_, ()>> {
        self.state.through.as_ref().map(Through::hold)
    }

    /// Whether the hub dropped this member as a slow consumer.
    pub fn is_too_slow(&self) -> bool {
        self.state.too_slow.load(Ordering::Acquire)
    }

    /// Called by the writer thread that holds this inbox and writes to a
    /// socket: the hub may then wake it from a linger (`transport::Pace`), and
    /// judges it by its writes (`writing`), not by its queue alone.
    pub fn writer_is_current_thread(&self) {
        let _ = self.state.writer.set(std::thread::current()); // set once
        self.state.writes_watched.store(true, Ordering::Release);
    }

    /// Marks one write to the socket, from now until the guard is dropped:
    /// a full queue whose writer has been inside one write for
    /// `STUCK_WRITE` is the peer's fault.
    pub fn writing(&self) -> Writing<'_> {
        self.state
            .writing_since
            .store(micros_since_start(), Ordering::Release);
        Writing(&self.state)
    }
}

/// One write in progress (`Inbox::writing`).
pub struct Writing<'a>(&'a Hangup);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.writing_since.store(NOT_WRITING, Ordering::Release);
    }
}

/// `writing_since` when no write is in progress.
const NOT_WRITING: u64 = u64::MAX;

/// Microseconds since the first call: the clock `writing_since` is on.
fn micros_since_start() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// What both ends share: the count and its bound, the slow flag, the socket
/// to shut, the writer to nudge and how long it has been writing.
struct Hangup {
    too_slow: AtomicBool,
    /// Events in the queue: the hub adds an item's events before it sends
    /// it; the writer takes them off as it opens it.
    queued: AtomicUsize,
    /// `--send-buffer`: the most events `queued` may reach while the writer
    /// is stuck.
    bound: usize,
    /// When the write in progress began (`micros_since_start`), or
    /// `NOT_WRITING`.
    writing_since: AtomicU64,
    /// Whether the writer reports its writes; if not, a full queue is slow.
    writes_watched: AtomicBool,
    socket: Option<Arc<TcpStream>>,
    on_slow: Shutdown,
    /// The writer thread, once it has said so: the hub nudges it awake when
    /// its queue passes half full while it lingers (`pace::Pace`).
    writer: OnceLock<Thread>,
    /// Where the hub counts members whose queue lags, set when it takes the
    /// connection in (`Hub::connect`).
    admission: OnceLock<Arc<Admission>>,
    /// The socket the hub may write to itself (WebSocket and SSE members).
    through: Option<Through>,
}

impl Hangup {
    /// Adds `count` events to the queue's count; returns the new count.
    fn count_in(&self, count: usize) -> usize {
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
    fn count_out(&self, count: usize) {
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
    fn lags_at(&self, queued: usize) -> bool {
        queued * 4 > self.bound
    }

    /// Whether the peer does not read: its writer has been inside one write
    /// for `STUCK_WRITE`, or its writes are not watched at all.
    fn peer_is_stuck(&self) -> bool {
        if !self.writes_watched.load(Ordering::Acquire) {
            return true;
        }
        let since = self.writing_since.load(Ordering::Acquire);
        since != NOT_WRITING
            && micros_since_start().saturating_sub(since) >= STUCK_WRITE.as_micros() as u64
    }

    /// Wakes a lingering writer early. Cheap when it is not parked: `unpark`
    /// then only marks a token, with no system call.
    fn nudge(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }

    /// Ends the connection without a goodbye.
    fn cut(&self) {
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

#[cfg(test)]
mod tests;
