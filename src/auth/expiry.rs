//! When a connection's token runs out: shared by the thread that may extend
//! it (a WebSocket's reader, on a refresh) and the one that ends the
//! connection then (its writer). One atomic, no lock: the writer reads it
//! each time it wakes, and wakes by then at the latest.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A token's end, in Unix seconds (`exp` plus the leeway).
#[derive(Debug)]
pub struct Expiry(AtomicU64);

impl Expiry {
    /// Ends at `good_until` (Unix seconds).
    pub fn new(good_until: u64) -> Expiry {
        Expiry(AtomicU64::new(good_until))
    }

    /// A fresh token came: it ends at its own time now.
    pub fn renew(&self, good_until: u64) {
        self.0.store(good_until, Ordering::Release);
    }

    /// Whether the token has run out.
    pub fn is_past(&self) -> bool {
        unix_now() >= Duration::from_secs(self.0.load(Ordering::Acquire))
    }

    /// When it runs out, on the monotonic clock (at most a day ahead: a
    /// waiter looks again then, which costs nothing and cannot overflow).
    pub fn deadline(&self) -> Instant {
        let end = Duration::from_secs(self.0.load(Ordering::Acquire));
        Instant::now() + end.saturating_sub(unix_now()).min(Duration::from_secs(86_400))
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewing_moves_the_end() {
        let now = unix_now().as_secs();
        let expiry = Expiry::new(now - 1);
        assert!(expiry.is_past());
        assert!(expiry.deadline() <= Instant::now());
        expiry.renew(now + 60);
        assert!(!expiry.is_past());
        assert!(expiry.deadline() > Instant::now() + Duration::from_secs(58));
    }
}
