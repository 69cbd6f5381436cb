//! Starting and stopping the whole server: bind, spawn, and shut down in order.
//!
//! `Server::start` is what `main` and every integration test call: it binds
//! each listener (port 0 picks a free one), starts the hub and the listener
//! threads, and returns the bound addresses. `Server::shutdown` (or dropping
//! the `Server`) runs the sequence described in `shutdown.rs`.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use log::{debug, info, warn};

use crate::config::Config;
use crate::engine::redis::RedisOptions;
use crate::engine::{Engine, MemoryEngine, RedisEngine};
use crate::hub::{ClientIds, Hub, HubHandle};
use crate::metrics::Metrics;
use crate::origin::OriginRule;
use crate::shutdown::{done_channel, wait_for_threads};
use crate::transport::{ws, ConnectionLimit, Shared};

/// A running switchboard.
pub struct Server {
    /// Where the HTTP listener is bound.
    pub http_addr: SocketAddr,
    /// Where the WebSocket listener is bound.
    pub ws_addr: SocketAddr,
    /// Where the gRPC listener is bound, if it runs.
    pub grpc_addr: Option<SocketAddr>,
    shared: Shared,
    shutdown: Option<Sender<()>>,
    done: Receiver<()>,
    threads: Vec<JoinHandle<()>>,
}

/// What shutting down took.
#[derive(Debug)]
pub struct ShutdownReport {
    /// From the start of shutdown until every thread ended or the grace ran out.
    pub took: Duration,
    /// Whether every connection thread ended within the grace period.
    pub clean: bool,
    /// Connections still open when shutdown gave up waiting.
    pub connections_left: usize,
}

impl Server {
    /// Binds the listeners and starts every thread, with ids and history in
    /// memory (`engine::MemoryEngine`).
    pub fn start(config: Config) -> io::Result<Server> {
        Server::launch(config, None)
    }

    /// Like `start`, with ids and history in `engine` (see `engine`: how a
    /// second engine plugs in).
    pub fn start_with_engine(config: Config, engine: Box<dyn Engine>) -> io::Result<Server> {
        Server::launch(config, Some(engine))
    }

    fn launch(config: Config, engine: Option<Box<dyn Engine>>) -> io::Result<Server> {
        let config = Arc::new(config);
        let ws_listener = bind_for("--ws", config.ws_addr)?;
        let http_listener = crate::http::bind(config.http_addr, config.write_timeout)
            .map_err(|e| with_address(e, "--http", config.http_addr))?;
        let http_addr = http_listener.local_addr()?;
        let ws_addr = ws_listener.local_addr()?;
        let grpc_listener = config
            .grpc_addr
            .map(|addr| bind_for("--grpc", addr))
            .transpose()?;
        let grpc_addr = grpc_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;

        let limit = connection_limit(&config);
        match crate::os::threads::size_futex_table(limit) {
            Some(slots) => debug!("futex hash table: {slots} slots"),
            None => debug!("futex hash table: the kernel's own"),
        }
        let on_redis = engine.is_none() && config.redis.is_some();
        let metrics = Arc::new(if on_redis {
            Metrics::with_redis()
        } else {
            Metrics::new()
        });
        let (shutdown, shutdown_rx) = bounded::<()>(0);
        let (done, done_rx) = done_channel();
        let engine = match (engine, &config.redis) {
            (Some(engine), _) => engine,
            (None, Some(url)) => {
                let node = node_name(&config, http_addr);
                info!("node {node} on {url}");
                let options = RedisOptions {
                    url: url.clone(),
                    history: config.history,
                    room_expiry: config.room_expiry,
                    max_rooms: config.max_rooms,
                    node,
                    heartbeat: config.heartbeat,
                };
                Box::new(RedisEngine::start(&options, Arc::clone(&metrics))?)
            }
            (None, None) => Box::new(MemoryEngine::new(Arc::clone(&metrics))),
        };
        let (hub, hub_thread) = Hub::spawn_with_engine(
            engine,
            config.retention(),
            config.send_buffer,
            Arc::clone(&metrics),
            shutdown_rx.clone(),
        )?;
        let origins = OriginRule::new(&config.allowed_origins, &config.public_hosts, http_addr);
        let shared = Shared {
            hub,
            config: Arc::clone(&config),
            origins: Arc::new(origins),
            metrics,
            ids: Arc::new(ClientIds::default()),
            limit: ConnectionLimit::new(limit),
            shutdown: shutdown_rx,
            done,
        };
        let mut threads = vec![
            hub_thread,
            ws::spawn_listener(ws_listener, shared.clone())?,
            crate::http::spawn_listener(http_listener, shared.clone(), ws_addr)?,
        ];
        if let Some(listener) = grpc_listener {
            threads.push(spawn_grpc(listener, shared.clone())?);
        }
        info!("listening: http {http_addr}, ws {ws_addr}");
        Ok(Server {
            http_addr,
            ws_addr,
            grpc_addr,
            shared,
            shutdown: Some(shutdown),
            done: done_rx,
            threads,
        })
    }

    /// A handle on the hub, for programs that embed switchboard.
    pub fn hub(&self) -> HubHandle {
        self.shared.hub.clone()
    }

    /// The server's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.shared.metrics)
    }

    /// Stops accepting, says goodbye to every client (close 1001), and waits up
    /// to the grace period for every connection thread to end.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.stop()
    }

    fn stop(&mut self) -> ShutdownReport {
        let started = Instant::now();
        drop(self.shutdown.take()); // the broadcast: every receiver sees it disconnect
                                    // Each accept loop is woken by a connection to its own address.
        for addr in [self.ws_addr, self.http_addr] {
            let _ = TcpStream::connect_timeout(&ws::wake_address(addr), Duration::from_secs(1));
        }
        // Our own `done` sender lives in `shared`: swap it out so only
        // connection threads hold one.
        let (orphan, _) = done_channel();
        drop(std::mem::replace(&mut self.shared.done, orphan));
        let clean = wait_for_threads(&self.done, self.shared.config.shutdown_grace);
        let connections_left = self.shared.limit.open();
        if !clean {
            warn!("shutdown: {connections_left} connections still open after the grace period");
        }
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                warn!("a server thread panicked");
            }
        }
        ShutdownReport {
            took: started.elapsed(),
            clean,
            connections_left,
        }
    }
}

/// The gRPC front's thread: it owns the tokio runtime, stops it at shutdown,
/// and is joined like the accept threads.
#[cfg(feature = "grpc")]
fn spawn_grpc(listener: TcpListener, shared: Shared) -> io::Result<JoinHandle<()>> {
    crate::transport::grpc::spawn(listener, shared)
}

/// Without the feature `Config` refuses `--grpc`, so this is never reached.
#[cfg(not(feature = "grpc"))]
fn spawn_grpc(_listener: TcpListener, _shared: Shared) -> io::Result<JoinHandle<()>> {
    Err(io::Error::other(
        "--grpc needs a binary built with `--features grpc`",
    ))
}

/// `--node-name`, or the host name and the HTTP port.
fn node_name(config: &Config, http_addr: SocketAddr) -> String {
    if let Some(name) = &config.node_name {
        return name.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", http_addr.port())
}

/// `--max-connections`, lowered to what the kernel's limits allow: refusing a
/// connection with 503 beats a thread that cannot start. Lowering a limit the
/// user chose is worth a warning; lowering the default is only said.
fn connection_limit(config: &Config) -> usize {
    let ceiling = crate::os::threads::connection_ceiling();
    let limit = lowered(config.max_connections, ceiling);
    if limit < config.max_connections {
        let why = "each connection is up to two threads, each thread four memory maps";
        if config.max_connections_chosen {
            warn!(
                "--max-connections {} is past what this kernel allows (about {limit}: {why}); \
                 using {limit}. Raise it with: sysctl -w vm.max_map_count=262144",
                config.max_connections
            );
        } else {
            info!("at most {limit} connections: what this kernel allows ({why})");
        }
    }
    limit
}

/// The connection limit: `asked`, or the kernel's `ceiling` if that is lower.
fn lowered(asked: usize, ceiling: Option<usize>) -> usize {
    ceiling.map_or(asked, |ceiling| asked.min(ceiling))
}

/// Binds `addr` for `option`; a failure says which address it was.
fn bind_for(option: &str, addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| with_address(e, option, addr))
}

fn with_address(e: io::Error, option: &str, addr: SocketAddr) -> io::Error {
    io::Error::new(e.kind(), format!("{option} {addr}: {e}"))
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.shutdown.is_some() {
            self.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lowered;

    #[test]
    fn the_kernel_lowers_the_connection_limit_never_raises_it() {
        assert_eq!(lowered(10_000, Some(8066)), 8066);
        assert_eq!(lowered(500, Some(8066)), 500);
        assert_eq!(lowered(10_000, None), 10_000);
    }
}
