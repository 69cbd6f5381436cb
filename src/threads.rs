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

use std::io;
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
/// Threads one connection costs (a reader and a writer; an SSE stream and the
/// HTTP library's connection thread).
const THREADS_PER_CONNECTION: usize = 2;
/// Maps and threads kept for everything else (libraries, listeners, the hub).
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
