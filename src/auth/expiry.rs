//! A connection's token over time: when it runs out (`Expiry`), and a
//! refresh that moves that end (`Session`).
//!
//! `Expiry` is shared by the thread that may extend it (the connection's
//! reader, on a refresh) and the one that ends the connection then (a
//! WebSocket's writer, a gRPC stream). One atomic, no lock: the ender reads
//! it each time it wakes, and wakes by then at the latest.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::protocol::Event;

use super::aside::verify_aside;
use super::grants::{forbidden, Access, Grants};
use super::verify::{TokenError, Verifier};

/// A connection opened with a token: whose it is, and when it ends.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token's user (`sub`), which a refresh may not change.
    pub user: Arc<str>,
    /// When the connection ends unless a refresh moves it.
    pub expiry: Arc<Expiry>,
}

impl Session {
    /// The session of a connection opened with `grants`.
    pub fn new(grants: &Grants) -> Session {
        Session {
            user: Arc::clone(&grants.user),
            expiry: Arc::new(Expiry::new(grants.good_until)),
        }
    }

    /// A fresh token (`{"type":"refresh"}`, `/token`, gRPC `refresh`):
    /// checked like the first and for the same user, it moves the end and
    /// returns what the connection may now do (for `Command::Regrant`). A
    /// refused one changes nothing and returns the error event to send: the
    /// old token still ends the connection on time.
    pub fn refresh(&self, verifier: &Arc<Verifier>, token: &str) -> Result<Access, Box<Event>> {
        let grants = verify_aside(verifier, token).map_err(|e| {
            let code = match e {
                TokenError::Unavailable => "unavailable",
                _ => "unauthorized",
            };
            Box::new(Event::error(code, e.to_string()))
        })?;
        if grants.user != self.user {
            let message = format!("a refresh may not change the user ({})", self.user);
            return Err(Box::new(forbidden(message)));
        }
        self.expiry.renew(grants.good_until);
        Ok(Access::Token(Arc::new(grants)))
    }
}

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
        Instant::now()
            + end
                .saturating_sub(unix_now())
                .min(Duration::from_secs(86_400))
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
