//! Read results waiting for their marker: the meeting point of the command
//! thread, which runs a read and gets its events back, and the relay, which
//! learns from the read's marker *when* to hand them to the hub.
//!
//! Reads are numbered by the command thread (`token`) in the order their
//! scripts run. It files each successful result under its token, and then
//! raises `settled` past every token whose outcome it knows (success or
//! failure). The relay, at marker `T`, waits until `settled >= T`, takes
//! `T`'s result if there is one (none: the read failed, and the command
//! thread has told the hub), and takes every older one too: their markers
//! went to a subscription that was lost, so they can no longer be placed in
//! the stream of events, and are answered as failed.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::engine::Ticket;
use crate::protocol::Event;

/// How long the relay waits, at a marker, for the command thread to file
/// what it read (it is already on its way: the marker came after the read).
const SETTLE_WAIT: Duration = Duration::from_secs(5);

/// A read's events, waiting for its marker.
pub struct Done {
    /// Who asked.
    pub ticket: Ticket,
    /// What the read found, in id order.
    pub events: Vec<Arc<Event>>,
}

#[derive(Default)]
struct State {
    settled: u64,
    done: BTreeMap<u64, Done>,
}

/// Results shared by the command thread and the relay.
#[derive(Default)]
pub struct Reads {
    state: Mutex<State>,
    settled: Condvar,
}

impl Reads {
    /// Files a read's events (command thread).
    pub fn file(&self, token: u64, done: Done) {
        self.lock().done.insert(token, done);
    }

    /// Every token up to `token` has its outcome known (command thread).
    pub fn settle(&self, token: u64) {
        let mut state = self.lock();
        state.settled = state.settled.max(token);
        drop(state);
        self.settled.notify_all();
    }

    /// At marker `token` (relay): its result, if the read succeeded, and
    /// the orphans older than it.
    pub fn take(&self, token: u64) -> (Option<Done>, Vec<Done>) {
        let deadline = Instant::now() + SETTLE_WAIT;
        let mut state = self.lock();
        while state.settled < token {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!("redis read {token}: its result never came");
                break;
            }
            state = match self.settled.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        let mine = state.done.remove(&token);
        let newer = state.done.split_off(&token);
        let orphans = std::mem::replace(&mut state.done, newer);
        (mine, orphans.into_values().collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the map half-changed: every change
        // is one call on it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
