//! Letting new members in only as fast as the old ones keep up.
//!
//! Every join is a `joined` notice to every member of the room, so a room of
//! thousands joining at once is millions of deliveries (12.5 M for 5000). The
//! members' queues all fill together, their writers all need the CPU at
//! once, and the ones that get it last find their queues full and are dropped
//! as slow consumers: 138 of 5000 in one run of `scripts/bench.sh --only
//! idle5000`, 3 in another, through no fault of their own.
//!
//! So the hub counts the members that *lag* — whose queue is more than a
//! quarter full (`queue`'s `lags_at`) — and a connection that is about to join
//! waits while a crowd of them does (`Admission::wait_to_join`): the storm
//! goes as fast as the members keep up. A quarter, not half: joins already
//! past the door (up to a client's whole connect concurrency) must still fit
//! in what is left of the queues. Three runs of the same scenario after it
//! dropped 0, 1 and 0 of 5000. A crowd is many members, and a
//! share of them: one stalled client, or a few, cannot hold the door for
//! everyone else, and they are still dropped when their own queue is full.
//! The wait is bounded, so a server that stays busy still lets people in.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Lagging members are a crowd from this many on...
const CROWD_MIN: usize = 32;
/// ...and only if they are more than one member in this many.
const CROWD_SHARE: usize = 20;
/// The longest a connection waits to join.
const JOIN_WAIT_MAX: Duration = Duration::from_secs(2);
/// How often a waiting connection looks again, notified or not.
const RECHECK: Duration = Duration::from_millis(50);

/// The count of lagging members, shared by the hub, every member's consumer,
/// and the transports that let new members in.
#[derive(Debug, Default)]
pub struct Admission {
    lagging: AtomicUsize,
    members: AtomicUsize,
    /// Held to wait on `door`, and to open it.
    waiting: Mutex<()>,
    door: Condvar,
}

impl Admission {
    /// A member's queue went past a quarter full.
    pub fn lags(&self) {
        self.lagging.fetch_add(1, Ordering::AcqRel);
    }

    /// A member's queue is back to a quarter full or less, or the member is gone.
    pub fn caught_up(&self) {
        let lagging = self.lagging.fetch_sub(1, Ordering::AcqRel) - 1;
        if self.is_crowd(lagging + 1) && !self.is_crowd(lagging) {
            // The lock orders this after a waiter's check: no lost wake-up.
            let _waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            self.door.notify_all();
        }
    }

    /// The hub's count of members changed.
    pub fn set_members(&self, members: usize) {
        self.members.store(members, Ordering::Release);
    }

    /// How many members lag now.
    pub fn lagging(&self) -> usize {
        self.lagging.load(Ordering::Acquire)
    }

    fn is_crowd(&self, lagging: usize) -> bool {
        lagging >= CROWD_MIN
            && lagging.saturating_mul(CROWD_SHARE) > self.members.load(Ordering::Acquire)
    }

    /// Waits, at most `JOIN_WAIT_MAX`, while a crowd of members lags; returns
    /// how long it waited.
    pub fn wait_to_join(&self) -> Duration {
        self.wait_to_join_within(JOIN_WAIT_MAX)
    }

    fn wait_to_join_within(&self, most: Duration) -> Duration {
        let started = Instant::now();
        if !self.is_crowd(self.lagging()) {
            return Duration::ZERO;
        }
        let deadline = started + most;
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        while self.is_crowd(self.lagging()) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            waiting = match self.door.wait_timeout(waiting, left.min(RECHECK)) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_few_laggards_are_no_crowd_and_do_not_hold_the_door() {
        let admission = Admission::default();
        admission.set_members(100);
        for _ in 0..CROWD_MIN - 1 {
            admission.lags();
        }
        assert_eq!(admission.wait_to_join(), Duration::ZERO);
        // Enough of them, but not a share of a big server.
        admission.lags();
        admission.set_members(CROWD_MIN * CROWD_SHARE);
        assert_eq!(admission.wait_to_join(), Duration::ZERO);
    }

    #[test]
    fn joiners_wait_while_a_crowd_lags_and_go_once_it_has_caught_up() {
        let admission = Arc::new(Admission::default());
        admission.set_members(1000);
        for _ in 0..100 {
            admission.lags();
        }
        let waiter = {
            let admission = Arc::clone(&admission);
            std::thread::spawn(move || {
                let waited = admission.wait_to_join_within(Duration::from_secs(60));
                (waited, Instant::now())
            })
        };
        // Time for a waiter that does not wait to go in (and be caught).
        std::thread::sleep(Duration::from_millis(100));
        let cleared_at = Instant::now();
        for _ in 0..100 {
            admission.caught_up();
        }
        let (waited, went_at) = waiter.join().expect("the waiter");
        assert!(went_at >= cleared_at, "went in while 100 of 1000 lagged");
        assert!(
            waited < Duration::from_secs(60),
            "waited out its whole bound: {waited:?}"
        );
        assert_eq!(admission.lagging(), 0);
    }

    #[test]
    fn the_wait_is_bounded_when_the_crowd_stays() {
        let admission = Admission::default();
        admission.set_members(100);
        for _ in 0..100 {
            admission.lags();
        }
        let waited = admission.wait_to_join_within(Duration::from_millis(120));
        assert!(waited >= Duration::from_millis(120), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }
}
