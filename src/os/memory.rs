//! Keeping malloc's memory small for thousands of threads: the settings the
//! server starts with (`malloc_tunables`), and handing freed memory back to
//! the kernel once a burst is over (`Housekeeping`).
//!
//! glibc's malloc keeps what a program frees inside its arenas, for reuse. A
//! burst — a room of thousands joining at once is millions of `joined`
//! deliveries, each a batch and an event allocated on one thread and freed on
//! another — leaves whole pages free in the middle of those arenas, and they
//! stay in the process's RSS for good: glibc gives back on its own only what
//! is free at the top of an arena. `malloc_trim(0)` returns every whole free
//! page (`MADV_DONTNEED`) and keeps the blocks in use where they are.
//!
//! The hub asks for it when the server goes quiet after heavy traffic
//! (`Housekeeping`), as the Go runtime's scavenger does for the Go hub
//! (what one call gives back: `docs/performance.md`).

use std::time::Duration;

/// glibc reads its tunables from this variable, once, as the program starts.
const TUNABLES: &str = "GLIBC_TUNABLES";
/// Set in the environment of the restarted server: it never restarts twice,
/// whatever glibc made of `GLIBC_TUNABLES` (a set-user-id program's loader
/// drops some). Set it yourself to run without the restart, e.g. under
/// valgrind, whose `/proc/self/exe` is valgrind.
pub const RESTARTED: &str = "SWITCHBOARD_MALLOC_RESTARTED";

/// Deliveries since the last trim after which a quiet spell is worth one:
/// below this, a burst cannot have left much behind.
const DELIVERIES_WORTH_A_TRIM: u64 = 100_000;
/// How long the hub must have had nothing to do before it trims: long enough
/// that the burst is over and writers have freed what they held.
const QUIET_BEFORE_TRIM: Duration = Duration::from_secs(1);

/// Decides when the hub hands memory back: after heavy traffic, once quiet.
#[derive(Debug, Default)]
pub struct Housekeeping {
    deliveries_since_trim: u64,
}

impl Housekeeping {
    /// Counts deliveries made since the last trim.
    pub fn delivered(&mut self, deliveries: u64) {
        self.deliveries_since_trim = self.deliveries_since_trim.saturating_add(deliveries);
    }

    /// How long the hub may wait for its next command before it trims, or
    /// `None` if there is nothing worth trimming.
    pub fn trim_after_quiet(&self) -> Option<Duration> {
        (self.deliveries_since_trim >= DELIVERIES_WORTH_A_TRIM).then_some(QUIET_BEFORE_TRIM)
    }

    /// The hub was quiet for `QUIET_BEFORE_TRIM`: hand free pages back.
    pub fn trim(&mut self) {
        self.deliveries_since_trim = 0;
        let started = std::time::Instant::now();
        let released = release_free_pages();
        log::debug!(
            "handed free memory back to the kernel ({}) in {:?}",
            if released { "some" } else { "none" },
            started.elapsed()
        );
    }
}

/// The malloc settings switchboard runs with, for `cpus` cores.
///
/// glibc's malloc is tuned for a few busy threads; switchboard has two
/// threads per connection, most of them asleep, each of which keeps what
/// malloc hands it for itself (each one's saving per idle connection, and
/// its CPU cost on the fan-out path, none: `docs/performance.md`):
/// - `tcache_count=0`: no per-thread cache of freed blocks. Each thread kept
///   freed blocks of sizes it never asks for again (a handshake's strings, a
///   shared event, a queue's spent slots) for the life of its connection.
/// - `mxfast=0`: no "fast bins" either, which keep freed small blocks apart
///   instead of merging them with their free neighbours.
/// - `arena_max` = the core count: glibc's default is 8 arenas a core, and
///   every arena a connection's threads use holds some of its blocks amid
///   pages it cannot give back.
pub fn malloc_tunables(cpus: usize) -> [(&'static str, String); 3] {
    [
        ("glibc.malloc.tcache_count", "0".to_owned()),
        ("glibc.malloc.mxfast", "0".to_owned()),
        ("glibc.malloc.arena_max", cpus.max(1).to_string()),
    ]
}

/// What `GLIBC_TUNABLES` should hold, given what it holds now and the
/// settings wanted: each one the user has not set themselves, added; `None`
/// if there is nothing to add.
pub fn tunables_to_run_with(
    current: Option<&str>,
    wanted: &[(&'static str, String)],
) -> Option<String> {
    let current = current.unwrap_or_default();
    let set_already = |name: &str| {
        current
            .split(':')
            .any(|pair| pair.split_once('=').is_some_and(|(key, _)| key == name))
    };
    let added: Vec<String> = wanted
        .iter()
        .filter(|(name, _)| !set_already(name))
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    if added.is_empty() {
        return None;
    }
    let mut all: Vec<&str> = current.split(':').filter(|pair| !pair.is_empty()).collect();
    all.extend(added.iter().map(String::as_str));
    Some(all.join(":"))
}

/// Starts this program over with the malloc settings of `malloc_tunables`,
/// unless it runs with them already (or the user set them otherwise);
/// returns only if it does not, with the reason if an attempt failed. Call
/// it first thing, before any thread starts: the new image keeps the
/// process id, the arguments and every open file, so whoever started the
/// server sees no difference.
///
/// glibc reads `GLIBC_TUNABLES` only as a program starts, and `mallopt` has
/// no setting for the per-thread cache, hence the one `exec`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn restart_with_malloc_tunables() -> Option<std::io::Error> {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(RESTARTED).is_some() {
        return None;
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let current = std::env::var(TUNABLES).ok();
    let tunables = tunables_to_run_with(current.as_deref(), &malloc_tunables(cpus))?;
    let program = match std::env::current_exe() {
        Ok(program) => program,
        Err(e) => return Some(e),
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(program);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    Some(
        command
            .args(args)
            .env(TUNABLES, tunables)
            .env(RESTARTED, "1")
            .exec(),
    )
}

/// Starts this program over with the malloc settings of `malloc_tunables`:
/// they are glibc's, so elsewhere there is nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn restart_with_malloc_tunables() -> Option<std::io::Error> {
    None
}

/// Returns the whole free pages of every malloc arena to the kernel; whether
/// any were. A no-op where the C library is not glibc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_pages() -> bool {
    // SAFETY: malloc_trim takes an integer, touches only malloc's own state
    // under malloc's own locks, and may be called from any thread at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Returns the whole free pages of every malloc arena to the kernel; whether
/// any were. A no-op where the C library is not glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_pages() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunables_are_added_beside_the_users_and_never_over_them() {
        let wanted = malloc_tunables(2);
        let all = "glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0:glibc.malloc.arena_max=2";
        assert_eq!(tunables_to_run_with(None, &wanted).as_deref(), Some(all));
        assert_eq!(
            tunables_to_run_with(Some(""), &wanted).as_deref(),
            Some(all)
        );
        assert_eq!(
            tunables_to_run_with(Some("glibc.malloc.check=3"), &wanted).as_deref(),
            Some(&*format!("glibc.malloc.check=3:{all}"))
        );
        assert_eq!(
            tunables_to_run_with(Some("glibc.malloc.arena_max=8"), &wanted).as_deref(),
            Some("glibc.malloc.arena_max=8:glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0")
        );
        // Once they are all there, nothing more to do: no second restart.
        assert_eq!(tunables_to_run_with(Some(all), &wanted), None);
        // A name that only starts like one of ours is not ours.
        assert!(
            tunables_to_run_with(Some("glibc.malloc.tcache_count_x=1"), &wanted)
                .is_some_and(|t| t.contains("glibc.malloc.tcache_count=0"))
        );
    }

    #[test]
    fn only_heavy_traffic_is_worth_a_trim_and_a_trim_starts_the_count_again() {
        let mut housekeeping = Housekeeping::default();
        assert_eq!(housekeeping.trim_after_quiet(), None);
        housekeeping.delivered(DELIVERIES_WORTH_A_TRIM - 1);
        assert_eq!(housekeeping.trim_after_quiet(), None);
        housekeeping.delivered(1);
        assert_eq!(housekeeping.trim_after_quiet(), Some(QUIET_BEFORE_TRIM));
        housekeeping.trim();
        assert_eq!(housekeeping.trim_after_quiet(), None);
    }

    /// Resident memory of this process, in KiB.
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_trim_gives_back_pages_freed_between_blocks_still_in_use() {
        // 64 MiB of 64 KiB blocks (below glibc's mmap threshold, so they come
        // from an arena), each followed by a small block that stays: freeing
        // the big ones leaves holes that glibc cannot give back on its own.
        const BLOCKS: usize = 1024;
        let mut big = Vec::with_capacity(BLOCKS);
        let mut kept = Vec::with_capacity(BLOCKS);
        for i in 0..BLOCKS {
            big.push(vec![i as u8 | 1; 64 * 1024]);
            kept.push(vec![i as u8; 16]);
        }
        drop(big);
        let before = rss_kib();
        assert!(release_free_pages(), "nothing to give back");
        let after = rss_kib();
        // Other tests run beside this one: ask for half of what was freed.
        assert!(
            before.saturating_sub(after) >= 32 * 1024,
            "RSS {before} -> {after} KiB"
        );
        assert_eq!(kept.iter().map(|k| k.len()).sum::<usize>(), BLOCKS * 16);
    }
}
