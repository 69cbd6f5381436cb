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
