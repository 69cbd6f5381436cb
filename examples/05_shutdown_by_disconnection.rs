//! Lesson 5: shutdown by disconnection: drop one sender, and every thread knows.
//!
//! A message on a channel reaches *one* receiver, however many threads wait
//! on it. A disconnection reaches them all: once every sender is dropped,
//! each `recv` on the channel returns `Err` at once, and keeps doing so. So
//! the shutdown channel carries nothing; dropping its one sender is the
//! broadcast. The way back works the same: each worker holds a clone of a
//! `done` sender nobody sends on, and when the last worker ends, `main`'s
//! `recv_timeout` returns `Disconnected`: all are finished, no count kept.
//!
//! Eight workers take jobs and select on the shutdown receiver. `main` first
//! sends one message on it (one worker stops), then drops the sender (the
//! other seven stop), and waits on `done` for at most a grace period.
//!
//!     cargo run --example 05_shutdown_by_disconnection
//!
//! In switchboard: `src/shutdown.rs` (`wait_for_threads`, `done_channel`) and
//! `Server::shutdown` in `src/server.rs`; the hub's loop selects on the same
//! shutdown receiver.

use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, Receiver, RecvTimeoutError, Sender};

/// One worker: everything its thread needs, owned.
struct Worker {
    n: usize,
    /// Shared by all eight: each job goes to one of them.
    jobs: Receiver<u32>,
    shutdown: Receiver<()>,
    /// Never sent on: dropped when `run` returns, even if it panics.
    _done: Sender<()>,
}

impl Worker {
    /// Works until shutdown; returns how it learned of it.
    fn run(self) -> String {
        loop {
            select! {
                recv(self.jobs) -> job => match job {
                    Ok(ms) => thread::sleep(Duration::from_millis(ms.into())), // a job: a few ms
                    Err(_) => return format!("worker {}: no more jobs", self.n),
                },
                recv(self.shutdown) -> signal => {
                    let how = match signal {
                        Ok(()) => "got the one message",
                        Err(_) => "saw the disconnection",
                    };
                    return format!("worker {}: {how}", self.n);
                }
            }
        }
    }
}

/// Waits until every `done` sender is dropped, for at most `grace`:
/// `shutdown::wait_for_threads` in switchboard.
fn wait_for_threads(done: &Receiver<()>, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    loop {
        match done.recv_deadline(deadline) {
            Ok(()) => {} // nobody sends on it; keep waiting
            Err(RecvTimeoutError::Disconnected) => return true,
            Err(RecvTimeoutError::Timeout) => return false,
        }
    }
}

fn main() {
    let (shutdown, shutdown_rx) = bounded::<()>(0);
    let (done, done_rx) = bounded::<()>(0);
    // A hand-over: `send` returns once a worker has taken the job, so none
    // is left queued when shutdown comes.
    let (to_workers, jobs) = bounded::<u32>(0);

    let mut threads = Vec::new();
    for n in 1..=8 {
        let worker = Worker {
            n,
            jobs: jobs.clone(),
            shutdown: shutdown_rx.clone(),
            _done: done.clone(),
        };
        let builder = thread::Builder::new().name(format!("worker {n}"));
        threads.push(
            builder
                .spawn(move || worker.run())
                .expect("a thread starts"),
        );
    }
    drop((jobs, shutdown_rx)); // main keeps only the sending ends

    for job in 0..40 {
        to_workers.send(job % 5).expect("the workers run"); // 0-4 ms of work each
    }

    // A message: exactly one worker receives it, whichever was free.
    shutdown.send(()).expect("the workers run");
    let started = Instant::now();
    // The broadcast: the seven others see the disconnection at once.
    drop(shutdown);
    // The trap: main's own `done` sender would keep the channel connected.
    drop(done);
    let clean = wait_for_threads(&done_rx, Duration::from_secs(3));
    let took = started.elapsed();
    println!("every worker ended within the grace period: {clean} (in {took:?})");

    for thread in threads {
        println!("{}", thread.join().expect("a worker ends cleanly"));
    }
    drop(to_workers); // kept until now so that only shutdown ended the workers
}
