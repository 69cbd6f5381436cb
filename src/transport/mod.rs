//! The transports: how peers reach the hub. Each turns a socket into a
//! `Subscriber` (a bounded queue the hub fills) and `Command`s (what the peer
//! asks), and nothing else; every rule about rooms lives in the hub.
//!
//! What they share is gathered in `Shared`: the hub's handle, the settings,
//! the metrics, the connection limit, and the two channels of shutdown
//! (`shutdown`: disconnected when the server stops; `done`: a clone held by
//! every connection thread, so the server can tell when they have all ended).
//!
//! Writers share one more idea, `Pace`: while busy, each sleeps between
//! writes until the next tick of a clock they all share (`linger_window`
//! apart), so that one wake-up carries many events and the writers wake
//! together; when events come slower than that, it does not.

#[cfg(feature = "grpc")]
pub mod grpc;
pub mod refuse;
pub mod sse;
pub mod ws;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use std::net::{TcpListener, TcpStream};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use log::warn;

use crate::config::Config;
use crate::hub::{ClientIds, HubHandle};
use crate::metrics::Metrics;
use crate::origin::OriginRule;

/// What every transport thread needs, cloned into each.
#[derive(Clone)]
pub struct Shared {
    /// The way to the hub.
    pub hub: HubHandle,
    /// The settings.
    pub config: Arc<Config>,
    /// Which browser pages may connect and publish (built once the HTTP
    /// listener is bound: the rule needs its address).
    pub origins: Arc<OriginRule>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Connection ids.
    pub ids: Arc<ClientIds>,
    /// `--max-connections`, across transports.
    pub limit: Arc<ConnectionLimit>,
    /// Disconnects when the server shuts down; nothing is ever sent on it.
    pub shutdown: Receiver<()>,
    /// Held by every connection thread; nothing is ever sent on it. The server
    /// knows they have all ended when its receiver reports `Disconnected`.
    pub done: Sender<()>,
}

impl Shared {
    /// Whether the server has begun to shut down.
    pub fn shutting_down(&self) -> bool {
        matches!(self.shutdown.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// The connections `listener` accepts, with Nagle off (a small frame or
    /// event must not wait), until the server shuts down. An accept that fails
    /// (out of file descriptors, most often) is logged and backed off from,
    /// instead of spun on.
    pub fn accepted<'a>(
        &'a self,
        listener: &'a TcpListener,
        what: &'static str,
    ) -> impl Iterator<Item = TcpStream> + 'a {
        listener
            .incoming()
            .take_while(|_| !self.shutting_down())
            .filter_map(move |stream| match stream {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    Some(stream)
                }
                Err(e) => {
                    warn!("{what} accept failed: {e}");
                    std::thread::sleep(ACCEPT_BACKOFF);
                    None
                }
            })
    }
}

/// How long an accept loop waits after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Counts open connections across all transports; past `max`, new ones are
/// refused (an atomic counter: the check happens before a thread is spent).
pub struct ConnectionLimit {
    open: AtomicUsize,
    max: usize,
}

impl ConnectionLimit {
    /// A limit of `max` open connections.
    pub fn new(max: usize) -> Arc<ConnectionLimit> {
        Arc::new(ConnectionLimit {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// A permit for one more connection, or `None` at the limit. The permit
    /// gives its place back when dropped.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let taken = self.open.fetch_add(1, Ordering::AcqRel);
        if taken >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Permit(Arc::clone(self)))
    }

    /// How many connections are open.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One connection's place under the limit.
pub struct Permit(Arc<ConnectionLimit>);

impl Permit {
    /// How many connections are open now (this one included).
    pub fn open_connections(&self) -> usize {
        self.0.open()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How far apart the ticks are that busy writers linger to: the longest a
/// writer lingers after a write before it looks at its queue again. Events
/// that arrive meanwhile wake nobody (the writer is asleep, not parked on the
/// channel, so the hub's `try_send` makes no syscall), and the next write
/// carries them all in one `writev`. With a thousand writer threads
/// on two cores, wake-ups and context switches, not bytes, are what runs out.
///
/// The window grows with the number of connections, so that all writers
/// together wake about `WAKE_BUDGET_PER_SEC` times a second at most, within
/// bounds: below the minimum a sleep costs more than it saves; the maximum is
/// the most latency it may add. A quiet connection pays one extra wake-up per
/// burst (the linger that finds its queue empty), and no latency.
///
/// The budget must hold at ten thousand connections too, which is why the
/// maximum is as long as it is (the measurements: `docs/performance.md`).
pub fn linger_window(connections: usize) -> Duration {
    let micros = connections as u64 * 1_000_000 / WAKE_BUDGET_PER_SEC;
    Duration::from_micros(micros).clamp(LINGER_MIN, LINGER_MAX)
}

/// When a writer lingers after a write.
///
/// Lingering parks the writer until the next tick of a clock every writer
/// shares, a window apart (`until_next_tick`), so that what arrives meanwhile
/// goes out in the next write. It parks rather than sleeps (the writer called
/// `Hangup::writer_is_current_thread` first), so the hub can wake it the
/// moment its queue passes half full: that, not a shorter linger, is what
/// keeps a burst (a room of thousands joining at once) from filling it.
///
/// It lingers after every write, however large (skipping it after a big
/// batch made every other wake-up carry one event), with one exception: a
/// write that ends a quiet spell of at least a window, where the linger
/// would find nothing and only cost a second wake-up. The figures behind
/// both choices are in `docs/performance.md`.
#[derive(Debug, Default)]
pub struct Pace {
    /// When the writer last found its queues empty and began to wait.
    quiet_since: Option<Instant>,
}

impl Pace {
    /// The writer found its queues empty and is about to wait on them.
    pub fn going_quiet(&mut self) {
        self.quiet_since = Some(Instant::now());
    }

    /// Called after each write: lingers, unless the write ended a quiet spell
    /// of at least a window.
    pub fn after_write(&mut self, permit: &Permit) {
        let window = linger_window(permit.open_connections());
        let after_long_quiet = self
            .quiet_since
            .take()
            .is_some_and(|since| since.elapsed() >= window);
        if !after_long_quiet {
            let linger = if window <= SHARED_TICK_MAX {
                until_next_tick(since_epoch(), window)
            } else {
                window
            };
            std::thread::park_timeout(linger);
        }
    }
}

/// How long from `since_epoch` to the next tick of a clock that ticks every
/// `window` (at most a window, never zero).
///
/// Lingers end on ticks all writers share rather than a window after each
/// writer's own write. Staggered, a thousand writers woke one at a time all
/// window long: each wake-up its own timer interrupt, each write woke the
/// idle peer again, and each writer that woke preempted the hub. On a shared
/// tick they wake together and run back to back, and the hub runs between
/// the bursts (measured in `docs/performance.md`).
///
/// Only windows up to `SHARED_TICK_MAX` tick together. Past it, a burst is
/// thousands of writers long, and in a join storm queues filled while their
/// writers waited for the rest of the burst, dropping healthy members as
/// slow; staggered, the storms drop none.
fn until_next_tick(since_epoch: Duration, window: Duration) -> Duration {
    let window_nanos = window.as_nanos().max(1);
    let into_tick = since_epoch.as_nanos() % window_nanos;
    Duration::from_nanos(u64::try_from(window_nanos - into_tick).unwrap_or(u64::MAX))
}

/// Time since the clock the ticks count from started (the first call).
fn since_epoch() -> Duration {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed()
}

/// What all writers together may spend on wake-ups, roughly.
const WAKE_BUDGET_PER_SEC: u64 = 25_000;
/// The longest window that ends on a shared tick (`until_next_tick`): 2500
/// connections.
const SHARED_TICK_MAX: Duration = Duration::from_millis(100);
/// The shortest linger worth a sleep.
const LINGER_MIN: Duration = Duration::from_micros(500);
/// The longest, which bounds the latency lingering adds (reached at 10,000
/// connections).
const LINGER_MAX: Duration = Duration::from_millis(400);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linger_window_grows_with_connections_within_bounds() {
        assert_eq!(linger_window(1), LINGER_MIN);
        assert_eq!(linger_window(1000), Duration::from_millis(40));
        assert_eq!(linger_window(10_000), LINGER_MAX);
        assert_eq!(linger_window(100_000), LINGER_MAX);
    }

    #[test]
    fn lingers_end_on_the_next_tick_of_a_shared_clock() {
        let window = Duration::from_millis(40);
        let ms = Duration::from_millis;
        assert_eq!(until_next_tick(ms(0), window), window);
        assert_eq!(until_next_tick(ms(1), window), ms(39));
        assert_eq!(until_next_tick(ms(39), window), ms(1));
        assert_eq!(until_next_tick(ms(40), window), window);
        assert_eq!(until_next_tick(ms(12_345), window), ms(15));
        // Two writers whose writes ended at different times wake together.
        let (a, b) = (
            Duration::from_micros(80_123),
            Duration::from_micros(107_999),
        );
        assert_eq!(
            a + until_next_tick(a, window),
            b + until_next_tick(b, window)
        );
        assert_eq!(
            until_next_tick(ms(5), Duration::ZERO),
            Duration::from_nanos(1)
        );
    }
}
