//! Every thread in switchboard starts here: named, with a small explicit stack.
//!
//! A thread-per-connection server lives or dies by how cheap a thread is. Rust's
//! default stack is 2 MiB of address space per thread; we ask for far less, sized
//! per role, so ten thousand connections fit in the machine's memory and in
//! `pid_max`. Names show up in `top -H`, `ps -L` and panic messages, and fit
//! Linux's 15-byte limit (`ws-r c42`, `ws-w c42`, `sse c9`, `hub`).
//!
//! Spawning can fail (the thread limit, memory): that is an `io::Error` the
//! caller turns into a refused connection, never a panic.
//!
//! Parked threads cost the kernel something too: every thread that waits on a
//! channel waits on a futex, and `size_futex_table` makes sure the kernel's
//! table of them is sized for thousands of waiters, not for the CPU count.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{Builder, JoinHandle};

/// Stack for threads that parse what peers send (serde_json recurses up to 128
/// levels deep on hostile input; debug builds use big frames).
pub const READER_STACK_BYTES: usize = 256 * 1024;
/// Stack for threads that only move bytes (writers, accept loops, the hub).
pub const WRITER_STACK_BYTES: usize = 128 * 1024;

/// Spawns a thread named `name` with a stack of `stack_bytes`.
///
/// The name is cut to 15 bytes, as Linux would otherwise refuse to show it.
pub fn spawn_named<F, T>(name: String, stack_bytes: usize, body: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let mut name = name;
    if name.len() > 15 {
        let mut cut = 15;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    Builder::new()
        .name(name)
        .stack_size(stack_bytes)
        .spawn(body)
}

/// Memory mappings one thread costs: its stack and guard page, and the signal
/// stack and guard page Rust's runtime gives every thread.
const MAPS_PER_THREAD: usize = 4;
/// Threads one connection costs at most (a WebSocket's reader and writer; an
/// SSE stream is one).
const THREADS_PER_CONNECTION: usize = 2;
/// Maps and threads kept for everything else (libraries, listeners, the hub,
/// and the plain HTTP connections, `--max-http-connections`).
const RESERVE: usize = 1000;

/// How many connections the kernel's limits leave room for, if they can be
/// read: `vm.max_map_count` (65530 by default, so about 8000 connections),
/// `kernel.threads-max` and `kernel.pid_max`. Past them a thread cannot start,
/// or worse, starts and then cannot map its signal stack, which aborts the
/// process; the server refuses connections before that point instead.
pub fn connection_ceiling() -> Option<usize> {
    let read =
        |path: &str| -> Option<usize> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let by_maps = read("/proc/sys/vm/max_map_count")
        .map(|maps| maps.saturating_sub(RESERVE) / (MAPS_PER_THREAD * THREADS_PER_CONNECTION));
    let by_threads = [
        read("/proc/sys/kernel/threads-max"),
        read("/proc/sys/kernel/pid_max"),
    ]
    .into_iter()
    .flatten()
    .min()
    .map(|threads| threads.saturating_sub(RESERVE) / THREADS_PER_CONNECTION);
    [by_maps, by_threads].into_iter().flatten().min()
}

/// `prctl(PR_FUTEX_HASH, ...)` (Linux 6.16 and later) and its two operations.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const PR_FUTEX_HASH: i32 = 78;
const PR_FUTEX_HASH_SET_SLOTS: u64 = 1;
const PR_FUTEX_HASH_GET_SLOTS: u64 = 2;
/// Futex hash slots per connection: its reader and writer may both be parked.
const FUTEX_SLOTS_PER_CONNECTION: usize = 2;
/// The largest table asked for: 64 Ki slots of one cache line each, 4 MiB of
/// kernel memory.
const MAX_FUTEX_SLOTS: usize = 1 << 16;
/// The slots this process has asked for so far (it only ever asks for more).
static FUTEX_SLOTS: AtomicUsize = AtomicUsize::new(0);

/// Sizes this process's futex hash table for `connections` connections and
/// returns its slots, or `None` on kernels without the knob (before 6.16,
/// where every process shares the kernel's global table).
///
/// Since Linux 6.16 a threaded process gets a private futex hash of
/// `4 × min(threads, CPUs)` slots, at least 16. On a 2-core machine that is 16
/// slots for ten thousand writer threads parked on their channels, and every
/// wake-up (an `unpark`, a channel's `notify`) walks a chain of hundreds of
/// waiters, and the hub thread spends most of its core inside the kernel's
/// `futex_wake` (`docs/performance.md`). A slot per parked thread keeps
/// chains short.
pub fn size_futex_table(connections: usize) -> Option<usize> {
    let slots = connections
        .saturating_mul(FUTEX_SLOTS_PER_CONNECTION)
        .clamp(16, MAX_FUTEX_SLOTS)
        .next_power_of_two();
    let had = FUTEX_SLOTS.fetch_max(slots, Ordering::AcqRel);
    if had >= slots {
        return futex_table_slots();
    }
    (futex_hash_prctl(PR_FUTEX_HASH_SET_SLOTS, slots) == Some(0)).then_some(slots)
}

/// The slots of this process's private futex table, if it has one.
pub fn futex_table_slots() -> Option<usize> {
    futex_hash_prctl(PR_FUTEX_HASH_GET_SLOTS, 0)
        .and_then(|slots| usize::try_from(slots).ok())
        .filter(|&slots| slots > 0)
}

/// One of switchboard's three `unsafe` calls (see `os`);
/// `None` where the kernel refuses it.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn futex_hash_prctl(operation: u64, slots: usize) -> Option<i32> {
    // SAFETY: this prctl takes integers only and reads or writes no memory of
    // ours; a kernel that does not know it answers EINVAL and changes nothing.
    let answer = unsafe {
        libc::prctl(
            PR_FUTEX_HASH,
            operation as libc::c_ulong,
            slots as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    (answer >= 0).then_some(answer)
}

#[cfg(not(target_os = "linux"))]
fn futex_hash_prctl(_operation: u64, _slots: usize) -> Option<i32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_futex_table_grows_to_a_slot_per_parked_thread() {
        let Some(slots) = size_futex_table(5000) else {
            // A kernel before 6.16: there is no private table to size.
            assert_eq!(futex_table_slots(), None);
            return;
        };
        assert!(slots >= 16_384, "{slots} slots for 5000 connections");
        assert!(futex_table_slots().is_some_and(|now| now >= 10_000));
        // Asking for less never shrinks it.
        assert!(size_futex_table(10).is_some_and(|now| now >= 10_000));
    }
}
