//! When a writer waits after a write, so that one wake-up carries many
//! events: only while the writers are falling behind.
//!
//! Every writer thread (WebSocket writers, SSE streams) calls `Pace`. With a
//! thread per writer, what runs out under heavy fan-out is wake-ups and
//! context switches, not bytes: a writer that *lingers* after a write (parks
//! until the next tick of a clock all writers share) lets the events that
//! arrive meanwhile go out in one `writev`, and wakes nobody for them. That
//! costs latency, so it is done only when it is needed, and what says so is
//! the thing lingering would fix: events waiting for their writers. A
//! writer that comes to an event `LATE` after it could have sent it (after
//! the event was made, or after the writer's own linger ended, whichever is
//! later) is late; when a share of the writers that wrote in a period
//! (`SAMPLE_EVERY`) were late, the server is falling behind, and the window
//! opens at once to what the writers that wrote need to stay within
//! `WAKE_BUDGET_PER_SEC`. After `CALM_SAMPLES` periods with nobody late,
//! and, while the window is wider than a quarter of that, the CPUs with
//! room (`os::cpu`, under `ROOM_BELOW` busy), it halves each period, to
//! zero below `LINGER_MIN`.
//!
//! Lateness opens the window, not the CPU's busy share: a core can be fully
//! busy and keep up (writers then batch by themselves, each finding several
//! events when it gets to run), and a window opened by a burst kept the core
//! at half load, so a busy-share rule never closed it again. But lateness
//! alone closed it at saturation, where the open window is what keeps
//! everyone on time, and the server fell behind again each time: so a wide
//! window closes only while the CPUs have room for the wake-ups that
//! closing costs. A narrow one closes whatever the CPUs do: it costs
//! wake-ups itself, and a core busy with them may still keep up. Lateness is
//! also what other programs on the same CPUs cause, so they count too.
//!
//! A WebSocket or SSE writer that lingers delays nothing: while its queue
//! is empty the hub writes new events to the socket itself
//! (`queue::through`), so the window batches only what had to be queued (a
//! full socket, a busy writer).
//!
//! No thread of its own: the writer whose write finds the last sample
//! `SAMPLE_EVERY` old takes the next one (skipped while fewer than
//! `FEW_WRITERS` write). The hub cuts a linger short when a queue passes
//! half full (`queue`). Figures: `docs/performance.md`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::os::cpu::CpuLoad;
use crate::queue::Outbound;

/// How often the window is reconsidered (while anyone writes).
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// A writer this long behind an event is late: well past the time a calm
/// server takes to wake every member of a big room once.
const LATE: Duration = Duration::from_millis(50);
/// Falling behind: at least one in this many of the writers that wrote in a
/// period were late (a few peers that read slowly are not the server
/// falling behind).
const BEHIND_ONE_IN: usize = 4;
/// How many periods with nobody late before the window shrinks.
const CALM_SAMPLES: u32 = 3;
/// And only while the CPUs were busy less than this share of the last
/// period: an open window at saturation keeps the server on time, and
/// leaves the CPUs no room.
const ROOM_BELOW: f64 = 0.85;
/// What all writers together may spend on wake-ups while behind, roughly:
/// the window is the one that keeps the writers that wrote within it.
const WAKE_BUDGET_PER_SEC: u64 = 25_000;
/// The shortest linger worth a sleep; a window that shrinks below it is zero.
const LINGER_MIN: Duration = Duration::from_micros(500);
/// The longest, which bounds the latency lingering adds (a room of ten
/// thousand joining at once needs it to settle).
const LINGER_MAX: Duration = Duration::from_millis(400);
/// Below this many writers in a period, the window is zero: so few could
/// linger for at most `LINGER_MIN`, and a quiet room on a busy server still
/// gets each event at once.
const FEW_WRITERS: usize = 32;
/// The longest window that ends on a shared tick (`until_next_tick`).
const SHARED_TICK_MAX: Duration = Duration::from_millis(100);

/// One writer's pacing.
///
/// While the window is open it lingers after every write, however large
/// (skipping it after a big batch made every other wake-up carry one event),
/// except after a quiet spell of at least a window, where the linger would
/// find nothing and only cost a second wake-up. It parks rather than sleeps
/// (the writer called `Inbox::writer_is_current_thread`), so the hub can
/// wake it the moment its queue passes half full.
#[derive(Debug, Default)]
pub struct Pace {
    /// When the writer last found its queues empty and began to wait.
    quiet_since: Option<Instant>,
    /// When its last linger ended (as planned, or earlier if woken).
    lingered_until: Option<Instant>,
    /// Whether this batch's lateness has been looked at (its first live item).
    measured: bool,
    /// The sample period this writer was last counted in as active.
    counted_in: u64,
    /// The sample period this writer was last counted in as late.
    late_in: u64,
}

impl Pace {
    /// The writer found its queues empty and is about to wait on them.
    pub fn going_quiet(&mut self) {
        self.quiet_since = Some(Instant::now());
    }

    /// The writer took `item` from its queue: the first live item of a
    /// batch says how late the writer is (see the module doc).
    pub fn took(&mut self, item: &Outbound) {
        if self.measured {
            return;
        }
        let Some(born) = item.born() else {
            return; // replayed history is old by design
        };
        self.measured = true;
        if is_late(born, self.lingered_until, Instant::now()) {
            load().late(&mut self.late_in);
        }
    }

    /// Called after each write: counts the writer as active, and lingers
    /// while the writers are behind (see the module doc).
    pub fn after_write(&mut self) {
        self.measured = false;
        let load = load();
        load.wrote(&mut self.counted_in);
        let window = load.window();
        let after_long_quiet = self
            .quiet_since
            .take()
            .is_some_and(|since| since.elapsed() >= window);
        if window.is_zero() || after_long_quiet {
            return;
        }
        let linger = if window <= SHARED_TICK_MAX {
            until_next_tick(since_epoch(), window)
        } else {
            window
        };
        let until = Instant::now() + linger;
        std::thread::park_timeout(linger);
        self.lingered_until = Some(until.min(Instant::now()));
    }
}

/// The hub took a command sent at `sent`: one that waited `LATE` for the hub
/// means the hub is falling behind, and with it every writer (the events
/// it has yet to make cannot be late at the writers). Writers that keep
/// the CPU to themselves starve the one hub thread first.
pub fn hub_took(sent: Instant) {
    if sent.elapsed() >= LATE {
        load().hub_late.store(true, Ordering::Relaxed);
    }
}

/// Whether a writer that comes to an event made at `born` at `now` is late:
/// `LATE` after it could have sent it, which is when the event was made or
/// when the writer's last linger ended, whichever is later (the linger is
/// the price of a window that is open, not a sign of falling behind).
fn is_late(born: Instant, lingered_until: Option<Instant>, now: Instant) -> bool {
    let ready = lingered_until.map_or(born, |until| until.max(born));
    now.saturating_duration_since(ready) >= LATE
}

/// Whether the writers are behind, and the linger window that follows from
/// it: one for the process.
struct Load {
    window_micros: AtomicU64,
    /// Sample periods so far; writers count themselves once per period.
    period: AtomicU64,
    /// Writers that wrote in this period.
    active: AtomicUsize,
    /// Writers that were late in this period.
    late: AtomicUsize,
    /// Whether the hub was late in this period.
    hub_late: AtomicBool,
    /// When the next sample is due, in microseconds since `since_epoch`'s start.
    next_sample: AtomicU64,
    sampler: Mutex<Sampler>,
}

/// What the last sample saw.
struct Sampler {
    at: Instant,
    /// Periods in a row with nobody late.
    calm: u32,
    cpu: CpuLoad,
}

fn load() -> &'static Load {
    static LOAD: OnceLock<Load> = OnceLock::new();
    LOAD.get_or_init(|| Load {
        window_micros: AtomicU64::new(0),
        period: AtomicU64::new(0),
        active: AtomicUsize::new(0),
        late: AtomicUsize::new(0),
        hub_late: AtomicBool::new(false),
        next_sample: AtomicU64::new(0),
        sampler: Mutex::new(Sampler {
            at: Instant::now(),
            calm: 0,
            cpu: CpuLoad::new(),
        }),
    })
}

impl Load {
    fn window(&self) -> Duration {
        Duration::from_micros(self.window_micros.load(Ordering::Relaxed))
    }

    /// A writer was late: count it once in this period.
    fn late(&self, late_in: &mut u64) {
        let period = self.period.load(Ordering::Relaxed);
        if *late_in != period {
            *late_in = period;
            self.late.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A writer wrote: count it as active in this period, and sample if due.
    fn wrote(&self, counted_in: &mut u64) {
        let period = self.period.load(Ordering::Relaxed);
        if *counted_in != period {
            *counted_in = period;
            self.active.fetch_add(1, Ordering::Relaxed);
        }
        let now = since_epoch().as_micros() as u64;
        if now < self.next_sample.load(Ordering::Relaxed) {
            return;
        }
        // One writer samples; the others go on.
        let Ok(mut sampler) = self.sampler.try_lock() else {
            return;
        };
        if now < self.next_sample.load(Ordering::Relaxed) {
            return; // another writer just did
        }
        self.next_sample
            .store(now + SAMPLE_EVERY.as_micros() as u64, Ordering::Relaxed);
        self.period.fetch_add(1, Ordering::Relaxed);
        let active = self.active.swap(0, Ordering::Relaxed);
        let late = self.late.swap(0, Ordering::Relaxed);
        let hub_late = self.hub_late.swap(false, Ordering::Relaxed);
        let at = Instant::now();
        let elapsed = at.duration_since(sampler.at);
        sampler.at = at;
        if active < FEW_WRITERS {
            // Not worth a look at the CPUs: no window.
            sampler.calm = 0;
            sampler.cpu.forget();
            return self.window_micros.store(0, Ordering::Relaxed);
        }
        let behind = hub_late || late * BEHIND_ONE_IN >= active;
        // Only a wide window needs room to close: a narrow one costs
        // wake-ups of its own, and a busy core that keeps up is fine.
        let narrow = self.window() <= cap_for(active) / 4;
        let room = narrow || sampler.cpu.busy() < ROOM_BELOW;
        sampler.calm = if late == 0 && !hub_late && room {
            sampler.calm + 1
        } else {
            0
        };
        let window = next_window(self.window(), behind, active, elapsed, sampler.calm);
        self.window_micros
            .store(window.as_micros() as u64, Ordering::Relaxed);
    }
}

/// The longest window `active` writers need to stay within
/// `WAKE_BUDGET_PER_SEC`, within `LINGER_MIN..=LINGER_MAX`.
fn cap_for(active: usize) -> Duration {
    Duration::from_micros(active as u64 * 1_000_000 / WAKE_BUDGET_PER_SEC)
        .clamp(LINGER_MIN, LINGER_MAX)
}

/// The window after a sample: behind, what the `active` writers need to
/// stay within `WAKE_BUDGET_PER_SEC` (within `LINGER_MIN..=LINGER_MAX`), at
/// once; after `CALM_SAMPLES` calm periods (nobody late, the CPUs with
/// room), half of it (zero below `LINGER_MIN`); zero after a quiet spell of
/// several periods.
fn next_window(
    current: Duration,
    behind: bool,
    active: usize,
    elapsed: Duration,
    calm_samples: u32,
) -> Duration {
    let cap = cap_for(active);
    if behind {
        cap
    } else if elapsed >= SAMPLE_EVERY * 4 {
        Duration::ZERO
    } else if calm_samples >= CALM_SAMPLES {
        let less = current / 2;
        if less < LINGER_MIN {
            Duration::ZERO
        } else {
            less.min(cap)
        }
    } else {
        current.min(cap)
    }
}

/// How long from `since_epoch` to the next tick of a clock that ticks every
/// `window` (at most a window, never zero).
///
/// Lingers end on ticks all writers share rather than a window after each
/// writer's own write. Staggered, a thousand writers woke one at a time all
/// window long, each wake-up its own timer interrupt and each preempting the
/// hub; on a shared tick they wake together and the hub runs between the
/// bursts. Only windows up to `SHARED_TICK_MAX` tick together: past it a
/// burst is thousands of writers long, and in a join storm queues filled
/// while their writers waited for the rest of the burst.
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn writers_that_keep_up_do_not_linger_however_many_there_are() {
        let p = SAMPLE_EVERY;
        // Ten thousand writers wrote, none of them late.
        assert_eq!(
            next_window(Duration::ZERO, false, 10_000, p, 1),
            Duration::ZERO
        );
        // Caught up after being behind: the window stays for a few periods,
        // then halves each period, then is gone.
        assert_eq!(next_window(40 * MS, false, 1000, p, 1), 40 * MS);
        assert_eq!(next_window(40 * MS, false, 1000, p, CALM_SAMPLES), 20 * MS);
        assert_eq!(
            next_window(LINGER_MIN, false, 1000, p, CALM_SAMPLES),
            Duration::ZERO
        );
        // After a quiet spell of several periods, at once.
        assert_eq!(
            next_window(200 * MS, false, 5000, p * 10, 0),
            Duration::ZERO
        );
    }

    #[test]
    fn writers_that_fall_behind_linger_at_once_as_long_as_they_need() {
        let p = SAMPLE_EVERY;
        // 1000 writers within 25,000 wake-ups a second: 40 ms.
        assert_eq!(next_window(Duration::ZERO, true, 1000, p, 0), 40 * MS);
        assert_eq!(next_window(10 * MS, true, 1000, p, 0), 40 * MS);
        // Fewer writers, a shorter window.
        assert_eq!(next_window(40 * MS, true, 100, p, 0), 4 * MS);
        assert_eq!(next_window(40 * MS, true, 10, p, 0), LINGER_MIN);
        assert_eq!(next_window(Duration::ZERO, true, 100_000, p, 0), LINGER_MAX);
        // Fewer writers while it stays open: it shrinks to what they need.
        assert_eq!(next_window(40 * MS, false, 100, p, 1), 4 * MS);
    }

    #[test]
    fn lateness_counts_from_the_event_or_the_end_of_the_linger_whichever_is_later() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Never lingered: from the event.
        assert!(!is_late(at(0), None, at(49)));
        assert!(is_late(at(0), None, at(50)));
        // An event made during a linger: timed from the linger's end.
        assert!(!is_late(at(10), Some(at(100)), at(140)));
        assert!(is_late(at(10), Some(at(100)), at(150)));
        // An event made after an old linger: from the event again.
        assert!(!is_late(at(200), Some(at(100)), at(240)));
        // Replayed history is not looked at.
        let mut pace = Pace::default();
        pace.took(&Outbound::GoingAway);
        assert!(!pace.measured);
    }

    #[test]
    fn lingers_end_on_the_next_tick_of_a_shared_clock() {
        let window = 40 * MS;
        let ms = Duration::from_millis;
        assert_eq!(until_next_tick(ms(0), window), window);
        assert_eq!(until_next_tick(ms(1), window), ms(39));
        assert_eq!(until_next_tick(ms(39), window), ms(1));
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
