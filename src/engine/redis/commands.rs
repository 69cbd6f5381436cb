//! The command thread (`redis-cmd`): every publish and history read this
//! node sends to Redis, pipelined.
//!
//! In: `Job`s from the hub's calls on the engine (a bounded channel the hub
//! only `try_send`s into). It takes what is queued, up to `BATCH`, and sends
//! it as one pipeline: one round trip for many events under load, one for
//! one event when quiet. Out: nothing for a publish that worked (its event
//! comes back through the relay, in the hub-wide order, with its ticket);
//! a read's events go to `Reads` for the relay to hand over at its marker;
//! `Answer::Failed` straight to the hub for whatever did not (or may not)
//! have happened because the connection broke.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::{Client, Connection, Pipeline, RedisResult, Value};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, warn};

mod heartbeat;

use super::inflight::InFlight;
use super::reads::{Done, Reads};
use super::{link, scripts, wire};
use crate::engine::{merge, Answer, Draft, Read, Ticket, What};
use crate::metrics::Metrics;
use crate::room::{Name, RoomName};

/// The most jobs sent in one pipeline.
const BATCH: usize = 256;
/// The most events one room's read asks Redis for.
const MOST_READ: usize = 1_000_000;

/// Work for the command thread.
pub enum Job {
    /// Sequence a draft.
    Publish(Ticket, Draft),
    /// Read history.
    Read(Ticket, Read),
    /// Sent by the relay once it has subscribed again: open a fresh
    /// connection (the old one went with the old Redis), and send a marker
    /// alone, which lets the relay answer reads whose markers were lost with
    /// the old subscription.
    Flush,
    /// The engine is gone: tell the relay, and end.
    Stop,
    /// A join (`true`) or leave without a room event (a room past
    /// `--join-notices-max`): presence only.
    Presence(RoomName, Name, Arc<str>, bool),
    /// A member's new name (`nick`) in these rooms: presence only.
    Renamed(Vec<RoomName>, Name, Arc<str>),
    /// Which rooms have history, and their newest ids (one room, or all).
    Stored(Ticket, Option<RoomName>),
}

/// What the engine is set to keep.
#[derive(Clone)]
pub struct Settings {
    /// This node instance's token, in every payload it publishes.
    pub instance: String,
    /// `--history`.
    pub history: usize,
    /// `--room-expiry`, in milliseconds (0: no expiry in Redis).
    pub expiry_ms: u64,
    /// `--node-name`.
    pub node: String,
    /// `--heartbeat`: a node silent for `DEAD_AFTER` of them is reaped.
    pub heartbeat: Duration,
}

/// Heartbeats without a beat after which a node counts as dead (its
/// members' `left` then come within three heartbeats of its last beat).
const DEAD_AFTER: f64 = 2.5;

/// A connection with the scripts loaded.
struct Loaded {
    con: Connection,
    publish: String,
    read: String,
    heartbeat: String,
    stored: String,
}

/// The command thread's state.
pub struct Commands {
    pub client: Client,
    pub settings: Settings,
    /// The highest id this node has seen (the relay raises it).
    pub floor: Arc<AtomicU64>,
    pub reads: Arc<Reads>,
    pub inflight: Arc<InFlight>,
    pub to_hub: Sender<Answer>,
    pub metrics: Arc<Metrics>,
    con: Option<Loaded>,
    tokens: u64,
    /// When this node last beat (and reaped).
    beat: Option<Instant>,
    /// This node's members as Redis' presence hashes hold them: (room,
    /// field) → member; announced again after a reconnection (`refresh`).
    mine: HashMap<(String, String), String>,
}

/// The hub has stopped: nobody listens any more.
struct HubGone;

impl Commands {
    /// A command thread's state; it connects on its first job.
    pub fn new(
        client: Client,
        settings: Settings,
        floor: Arc<AtomicU64>,
        reads: Arc<Reads>,
        inflight: Arc<InFlight>,
        to_hub: Sender<Answer>,
        metrics: Arc<Metrics>,
    ) -> Commands {
        Commands {
            client,
            settings,
            floor,
            reads,
            inflight,
            to_hub,
            metrics,
            con: None,
            tokens: 0,
            beat: None,
            mine: HashMap::new(),
        }
    }

    /// Runs until the engine is dropped (`jobs` disconnects), then tells
    /// the relay to stop.
    pub fn run(mut self, jobs: Receiver<Job>) {
        let tick = (self.settings.heartbeat / 4).min(Duration::from_secs(1));
        loop {
            let first = match jobs.recv_timeout(tick) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    self.heartbeat(tick);
                    if self.fail_overdue().is_err() {
                        break;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let stopping = batch.iter().any(|job| matches!(job, Job::Stop));
            if self.batch(batch).is_err() || self.fail_overdue().is_err() || stopping {
                break;
            }
            self.heartbeat(tick);
        }
        self.goodbye();
        self.stop_relay();
    }

    fn batch(&mut self, batch: Vec<Job>) -> Result<(), HubGone> {
        let flush = batch.iter().any(|job| matches!(job, Job::Flush));
        if flush {
            self.con = None;
        }
        let (presence, batch): (Vec<Job>, Vec<Job>) = batch
            .into_iter()
            .partition(|job| matches!(job, Job::Presence(..) | Job::Renamed(..)));
        if !presence.is_empty() {
            self.presence(presence);
        }
        let numbered: Vec<(u64, Job)> = batch
            .into_iter()
            .map(|job| {
                let token = match job {
                    Job::Publish(..)
                    | Job::Stop
                    | Job::Presence(..)
                    | Job::Renamed(..)
                    | Job::Stored(..) => 0,
                    Job::Read(..) | Job::Flush => {
                        self.tokens += 1;
                        self.tokens
                    }
                };
                (token, job)
            })
            .collect();
        let outcome = self.send(&numbered);
        // Every read of the batch is filed, or answered as failed, before
        // the relay may look for it.
        let settled = self.tokens;
        let answered = self.results(numbered, outcome);
        self.reads.settle(settled);
        if flush {
            self.refresh();
        }
        answered
    }

    /// Joins and leaves without a room event: into the presence hashes,
    /// and announced to the other nodes. Best effort: a failure leaves it
    /// to the next reconnection's `refresh`.
    fn presence(&mut self, changes: Vec<Job>) {
        let mut pipe = ::redis::pipe();
        for job in changes {
            let (room, name, from_id, joined) = match job {
                Job::Presence(room, name, from_id, joined) => (room, name, from_id, joined),
                Job::Renamed(rooms, name, from_id) => {
                    self.renamed(&mut pipe, &rooms, &name, &from_id);
                    continue;
                }
                _ => continue,
            };
            let field = wire::presence_field(&self.settings.instance, &from_id);
            let key = (room.as_str().to_owned(), field.clone());
            if joined {
                let member = wire::presence_value(name.as_str(), &from_id, &self.settings.node);
                pipe.cmd("HSET")
                    .arg(wire::presence_key(room.as_str()))
                    .arg(&field)
                    .arg(&member)
                    .ignore();
                pipe.cmd("SADD")
                    .arg(wire::presence_rooms_key())
                    .arg(room.as_str())
                    .ignore();
                pipe.cmd("PUBLISH")
                    .arg(wire::presence_channel())
                    .arg(format!("+ {room} {field} {member}"))
                    .ignore();
                self.mine.insert(key, member);
            } else {
                pipe.cmd("HDEL")
                    .arg(wire::presence_key(room.as_str()))
                    .arg(&field)
                    .ignore();
                pipe.cmd("PUBLISH")
                    .arg(wire::presence_channel())
                    .arg(format!("- {room} {field}"))
                    .ignore();
                self.mine.remove(&key);
            }
        }
        let sent = self.connected().map(|_| ());
        let sent = sent.and_then(|()| {
            let loaded = self.con.as_mut().expect("connected");
            pipe.exec(&mut loaded.con)
        });
        if let Err(e) = sent {
            debug!("redis: presence: {e}");
            self.con = None;
        }
    }

    /// A member's new name into the presence hash of each of its rooms
    /// where this node has it, announced to the other nodes (their copies
    /// take a join of someone they know as a new name).
    fn renamed(&mut self, pipe: &mut Pipeline, rooms: &[RoomName], name: &Name, from_id: &str) {
        let field = wire::presence_field(&self.settings.instance, from_id);
        for room in rooms {
            let key = (room.as_str().to_owned(), field.clone());
            let Some(member) = self.mine.get_mut(&key) else {
                continue; // not in presence (its `joined` is on its way, or was refused)
            };
            *member = wire::presence_value(name.as_str(), from_id, &self.settings.node);
            pipe.cmd("HSET")
                .arg(wire::presence_key(room.as_str()))
                .arg(&field)
                .arg(member.as_str())
                .ignore();
            pipe.cmd("PUBLISH")
                .arg(wire::presence_channel())
                .arg(format!("+ {room} {field} {member}"))
                .ignore();
        }
    }

    /// After a reconnection: this node's members into presence again (a
    /// Redis that came back empty lost them), announced to the other nodes.
    fn refresh(&mut self) {
        if self.mine.is_empty() {
            return;
        }
        if self.connected().is_err() {
            return;
        }
        let mut pipe = ::redis::pipe();
        for ((room, field), member) in &self.mine {
            pipe.cmd("HSET")
                .arg(wire::presence_key(room))
                .arg(field)
                .arg(member)
                .ignore();
            pipe.cmd("SADD")
                .arg(wire::presence_rooms_key())
                .arg(room)
                .ignore();
            pipe.cmd("PUBLISH")
                .arg(wire::presence_channel())
                .arg(format!("+ {room} {field} {member}"))
                .ignore();
        }
        let loaded = self.con.as_mut().expect("connected");
        if let Err(e) = pipe.exec(&mut loaded.con) {
            debug!("redis: presence refresh: {e}");
            self.con = None;
        }
    }

    fn results(
        &mut self,
        numbered: Vec<(u64, Job)>,
        outcome: RedisResult<Vec<RedisResult<Value>>>,
    ) -> Result<(), HubGone> {
        let results = match outcome {
            Ok(results) => results,
            Err(e) => {
                warn!("redis: {e}; {} publishes and reads failed", numbered.len());
                self.con = None;
                for (_, job) in &numbered {
                    self.fail(job)?;
                }
                return Ok(());
            }
        };
        for ((token, job), result) in numbered.into_iter().zip(results) {
            match (job, result) {
                (Job::Publish(ticket, draft), Ok(Value::Int(id))) => {
                    self.floor.fetch_max(id.max(0) as u64, Ordering::Relaxed);
                    self.inflight.accepted(ticket);
                    self.remember(&draft);
                }
                (Job::Read(ticket, read), Ok(found)) => {
                    let Value::Array(rooms) = found else {
                        self.answer(Answer::Failed(ticket))?;
                        continue;
                    };
                    let events = rooms
                        .iter()
                        .flat_map(wire::decode_entries)
                        .map(|r| r.event)
                        .collect();
                    let events = merge(events, read.since, read.limit);
                    self.reads.file(token, Done { ticket, events });
                }
                (Job::Stored(ticket, _), Ok(found)) => {
                    self.answer(Answer::Stored(ticket, stored_rooms(&found)))?;
                }
                (Job::Flush | Job::Stop | Job::Presence(..) | Job::Renamed(..), _) => {}
                (job, outcome) => {
                    if let Err(e) = outcome {
                        warn!("redis refused a script: {e}");
                        if e.code() == Some("NOSCRIPT") {
                            self.con = None; // load them again
                        }
                    }
                    self.fail(&job)?;
                }
            }
        }
        Ok(())
    }

    /// One pipeline, one round trip: a result for each job.
    fn send(&mut self, jobs: &[(u64, Job)]) -> RedisResult<Vec<RedisResult<Value>>> {
        self.connected()?;
        let Commands {
            con,
            settings,
            floor,
            metrics,
            ..
        } = self;
        let loaded = con.as_mut().expect("connected");
        let mut pipe = ::redis::pipe();
        let mut publishes = 0;
        for (token, job) in jobs {
            match job {
                Job::Publish(ticket, draft) => {
                    publishes += 1;
                    let room = draft.room.as_str();
                    let (op, field, value) = match &draft.what {
                        What::Joined { name, from_id } => (
                            "j",
                            wire::presence_field(&settings.instance, from_id),
                            wire::presence_value(name.as_str(), from_id, &settings.node),
                        ),
                        What::Left { from_id, .. } => (
                            "l",
                            wire::presence_field(&settings.instance, from_id),
                            String::new(),
                        ),
                        What::Message { .. } => ("", String::new(), String::new()),
                    };
                    pipe.cmd("EVALSHA")
                        .arg(&loaded.publish)
                        .arg(5)
                        .arg(wire::counter_key())
                        .arg(wire::stream_key(room))
                        .arg(wire::meta_key(room))
                        .arg(wire::presence_key(room))
                        .arg(wire::presence_rooms_key())
                        .arg(settings.history)
                        .arg(floor.load(Ordering::Relaxed))
                        .arg(&settings.instance)
                        .arg(ticket.0)
                        .arg(wire::encode_draft(draft, &settings.node))
                        .arg(wire::events_channel())
                        .arg(settings.expiry_ms)
                        .arg(op)
                        .arg(field)
                        .arg(value)
                        .arg(room);
                }
                Job::Read(_, read) => {
                    let since = read.since.map_or_else(String::new, |s| s.to_string());
                    let count = read.limit.clamp(1, MOST_READ);
                    read_script(
                        &mut pipe,
                        &loaded.read,
                        &read.rooms,
                        &since,
                        count,
                        settings,
                        *token,
                    );
                }
                Job::Flush => read_script(&mut pipe, &loaded.read, &[], "", 1, settings, *token),
                Job::Stored(_, room) => {
                    let cmd = pipe.cmd("EVALSHA").arg(&loaded.stored);
                    match room {
                        Some(room) => cmd.arg(1).arg(wire::stream_key(room.as_str())),
                        None => cmd.arg(0),
                    };
                }
                Job::Stop | Job::Presence(..) | Job::Renamed(..) => {
                    pipe.cmd("PING");
                }
            }
        }
        let started = Instant::now();
        let results = pipe.ignore_errors().query(&mut loaded.con);
        if results.is_ok() && publishes > 0 {
            let took = started.elapsed().as_secs_f64();
            if let Some(redis) = metrics.redis() {
                redis.published(publishes, took);
            }
        }
        results
    }

    /// The connection, opened and its scripts loaded if need be.
    fn connected(&mut self) -> RedisResult<&mut Loaded> {
        if self.con.is_none() {
            let mut con = link::connect(&self.client)?;
            let load = |con: &mut Connection, script: &str| {
                ::redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(script)
                    .query::<String>(con)
            };
            let publish = load(&mut con, scripts::PUBLISH)?;
            let read = load(&mut con, scripts::READ)?;
            let heartbeat = load(&mut con, scripts::HEARTBEAT)?;
            let stored = load(&mut con, scripts::STORED)?;
            debug!("redis: command connection open, scripts loaded");
            self.con = Some(Loaded {
                con,
                publish,
                read,
                heartbeat,
                stored,
            });
        }
        Ok(self.con.as_mut().expect("just opened"))
    }

    /// Keeps `mine` as the publish script kept the presence hash.
    fn remember(&mut self, draft: &Draft) {
        let room = draft.room.as_str().to_owned();
        match &draft.what {
            What::Joined { name, from_id } => {
                let field = wire::presence_field(&self.settings.instance, from_id);
                let member = wire::presence_value(name.as_str(), from_id, &self.settings.node);
                self.mine.insert((room, field), member);
            }
            What::Left { from_id, .. } => {
                let field = wire::presence_field(&self.settings.instance, from_id);
                self.mine.remove(&(room, field));
            }
            What::Message { .. } => {}
        }
    }

    /// Publishes Redis accepted whose event never came back (`inflight`).
    fn fail_overdue(&self) -> Result<(), HubGone> {
        for ticket in self.inflight.overdue() {
            self.answer(Answer::Failed(ticket))?;
        }
        Ok(())
    }

    fn fail(&self, job: &Job) -> Result<(), HubGone> {
        match job {
            Job::Publish(ticket, _) | Job::Read(ticket, _) | Job::Stored(ticket, _) => {
                self.answer(Answer::Failed(*ticket))
            }
            Job::Flush | Job::Stop | Job::Presence(..) | Job::Renamed(..) => Ok(()),
        }
    }

    fn answer(&self, answer: Answer) -> Result<(), HubGone> {
        self.to_hub.send(answer).map_err(|_| HubGone)
    }

    /// The engine is gone: the relay, blocked on its subscription, hears
    /// it on this node's channel.
    fn stop_relay(&mut self) {
        let channel = wire::node_channel(&self.settings.instance);
        if let Ok(loaded) = self.connected() {
            let stopped: RedisResult<i64> = ::redis::cmd("PUBLISH")
                .arg(channel)
                .arg("stop")
                .query(&mut loaded.con);
            if let Err(e) = stopped {
                debug!("redis: could not tell the relay to stop: {e}");
            }
        }
    }
}

/// Adds a READ script for `rooms` to `pipe`, its marker numbered `token`.
fn read_script(
    pipe: &mut Pipeline,
    sha: &str,
    rooms: &[crate::room::RoomName],
    since: &str,
    count: usize,
    settings: &Settings,
    token: u64,
) {
    let cmd = pipe.cmd("EVALSHA").arg(sha).arg(rooms.len());
    for room in rooms {
        cmd.arg(wire::stream_key(room.as_str()));
    }
    cmd.arg(since)
        .arg(count)
        .arg(wire::node_channel(&settings.instance))
        .arg(format!("read {token}"));
}

/// The `STORED` script's answer: {room, newest entry id, …}. Anything that
/// does not parse is left out.
fn stored_rooms(found: &Value) -> Vec<(RoomName, u64)> {
    let Value::Array(items) = found else {
        return Vec::new();
    };
    items
        .chunks(2)
        .filter_map(|pair| match pair {
            [Value::BulkString(room), Value::BulkString(entry)] => {
                let room = RoomName::parse(std::str::from_utf8(room).ok()?).ok()?;
                let entry = std::str::from_utf8(entry).ok()?;
                let id = entry.split_once('-').map_or(entry, |(id, _)| id);
                Some((room, id.parse().ok()?))
            }
            _ => None,
        })
        .collect()
}
