//! When a writer waits after a write, so that one wake-up carries many
//! events: only while the CPUs the server runs on are busy.
//!
//! Every writer thread (WebSocket writers, SSE streams) calls
//! `Pace::after_write`. With a thread per writer, what runs out under heavy
//! fan-out is wake-ups and context switches, not bytes: a writer that
//! *lingers* after a write (parks until the next tick of a clock all writers
//! share) lets the events that arrive meanwhile go out in one `writev`, and
//! wakes nobody for them. That costs latency, so it is done only when the
//! CPUs it runs on are actually busy, measured as it runs (`Load`): their
//! busy time over the last `SAMPLE_EVERY` (`/proc/stat`, for the CPUs in the
//! process's affinity). That counts other programs on those CPUs too: a
//! wake-up costs the same whoever keeps the core busy.
//! Busy, the window is at once what the writers that actually wrote need
//! to stay within `WAKE_BUDGET_PER_SEC` (as it was, from the connection
//! count, before); calm for a second, it shrinks by a quarter a sample, to
//! zero below `LINGER_MIN`. It opens fast and closes slowly: a window that
//! dropped too far let the core saturate, and then every event waited for
//! the hub, which costs more than the linger did.
//! An idle server with thousands of open connections has a window of zero,
//! and delivers each event of a quiet room at once.
//!
//! No thread of its own: the writer whose write finds the last sample
//! `SAMPLE_EVERY` old takes the next one (a read of `/proc/stat`, skipped
//! while fewer than `FEW_WRITERS` write). The hub cuts a linger short when a
//! queue passes half full (`queue`). Figures:
//! `docs/performance.md`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often the load is sampled (while anyone writes).
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Busy: the CPUs the process may run on were busy at least this share of the time.
const BUSY: f64 = 0.7;
/// Calm: less than this share. Between the two the window stays (a step
/// down adds a third more wake-ups, so the band is wider than that).
const CALM: f64 = 0.3;
/// How many calm samples in a row before the window shrinks: it is quick to
/// open and slow to close, so that a load that comes and goes does not
/// find it closed.
const CALM_SAMPLES: u32 = 10;
/// What all writers together may spend on wake-ups while busy, roughly: the
/// longest window is the one that keeps the writers that wrote within it.
const WAKE_BUDGET_PER_SEC: u64 = 25_000;
/// The shortest linger worth a sleep; a window that shrinks below it is zero.
const LINGER_MIN: Duration = Duration::from_micros(500);
/// The longest, which bounds the latency lingering adds (a room of ten
/// thousand joining at once needs it to settle).
const LINGER_MAX: Duration = Duration::from_millis(400);
/// Below this many writers in a period, the window is zero and the load is
/// not even read: so few could linger for at most `LINGER_MIN`, and a quiet
/// room on a busy machine still gets each event at once.
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
    /// The sample period this writer was last counted in as active.
    counted_in: u64,
}

impl Pace {
    /// The writer found its queues empty and is about to wait on them.
    pub fn going_quiet(&mut self) {
        self.quiet_since = Some(Instant::now());
    }

    /// Called after each write: counts the writer as active, and lingers
    /// while the server is busy (see the module doc).
    pub fn after_write(&mut self) {
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
        std::thread::park_timeout(linger);
    }
}

/// How busy the CPUs are, and the linger window that follows from it: one
/// for the process.
struct Load {
    window_micros: AtomicU64,
    /// Sample periods so far; writers count themselves once per period.
    period: AtomicU64,
    /// Writers that wrote in this period.
    active: AtomicUsize,
    /// When the next sample is due, in microseconds since `since_epoch`'s start.
    next_sample: AtomicU64,
    sampler: Mutex<Sampler>,
}

/// What the last sample saw.
struct Sampler {
    at: Instant,
    /// Busy and total ticks of the CPUs this process may run on, then.
    ticks: Option<CpuTicks>,
    /// Which CPUs those are (`Cpus_allowed_list`, read once).
    cpus: Vec<usize>,
    /// Calm samples in a row.
    calm: u32,
}

fn load() -> &'static Load {
    static LOAD: OnceLock<Load> = OnceLock::new();
    LOAD.get_or_init(|| Load {
        window_micros: AtomicU64::new(0),
        period: AtomicU64::new(0),
        active: AtomicUsize::new(0),
        next_sample: AtomicU64::new(0),
        sampler: Mutex::new(Sampler {
            at: Instant::now(),
            ticks: None,
            cpus: allowed_cpus().unwrap_or_default(),
            calm: 0,
        }),
    })
}

impl Load {
    fn window(&self) -> Duration {
        Duration::from_micros(self.window_micros.load(Ordering::Relaxed))
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
        let at = Instant::now();
        if active < FEW_WRITERS {
            // Not worth a read: no window, and no baseline for the next sample.
            (sampler.at, sampler.ticks) = (at, None);
            return self.window_micros.store(0, Ordering::Relaxed);
        }
        let ticks = cpu_ticks(&sampler.cpus);
        let elapsed = at.duration_since(sampler.at);
        let busy = match (sampler.ticks, ticks) {
            (Some(before), Some(after)) => after.busy_since(before),
            _ => 0.0, // no baseline yet, or no /proc (then it never lingers)
        };
        (sampler.at, sampler.ticks) = (at, ticks);
        sampler.calm = if busy < CALM { sampler.calm + 1 } else { 0 };
        let window = next_window(self.window(), busy, active, elapsed, sampler.calm);
        self.window_micros
            .store(window.as_micros() as u64, Ordering::Relaxed);
    }
}

/// The window after a sample: busy, what the `active` writers need to stay
/// within `WAKE_BUDGET_PER_SEC` (within `LINGER_MIN..=LINGER_MAX`), at once;
/// calm for `CALM_SAMPLES` samples in a row, three quarters of it (zero
/// below `LINGER_MIN`); zero after a quiet spell of several periods.
fn next_window(
    current: Duration,
    busy: f64,
    active: usize,
    elapsed: Duration,
    calm_samples: u32,
) -> Duration {
    let cap = Duration::from_micros(active as u64 * 1_000_000 / WAKE_BUDGET_PER_SEC)
        .clamp(LINGER_MIN, LINGER_MAX);
    if busy >= BUSY {
        cap
    } else if elapsed >= SAMPLE_EVERY * 4 || calm_samples >= CALM_SAMPLES {
        let less = current * 3 / 4;
        if less < LINGER_MIN || elapsed >= SAMPLE_EVERY * 4 {
            Duration::ZERO
        } else {
            less.min(cap)
        }
    } else {
        current.min(cap)
    }
}

/// Busy and total time of some CPUs, in clock ticks (`/proc/stat`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct CpuTicks {
    busy: u64,
    total: u64,
}

impl CpuTicks {
    /// The share of the time since `before` that the CPUs were busy.
    fn busy_since(self, before: CpuTicks) -> f64 {
        let total = self.total.saturating_sub(before.total);
        if total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(before.busy) as f64 / total as f64
    }
}

/// The ticks of the CPUs in `cpus` (all of them if empty), from `/proc/stat`.
fn cpu_ticks(cpus: &[usize]) -> Option<CpuTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    Some(ticks_of(&stat, cpus))
}

/// Sums the `cpuN` lines of `/proc/stat` for the CPUs in `cpus` (the
/// all-CPU `cpu` line if empty): idle and iowait are idle, the other six
/// counters busy (guest time is already inside user time).
fn ticks_of(stat: &str, cpus: &[usize]) -> CpuTicks {
    let mut sum = CpuTicks::default();
    for line in stat.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(name) = fields.next().and_then(|f| f.strip_prefix("cpu")) else {
            continue;
        };
        let wanted = match name.parse::<usize>() {
            Ok(cpu) => cpus.contains(&cpu),
            Err(_) => name.is_empty() && cpus.is_empty(),
        };
        if !wanted {
            continue;
        }
        let counts: Vec<u64> = fields.take(8).filter_map(|f| f.parse().ok()).collect();
        if let [user, nice, system, idle, iowait, irq, softirq, steal] = counts[..] {
            sum.busy += user + nice + system + irq + softirq + steal;
            sum.total += user + nice + system + idle + iowait + irq + softirq + steal;
        }
    }
    sum
}

/// The CPUs this process may run on (`Cpus_allowed_list` of
/// `/proc/self/status`, as `0-3,6`).
fn allowed_cpus() -> Option<Vec<usize>> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))?;
    Some(parse_cpu_list(list.trim()))
}

fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(first), Ok(last)) = (first.parse::<usize>(), last.parse::<usize>()) {
            cpus.extend(first..=last.min(first + 4096));
        }
    }
    cpus
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
    fn an_idle_or_calm_server_does_not_linger_however_many_connections_it_holds() {
        let p = SAMPLE_EVERY;
        // Ten thousand writers woke, but the CPUs were nearly idle.
        assert_eq!(
            next_window(Duration::ZERO, 0.05, 10_000, p, 1),
            Duration::ZERO
        );
        // Calm after busy: the window stays for a second, then shrinks by
        // a quarter a sample, then is gone.
        assert_eq!(next_window(40 * MS, 0.2, 1000, p, 1), 40 * MS);
        assert_eq!(next_window(40 * MS, 0.2, 1000, p, CALM_SAMPLES), 30 * MS);
        assert_eq!(
            next_window(LINGER_MIN, 0.2, 1000, p, CALM_SAMPLES),
            Duration::ZERO
        );
        // After a quiet spell of several periods, at once.
        assert_eq!(next_window(200 * MS, 0.5, 5000, p * 10, 0), Duration::ZERO);
        // In between, it stays.
        assert_eq!(next_window(8 * MS, 0.5, 1000, p, 0), 8 * MS);
    }

    #[test]
    fn a_busy_server_lingers_at_once_as_long_as_its_active_writers_need() {
        let p = SAMPLE_EVERY;
        // 1000 writers within 25,000 wake-ups a second: 40 ms.
        assert_eq!(next_window(Duration::ZERO, 0.9, 1000, p, 0), 40 * MS);
        assert_eq!(next_window(10 * MS, 0.9, 1000, p, 0), 40 * MS);
        // Fewer writers, a shorter window.
        assert_eq!(next_window(40 * MS, 0.9, 100, p, 0), 4 * MS);
        assert_eq!(next_window(40 * MS, 0.9, 10, p, 0), LINGER_MIN);
        assert_eq!(next_window(Duration::ZERO, 1.0, 100_000, p, 0), LINGER_MAX);
    }

    #[test]
    fn the_busy_share_of_the_cpus_it_may_run_on_is_read() {
        let stat = "cpu  30 0 10 50 10 0 0 0 0 0\n\
                    cpu0 20 0 5 20 5 0 0 0 0 0\n\
                    cpu1 10 0 5 30 5 0 0 0 0 0\n\
                    intr 1 2 3\n";
        assert_eq!(
            ticks_of(stat, &[0]),
            CpuTicks {
                busy: 25,
                total: 50
            }
        );
        assert_eq!(
            ticks_of(stat, &[0, 1]),
            CpuTicks {
                busy: 40,
                total: 100
            }
        );
        assert_eq!(
            ticks_of(stat, &[]),
            CpuTicks {
                busy: 40,
                total: 100
            }
        );
        let later = CpuTicks {
            busy: 34,
            total: 60,
        };
        assert_eq!(
            later.busy_since(CpuTicks {
                busy: 25,
                total: 50
            }),
            0.9
        );
        assert_eq!(parse_cpu_list("0-1,3"), vec![0, 1, 3]);
        assert_eq!(parse_cpu_list("2"), vec![2]);
        // And on this machine: the ticks only go up.
        let cpus = allowed_cpus().expect("/proc/self/status");
        assert!(!cpus.is_empty());
        let before = cpu_ticks(&cpus).expect("/proc/stat");
        let deadline = Instant::now() + Duration::from_secs(10);
        while cpu_ticks(&cpus).expect("/proc/stat").total <= before.total {
            assert!(Instant::now() < deadline, "no tick in 10 s");
            std::thread::sleep(Duration::from_millis(5));
        }
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
