//! The Redis engine's metrics, registered beside the others with `--redis`
//! (`Metrics::with_redis`): is Redis up, how often the engine reconnected,
//! how long a pipelined publish takes, how many events went out and came in,
//! how many rooms' history was found lost, and how much work the engine
//! turned away with its job queue full. Atomics, touched by the
//! engine's threads; `/healthz` reads `up`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Counters and gauges of the Redis engine.
pub struct RedisMetrics {
    up: Gauge,
    reconnects: Counter,
    publish_seconds: Histogram,
    relayed_out: Counter,
    relayed_in: Counter,
    history_lost: Counter,
    jobs_refused: Counter,
}

impl Default for RedisMetrics {
    fn default() -> RedisMetrics {
        RedisMetrics {
            up: Gauge::default(),
            reconnects: Counter::default(),
            // 100 µs to about 1.6 s.
            publish_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            relayed_out: Counter::default(),
            relayed_in: Counter::default(),
            history_lost: Counter::default(),
            jobs_refused: Counter::default(),
        }
    }
}

impl RedisMetrics {
    /// Registers them under `switchboard_redis_`.
    pub(crate) fn register(&self, r: &mut Registry) {
        r.register(
            "switchboard_redis_up",
            "1 while this node is subscribed to Redis and has caught up; 0 while publishes are refused",
            self.up.clone(),
        );
        r.register(
            "switchboard_redis_reconnects",
            "Times the engine connected to Redis again after losing it",
            self.reconnects.clone(),
        );
        r.register(
            "switchboard_redis_publish_seconds",
            "Round trip of one pipelined batch of publishes to Redis",
            self.publish_seconds.clone(),
        );
        r.register(
            "switchboard_redis_events_out",
            "Room events this node published to Redis",
            self.relayed_out.clone(),
        );
        r.register(
            "switchboard_redis_events_in",
            "Room events relayed from Redis to this node's hub (its own included)",
            self.relayed_in.clone(),
        );
        r.register(
            "switchboard_redis_history_lost",
            "Rooms whose history was found gone after a reconnection (members got history_lost)",
            self.history_lost.clone(),
        );
        r.register(
            "switchboard_redis_jobs_refused",
            "Publishes, reads and presence changes turned away because the engine's job queue was full",
            self.jobs_refused.clone(),
        );
    }

    /// Whether the engine is subscribed and caught up.
    pub fn is_up(&self) -> bool {
        self.up.get() == 1
    }

    pub(crate) fn set_up(&self, up: bool) {
        self.up.set(i64::from(up));
    }

    pub(crate) fn reconnected(&self) {
        self.reconnects.inc();
    }

    pub(crate) fn published(&self, count: u64, seconds: f64) {
        self.relayed_out.inc_by(count);
        self.publish_seconds.observe(seconds);
    }

    pub(crate) fn relayed(&self) {
        self.relayed_in.inc();
    }

    pub(crate) fn lost(&self) {
        self.history_lost.inc();
    }

    pub(crate) fn job_refused(&self) {
        self.jobs_refused.inc();
    }
}
