//! Shutdown by disconnection: the pattern that ends every thread.
//!
//! 1. A signal thread turns SIGINT/SIGTERM into a message; `main` waits on it.
//! 2. `Server::shutdown` drops the shutdown sender. Every thread that selects
//!    on the paired receiver (the hub) or `try_recv`s it (accept loops) sees it
//!    disconnect at the same moment: dropping the sender is the broadcast.
//! 3. Blocked `accept`s are woken by a throwaway connection to their own
//!    address; tiny_http by `unblock()`.
//! 4. The hub queues close 1001 for every client and drops its senders; each
//!    writer sends what is queued, then closes, which wakes its reader.
//! 5. Each connection thread holds a clone of a never-used `done` sender. The
//!    server drops its own; `recv_timeout` answering `Disconnected` means they
//!    have all ended. Past the grace period it reports how many are left.

use std::io;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::os::threads::{spawn_named, WRITER_STACK_BYTES};

/// A channel that receives one message when SIGINT or SIGTERM arrives.
pub fn on_signal() -> io::Result<Receiver<i32>> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let (tx, rx) = bounded(1);
    spawn_named("signals".into(), WRITER_STACK_BYTES, move || {
        if let Some(signal) = signals.forever().next() {
            let _ = tx.send(signal); // main may be gone already
        }
    })?;
    Ok(rx)
}

/// Waits until every holder of a `done` sender has dropped it, for at most
/// `grace`; returns whether they all did in time.
pub fn wait_for_threads(done: &Receiver<()>, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    loop {
        match done.recv_deadline(deadline) {
            Ok(()) => {} // nobody sends on it; keep waiting
            Err(RecvTimeoutError::Disconnected) => return true,
            Err(RecvTimeoutError::Timeout) => return false,
        }
    }
}

/// A `done` channel: give clones of the sender to connection threads.
pub fn done_channel() -> (Sender<()>, Receiver<()>) {
    bounded(0)
}
