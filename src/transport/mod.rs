//! The transports: how peers reach the hub. Each turns a socket into a
//! `Subscriber` (a bounded queue the hub fills) and `Command`s (what the peer
//! asks), and nothing else; every rule about rooms lives in the hub.
//!
//! What they share is gathered in `Shared`: the hub's handle, the settings,
//! the metrics, the connection limit, and the two channels of shutdown
//! (`shutdown`: disconnected when the server stops; `done`: a clone held by
//! every connection thread, so the server can tell when they have all ended).
//!
//! Writers share one more idea, `crate::pace::Pace`: while the server falls
//! behind, each lingers between writes until the next tick of a clock they
//! all share, so that one wake-up carries many events; while it keeps up,
//! each event goes out at once.

#[cfg(feature = "grpc")]
pub mod grpc;
pub mod refuse;
pub mod sse;
pub mod ws;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::net::{TcpListener, TcpStream};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use log::warn;

use crate::config::Config;
use crate::hub::{ClientIds, HubHandle};
use crate::metrics::Metrics;
use crate::origin::OriginRule;

/// What every transport thread needs, cloned into each.
#[derive(Clone)]
pub struct Shared {
    /// The way to the hub.
    pub hub: HubHandle,
    /// The settings.
    pub config: Arc<Config>,
    /// Which browser pages may connect and publish (built once the HTTP
    /// listener is bound: the rule needs its address).
    pub origins: Arc<OriginRule>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Connection ids.
    pub ids: Arc<ClientIds>,
    /// `--max-connections`, across transports.
    pub limit: Arc<ConnectionLimit>,
    /// Disconnects when the server shuts down; nothing is ever sent on it.
    pub shutdown: Receiver<()>,
    /// Held by every connection thread; nothing is ever sent on it. The server
    /// knows they have all ended when its receiver reports `Disconnected`.
    pub done: Sender<()>,
}

impl Shared {
    /// Whether the server has begun to shut down.
    pub fn shutting_down(&self) -> bool {
        matches!(self.shutdown.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// The connections `listener` accepts, with Nagle off (a small frame or
    /// event must not wait), until the server shuts down. An accept that fails
    /// (out of file descriptors, most often) is logged and backed off from,
    /// instead of spun on.
    pub fn accepted<'a>(
        &'a self,
        listener: &'a TcpListener,
        what: &'static str,
    ) -> impl Iterator<Item = TcpStream> + 'a {
        listener
            .incoming()
            .take_while(|_| !self.shutting_down())
            .filter_map(move |stream| match stream {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    Some(stream)
                }
                Err(e) => {
                    warn!("{what} accept failed: {e}");
                    std::thread::sleep(ACCEPT_BACKOFF);
                    None
                }
            })
    }
}

/// How long an accept loop waits after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Counts open connections across all transports; past `max`, new ones are
/// refused (an atomic counter: the check happens before a thread is spent).
pub struct ConnectionLimit {
    open: AtomicUsize,
    max: usize,
}

impl ConnectionLimit {
    /// A limit of `max` open connections.
    pub fn new(max: usize) -> Arc<ConnectionLimit> {
        Arc::new(ConnectionLimit {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// A permit for one more connection, or `None` at the limit. The permit
    /// gives its place back when dropped.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let taken = self.open.fetch_add(1, Ordering::AcqRel);
        if taken >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Permit(Arc::clone(self)))
    }

    /// How many connections are open.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One connection's place under the limit.
pub struct Permit(Arc<ConnectionLimit>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}
