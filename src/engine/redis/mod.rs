//! The Redis engine (`--redis`): ids and history in Redis, shared by every
//! node on it, so that several nodes behave as one hub.
//!
//! ```text
//!          sequence ─try_send─> [redis-cmd] ══ EVALSHA publish, pipelined ══> Redis
//!   [hub]  history  ─try_send─>      │       ══ EVALSHA read + marker ════>  │ PUBLISH
//!     ^                              └─ a read's events ─> Reads             │ (one channel,
//!     │                                                     │                │  id order)
//!     └──── Answer (bounded) ──── [redis-sub] <─ at its marker               │
//!                                      ^══ SUBSCRIBE events + node channel ══┘
//! ```
//!
//! **Threads.** The hub only `try_send`s work to the command thread
//! (`commands`) and answers `Later`: it never waits on Redis. The command
//! thread pipelines what is queued, so that many events share one round
//! trip under load. The relay thread (`relay`) holds the subscription and
//! is the only source of sequenced events for this hub: a node's own
//! publishes come back through Redis too, in the hub-wide order, carrying
//! their ticket. Both threads hold a connection of their own (`link`).
//!
//! **Atomic publish** (`scripts::PUBLISH`): one Lua script per event gives it
//! the next id of one hub-wide counter, appends it to its room's stream
//! (trimmed to `--history`), counts it in its room under the room's epoch,
//! and publishes it on the one channel every node subscribes to. So every
//! node sees every room's events in id order, with no gap.
//!
//! **Reads keep the engine's contract** through a marker: the read script
//! publishes a marker on this node's channel in the same step as it reads,
//! and the relay answers the read when the marker arrives (`reads`).
//!
//! **Down and back.** While the subscription is lost the engine is down:
//! `sequence` answers `Unavailable` at once (REST 503, an `unavailable` error
//! event), `/healthz` says `503 redis unavailable`. The relay reconnects with
//! a backoff, subscribes, and catches up (`recovery`): each room's missed
//! events from its stream, or, when its epoch changed or its count has a
//! hole, `Answer::Lost` and `history_lost` for its members. Then it is up.
//!
//! Choices, and why (one channel, streams, epochs): `docs/redis.md`.

mod commands;
mod inflight;
mod link;
mod metrics;
mod presence;
mod reads;
mod recovery;
mod relay;
mod scripts;
mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use log::{debug, warn};

use crate::log_every::LogEvery;
use crate::metrics::Metrics;
use crate::os::threads::{spawn_named, READER_STACK_BYTES};
use crate::rooms::Rooms;

use super::{Answer, Draft, Engine, Read, Reading, Remote, Sequenced, Ticket};
use crate::room::{Name, RoomName};
use commands::{Commands, Job, Settings};
use inflight::InFlight;
use presence::Replica;
use reads::Reads;
use relay::Relay;

pub use metrics::RedisMetrics;

/// Jobs that may wait for the command thread; past it, publishes are refused.
const JOB_QUEUE: usize = 65_536;
/// Answers that may wait for the hub; past it, the engine's threads wait.
const ANSWER_QUEUE: usize = 4096;

/// What the Redis engine needs to start.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// `--history`: events kept per room.
    pub history: usize,
    /// `--room-expiry`: a room's history expires this long after its last
    /// event (zero: it does not expire in Redis).
    pub room_expiry: Duration,
    /// `--max-rooms`: also the most rooms the relay remembers its place in.
    pub max_rooms: usize,
    /// `--node-name`: this node in presence, and its connections in Redis'
    /// `CLIENT LIST`.
    pub node: String,
    /// `--heartbeat`: how often this node says it is alive.
    pub heartbeat: Duration,
}

/// Ids and history in Redis (see the module doc).
pub struct RedisEngine {
    jobs: Sender<Job>,
    node: Arc<str>,
    replica: Arc<Replica>,
    answers: Receiver<Answer>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    /// Disconnects when the command thread has ended (`Drop` waits for it).
    ended: Receiver<()>,
    /// A full job queue, said in the log at most once a minute.
    full_warning: LogEvery,
}

/// The longest a stopping engine waits for its command thread's goodbye.
const GOODBYE_WAIT: Duration = Duration::from_secs(3);

impl RedisEngine {
    /// Checks the URL and starts the engine's threads; they connect (and
    /// keep connecting) on their own. `metrics` must come from
    /// `Metrics::with_redis`.
    pub fn start(options: &RedisOptions, metrics: Arc<Metrics>) -> std::io::Result<RedisEngine> {
        let client = ::redis::Client::open(options.url.as_str())
            .map_err(|e| std::io::Error::other(format!("--redis {}: {e}", options.url)))?;
        let instance = instance_token();
        let (jobs, work) = bounded(JOB_QUEUE);
        let (to_hub, answers) = bounded(ANSWER_QUEUE);
        let reads = Arc::new(Reads::default());
        let inflight = Arc::new(InFlight::default());
        let floor = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let settings = Settings {
            instance: instance.clone(),
            history: options.history,
            expiry_ms: u64::try_from(options.room_expiry.as_millis()).unwrap_or(u64::MAX),
            node: options.node.clone(),
            heartbeat: options.heartbeat.max(Duration::from_millis(100)),
        };
        let replica = Arc::new(Replica::default());
        let commands = Commands::new(
            client.clone(),
            settings,
            Arc::clone(&floor),
            Arc::clone(&reads),
            Arc::clone(&inflight),
            to_hub.clone(),
            Arc::clone(&metrics),
        );
        let relay = Relay {
            client,
            node: options.node.clone(),
            instance,
            to_hub,
            reads,
            inflight,
            replica: Arc::clone(&replica),
            jobs: jobs.clone(),
            floor,
            metrics: Arc::clone(&metrics),
            stop: Arc::clone(&stop),
            tracks: HashMap::new(),
            max_tracked: options.max_rooms.max(1),
        };
        let (ending, ended) = bounded::<()>(0);
        spawn_named("redis-cmd".into(), READER_STACK_BYTES, move || {
            commands.run(work);
            drop(ending);
        })?;
        spawn_named("redis-sub".into(), READER_STACK_BYTES, move || relay.run())?;
        Ok(RedisEngine {
            jobs,
            node: options.node.as_str().into(),
            replica,
            answers,
            metrics,
            stop,
            ended,
            full_warning: LogEvery::new(Duration::from_secs(60)),
        })
    }

    fn is_up(&self) -> bool {
        self.metrics.redis().is_some_and(RedisMetrics::is_up)
    }

    /// The job queue was full and `what` happened instead: counted every
    /// time, said in the log at most once a minute (under a flood of
    /// publishes it is full for each of them).
    fn queue_full(&mut self, what: &str) {
        if let Some(redis) = self.metrics.redis() {
            redis.job_refused();
        }
        if self.full_warning.due() {
            warn!("redis: {JOB_QUEUE} jobs queued; {what} (switchboard_redis_jobs_refused counts every one)");
        } else {
            debug!("redis: {JOB_QUEUE} jobs queued; {what}");
        }
    }
}

impl Engine for RedisEngine {
    fn sequence(&mut self, _local: &mut Rooms, ticket: Ticket, draft: Draft) -> Sequenced {
        if !self.is_up() {
            return Sequenced::Unavailable;
        }
        match self.jobs.try_send(Job::Publish(ticket, draft)) {
            Ok(()) => Sequenced::Later,
            Err(TrySendError::Full(_)) => {
                self.queue_full("publish refused");
                Sequenced::Unavailable
            }
            Err(TrySendError::Disconnected(_)) => Sequenced::Unavailable,
        }
    }

    fn history(&mut self, _local: &Rooms, ticket: Ticket, read: Read) -> Reading {
        match self.jobs.try_send(Job::Read(ticket, read)) {
            Ok(()) => Reading::Later,
            Err(_) => {
                // Only when far behind, or stopping: an empty reading,
                // said in the log (the queue is sized never to get here).
                self.queue_full("a history read answered empty");
                Reading::Now(Vec::new())
            }
        }
    }

    fn answers(&self) -> Receiver<Answer> {
        self.answers.clone()
    }

    fn node(&self) -> Option<Arc<str>> {
        Some(Arc::clone(&self.node))
    }

    fn elsewhere(&self, room: &RoomName) -> Vec<Remote> {
        self.replica.members(room)
    }

    fn rooms_elsewhere(&self) -> Vec<(RoomName, usize)> {
        self.replica.rooms()
    }

    fn stored(&mut self, ticket: Ticket, room: Option<&RoomName>) -> bool {
        if self
            .jobs
            .try_send(Job::Stored(ticket, room.cloned()))
            .is_err()
        {
            self.queue_full("rooms listed from this node alone");
            return false;
        }
        true
    }

    fn renamed(&mut self, rooms: &[RoomName], name: &Name, from_id: &str) {
        let job = Job::Renamed(rooms.to_vec(), name.clone(), from_id.into());
        if self.jobs.try_send(job).is_err() {
            self.queue_full("a new name is left to the next refresh");
        }
    }

    fn unannounced(&mut self, room: &RoomName, name: &Name, from_id: &str, joined: bool) {
        let job = Job::Presence(room.clone(), name.clone(), from_id.into(), joined);
        if self.jobs.try_send(job).is_err() {
            self.queue_full("a presence change is left to the next refresh");
        }
    }
}

impl Drop for RedisEngine {
    /// The hub has stopped: the command thread takes this node's members out
    /// of presence (`goodbye`), tells the relay, then both end. Waits for
    /// that, a bounded time, so that a process that exits next has said it.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.jobs.send_timeout(Job::Stop, Duration::from_secs(1));
        let _ = self.ended.recv_timeout(GOODBYE_WAIT);
    }
}

/// This process's token in payloads and on its own channel: unique per
/// start, so that a restarted node never takes another's tickets for its own.
fn instance_token() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{:x}", std::process::id(), nanos)
}
