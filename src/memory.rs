//! Handing freed memory back to the kernel once a burst is over.
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
//! (`Housekeeping`), as the Go runtime's scavenger does for the Go hub. After
//! 2000 connections joined one room and went idle, RSS per connection fell
//! from 39.3 to 27.7 kB with one call (`/proc/PID/status`, 2-core VM).

use std::time::Duration;

/// The glibc tunable that turns off malloc's per-thread cache (tcache).
pub const NO_THREAD_CACHE: &str = "glibc.malloc.tcache_count=0";
/// glibc reads its tunables from this variable, once, as the program starts.
const TUNABLES: &str = "GLIBC_TUNABLES";

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

/// What `GLIBC_TUNABLES` should hold for this process, given what it holds
/// now: `None` if it is right as it is, which is also the case when the
/// user chose a tcache setting of their own.
pub fn tunables_without_thread_cache(current: Option<&str>) -> Option<String> {
    match current {
        Some(set) if set.contains("glibc.malloc.tcache") => None,
        Some(set) if !set.is_empty() => Some(format!("{set}:{NO_THREAD_CACHE}")),
        _ => Some(NO_THREAD_CACHE.to_owned()),
    }
}

/// Starts this program over with glibc's per-thread malloc cache turned off,
/// unless it is off already or the user set it themselves; returns only if
/// it does not (and why, if an attempt failed). Call it first thing, before
/// any thread starts: the new image keeps the process id, the arguments and
/// every open file, so whoever started the server sees no difference.
///
/// The cache is made for a few threads: each thread keeps, for itself, some
/// freed blocks of each size (and the cache's own 640 bytes). switchboard has
/// two threads per connection, most of which free a few blocks of sizes they
/// never ask for again — a handshake's strings, a shared event, a queue's
/// spent slots — so those blocks stay put for the life of the connection.
/// Without it, 5000 idle connections take 2.5 kB less each (25.7 against
/// 28.2 kB RSS per connection, `/proc/PID/status`, 2-core VM), and fan-out
/// to 1000 members costs the same CPU (a malloc still goes to an arena
/// without a lock fight: the hub allocates, writers free).
///
/// glibc reads `GLIBC_TUNABLES` only as a program starts, and `mallopt` has
/// no setting for this cache, hence the one `exec`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn restart_without_thread_cache() -> Option<std::io::Error> {
    use std::os::unix::process::CommandExt;
    let current = std::env::var(TUNABLES).ok();
    let tunables = tunables_without_thread_cache(current.as_deref())?;
    let program = match std::env::current_exe() {
        Ok(program) => program,
        Err(e) => return Some(e),
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(program);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    Some(command.args(args).env(TUNABLES, tunables).exec())
}

/// Starts this program over with glibc's per-thread malloc cache turned off:
/// there is no such cache where the C library is not glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn restart_without_thread_cache() -> Option<std::io::Error> {
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
    fn the_thread_cache_goes_off_beside_other_tunables_unless_the_user_set_it() {
        assert_eq!(
            tunables_without_thread_cache(None).as_deref(),
            Some(NO_THREAD_CACHE)
        );
        assert_eq!(
            tunables_without_thread_cache(Some("")).as_deref(),
            Some(NO_THREAD_CACHE)
        );
        assert_eq!(
            tunables_without_thread_cache(Some("glibc.malloc.arena_max=2")).as_deref(),
            Some("glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0")
        );
        assert_eq!(tunables_without_thread_cache(Some(NO_THREAD_CACHE)), None);
        assert_eq!(
            tunables_without_thread_cache(Some("glibc.malloc.tcache_count=7")),
            None
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
