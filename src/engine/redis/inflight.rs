//! Publishes Redis accepted whose event has not come back yet.
//!
//! A publish is answered when its event returns through the subscription.
//! If the subscription is lost just then, and Redis with it (restarted
//! empty), that event never returns: whoever waits for it (a REST publisher,
//! a member waiting for its own `joined`) would wait for ever. So the
//! command thread notes each publish Redis accepted, the relay crosses it
//! off when the event arrives, and what is still here after `OVERDUE` is
//! answered `Failed` by the command thread. A late event is still fanned
//! out; only its ticket is no longer waited for.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::engine::Ticket;

/// How long an accepted publish may take to come back.
pub const OVERDUE: Duration = Duration::from_secs(5);

/// Tickets of accepted publishes, with when Redis accepted them.
#[derive(Default)]
pub struct InFlight {
    sent: Mutex<HashMap<Ticket, Instant>>,
}

impl InFlight {
    /// Redis accepted the publish of `ticket` (command thread).
    pub fn accepted(&self, ticket: Ticket) {
        self.lock().insert(ticket, Instant::now());
    }

    /// Its event has come back (relay). An event that comes back before the
    /// command thread noted it leaves an entry that `overdue` later returns:
    /// answering `Failed` for a ticket nobody waits for any more is harmless.
    pub fn arrived(&self, ticket: Ticket) {
        self.lock().remove(&ticket);
    }

    /// Takes the tickets accepted longer than `OVERDUE` ago.
    pub fn overdue(&self) -> Vec<Ticket> {
        let mut sent = self.lock();
        if sent.is_empty() {
            return Vec::new();
        }
        let now = Instant::now();
        let late: Vec<Ticket> = sent
            .iter()
            .filter(|(_, at)| now.duration_since(**at) > OVERDUE)
            .map(|(ticket, _)| *ticket)
            .collect();
        for ticket in &late {
            sent.remove(ticket);
        }
        late
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Ticket, Instant>> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner())
    }
}
