//! Connecting to Redis, with deadlines, and waiting between attempts.
//!
//! Every engine thread holds a connection of its own and opens it through
//! `connect`: a connect timeout and read/write timeouts, so that a Redis
//! that stops answering turns into an error on that thread (and a
//! reconnection), never into a thread stuck for ever. `Backoff` spaces the
//! attempts of a thread that keeps failing.

use std::time::Duration;

use ::redis::{Client, Connection, RedisResult};

/// The longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a command's reply may take before the connection counts as lost.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection for commands (not for a subscription: see `subscriber`).
pub fn connect(client: &Client) -> RedisResult<Connection> {
    let con = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    con.set_read_timeout(Some(REPLY_TIMEOUT))?;
    con.set_write_timeout(Some(REPLY_TIMEOUT))?;
    Ok(con)
}

/// A connection for a subscription: it waits for messages as long as it
/// takes (a quiet hub sends none), and learns that Redis is gone when the
/// socket ends (TCP keepalive covers a peer that vanished without a word).
pub fn connect_subscriber(client: &Client) -> RedisResult<Connection> {
    let con = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    con.set_write_timeout(Some(REPLY_TIMEOUT))?;
    Ok(con)
}

/// Waits between attempts: 50 ms, doubling up to 2 s.
pub struct Backoff {
    next: Duration,
}

const FIRST: Duration = Duration::from_millis(50);
const MOST: Duration = Duration::from_secs(2);

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { next: FIRST }
    }
}

impl Backoff {
    /// How long to wait before the next attempt (and doubles it).
    pub fn next(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(MOST);
        now
    }

    /// An attempt worked: start from the shortest wait again.
    pub fn reset(&mut self) {
        self.next = FIRST;
    }
}
