//! Prometheus counters and gauges, shared by every thread.
//!
//! Metrics are the one piece of state many threads touch, and they are atomics
//! (prometheus-client's `Counter` and `Gauge`), not a lock: the hub adds once per
//! event (`events_out` by the number of members reached), never once per member.
//! `GET /metrics` renders them with `encode`.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::engine::redis::RedisMetrics;
use crate::protocol::Transport;

/// A `transport` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    /// `ws`, `sse` or `grpc`.
    pub transport: &'static str,
}

/// A `reason` label for refused connections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// One of `REFUSAL_REASONS`.
    pub reason: &'static str,
}

/// The reasons a connection or request is refused, as the `reason` label
/// says them: `limit` (`--max-connections`), `http_limit`
/// (`--max-http-connections`), `origin`, `bad_request`, `not_found`,
/// `threads` (the OS would not start one), `timeout` (a request or handshake
/// past its deadline), `too_large` (a request head or body past its bound),
/// `token` (no good signed token, with `--jwt-*`).
pub const REFUSAL_REASONS: [&str; 9] = [
    "limit",
    "http_limit",
    "origin",
    "bad_request",
    "not_found",
    "threads",
    "timeout",
    "too_large",
    "token",
];

/// Every metric switchboard exports.
#[derive(Default)]
pub struct Metrics {
    registry: Registry,
    connections: Family<TransportLabel, Gauge>,
    events_in: Counter,
    events_out: Counter,
    events_through: Counter,
    slow_consumers: Family<TransportLabel, Counter>,
    queue_ceilings: Family<TransportLabel, Counter>,
    refused: Family<ReasonLabel, Counter>,
    rooms: Gauge,
    rooms_refused: Counter,
    rooms_expired: Counter,
    notices_skipped: Counter,
    history_events: Gauge,
    history_bytes: Gauge,
    history_evicted: Counter,
    members_lagging: Gauge,
    join_waits: Counter,
    http_connections: Gauge,
    /// With `--redis` only.
    redis: Option<RedisMetrics>,
}

impl Metrics {
    /// Registers every metric under the `switchboard_` prefix.
    pub fn new() -> Metrics {
        let mut m = Metrics::default();
        let r = &mut m.registry;
        r.register(
            "switchboard_connections",
            "Open subscriber connections, by transport",
            m.connections.clone(),
        );
        r.register(
            "switchboard_events_in",
            "Messages published into rooms, from every transport",
            m.events_in.clone(),
        );
        r.register(
            "switchboard_events_out",
            "Events queued for delivery to subscribers, or written through",
            m.events_out.clone(),
        );
        r.register(
            "switchboard_events_written_through",
            "Of those, events the hub wrote to a WebSocket or SSE socket itself, without waking its writer thread",
            m.events_through.clone(),
        );
        r.register(
            "switchboard_slow_consumers_dropped",
            "Subscribers dropped because their queue was full while their writer was stuck on a peer that does not read",
            m.slow_consumers.clone(),
        );
        r.register(
            "switchboard_queue_ceiling_dropped",
            "Subscribers dropped because their queue reached its hard ceiling (8 x --send-buffer events) before their writer caught up: the server as a whole fell behind",
            m.queue_ceilings.clone(),
        );
        r.register(
            "switchboard_connections_refused",
            "Connections refused before they were served, by reason",
            m.refused.clone(),
        );
        r.register(
            "switchboard_http_connections",
            "Open plain HTTP connections (SSE streams count under switchboard_connections)",
            m.http_connections.clone(),
        );
        r.register("switchboard_rooms", "Rooms that exist", m.rooms.clone());
        r.register(
            "switchboard_rooms_refused",
            "Rooms not created because --max-rooms exist (a publish answered 503, a join answered an unavailable error)",
            m.rooms_refused.clone(),
        );
        r.register(
            "switchboard_notices_skipped",
            "Joins and leaves not announced because the room was past --join-notices-max",
            m.notices_skipped.clone(),
        );
        r.register(
            "switchboard_rooms_expired",
            "Rooms forgotten, history and all, --room-expiry after their last use without members",
            m.rooms_expired.clone(),
        );
        r.register(
            "switchboard_history_events",
            "Events kept for replay, across all rooms",
            m.history_events.clone(),
        );
        r.register(
            "switchboard_history_bytes",
            "Memory history may hold, across all rooms (each event with every encoding it may cache); at most --max-history-bytes",
            m.history_bytes.clone(),
        );
        r.register(
            "switchboard_history_evicted",
            "Events dropped from history, the hub's oldest first, to keep it within --max-history-bytes",
            m.history_evicted.clone(),
        );
        r.register(
            "switchboard_members_lagging",
            "Subscribers whose queue is more than a quarter full (while many are, new connections wait to join)",
            m.members_lagging.clone(),
        );
        r.register(
            "switchboard_join_waits",
            "Connections that waited to join because many members lagged",
            m.join_waits.clone(),
        );
        // Every series a dashboard plots exists from the start, at zero: a
        // series that appears only once something happens reads as "no data".
        for transport in [Transport::Ws, Transport::Sse, Transport::Grpc] {
            let label = TransportLabel {
                transport: transport.as_str(),
            };
            let _ = m.connections.get_or_create(&label);
            let _ = m.slow_consumers.get_or_create(&label);
            let _ = m.queue_ceilings.get_or_create(&label);
        }
        for reason in REFUSAL_REASONS {
            let _ = m.refused.get_or_create(&ReasonLabel { reason });
        }
        m
    }

    /// `new`, and the Redis engine's metrics (`--redis`).
    pub fn with_redis() -> Metrics {
        let mut m = Metrics::new();
        let redis = RedisMetrics::default();
        redis.register(&mut m.registry);
        m.redis = Some(redis);
        m
    }

    /// The Redis engine's metrics, with `--redis`.
    pub fn redis(&self) -> Option<&RedisMetrics> {
        self.redis.as_ref()
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    pub(crate) fn connected(&self, transport: Transport) {
        self.connections(transport).inc();
    }

    pub(crate) fn disconnected(&self, transport: Transport) {
        self.connections(transport).dec();
    }

    pub(crate) fn published(&self) {
        self.events_in.inc();
    }

    /// `count` events delivered, `through` of them written by the hub itself.
    pub(crate) fn delivered(&self, count: u64, through: u64) {
        self.events_out.inc_by(count);
        self.events_through.inc_by(through);
    }

    pub(crate) fn slow_consumer(&self, transport: Transport) {
        self.slow_consumers
            .get_or_create(&TransportLabel {
                transport: transport.as_str(),
            })
            .inc();
    }

    pub(crate) fn queue_ceiling(&self, transport: Transport) {
        self.queue_ceilings
            .get_or_create(&TransportLabel {
                transport: transport.as_str(),
            })
            .inc();
    }

    /// Counts a connection refused before it was served.
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub(crate) fn set_rooms(&self, rooms: usize, history_events: usize, history_bytes: usize) {
        self.rooms.set(rooms as i64);
        self.history_events.set(history_events as i64);
        self.history_bytes.set(history_bytes as i64);
    }

    pub(crate) fn room_refused(&self) {
        self.rooms_refused.inc();
    }

    pub(crate) fn notice_skipped(&self) {
        self.notices_skipped.inc();
    }

    pub(crate) fn rooms_expired(&self, count: u64) {
        self.rooms_expired.inc_by(count);
    }

    pub(crate) fn history_evicted(&self, count: u64) {
        self.history_evicted.inc_by(count);
    }

    /// How many members lag now (read from the hub's `Admission` as the
    /// metrics are scraped: it changes as writers take, not in hub rounds).
    pub fn set_members_lagging(&self, lagging: usize) {
        self.members_lagging.set(lagging as i64);
    }

    /// A plain HTTP connection opened (`+1`) or ended (`-1`).
    pub fn http_connections_add(&self, delta: i64) {
        self.http_connections.inc_by(delta);
    }

    /// Plain HTTP connections open now.
    pub fn http_connections(&self) -> i64 {
        self.http_connections.get()
    }

    /// Counts a connection that waited to join.
    pub fn join_waited(&self) {
        self.join_waits.inc();
    }

    fn connections(&self, transport: Transport) -> Gauge {
        self.connections
            .get_or_create(&TransportLabel {
                transport: transport.as_str(),
            })
            .clone()
    }
}
