//! The relay thread (`redis-sub`): Redis' stream of events, turned into the
//! hub's `Answer`s.
//!
//! It holds the one subscription of this node: the channel every node
//! publishes every room event on, and this node's own channel, which carries
//! its read markers and, at shutdown, `stop`. Events arrive in the order the
//! publish scripts ran, so in id order; it hands each to the hub
//! (`Answer::Sequenced`, with the ticket when this node published it). At a
//! read's marker it hands over that read's events (`reads`): every event
//! before the marker is in the read, every one after it is not, which keeps
//! the engine's contract. It remembers, per room, the last event it relayed
//! (id, epoch, seq): that drops the events a recovery read and the
//! subscription both carry, and tells after a reconnection what was missed
//! (`recovery`). Losing the subscription sets the engine down (publishes are
//! refused) until it has subscribed again and caught up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use ::redis::{Client, RedisError};
use crossbeam_channel::Sender;
use log::{info, warn};

use super::commands::Job;
use super::inflight::InFlight;
use super::link::{self, Backoff};
use super::presence::Replica;
use super::reads::Reads;
use super::recovery;
use super::wire::{self, Relayed};
use crate::engine::{Answer, Ticket};
use crate::metrics::Metrics;
use crate::room::RoomName;

/// Where this node stands in a room.
#[derive(Clone, Debug, Default)]
pub struct Track {
    /// The room's epoch, as of the last event relayed ('' once lost).
    pub epoch: String,
    /// That event's place in its epoch.
    pub seq: u64,
    /// Its id.
    pub id: u64,
}

/// The relay thread's state.
pub struct Relay {
    pub client: Client,
    /// `--node-name`, for `CLIENT LIST`.
    pub node: String,
    pub instance: String,
    pub to_hub: Sender<Answer>,
    pub reads: Arc<Reads>,
    pub inflight: Arc<InFlight>,
    /// Who is where on the other nodes.
    pub replica: Arc<Replica>,
    pub jobs: Sender<Job>,
    pub floor: Arc<AtomicU64>,
    pub metrics: Arc<Metrics>,
    pub stop: Arc<AtomicBool>,
    /// Rooms this node has relayed events of, at most `max_tracked`.
    pub tracks: HashMap<RoomName, Track>,
    pub max_tracked: usize,
}

/// Why a subscription ended.
enum End {
    /// The engine is gone, or the hub.
    Stop,
    /// Redis is out of reach.
    Lost(RedisError),
}

impl From<RedisError> for End {
    fn from(e: RedisError) -> End {
        End::Lost(e)
    }
}

impl Relay {
    /// Subscribes, and subscribes again whenever the subscription is lost,
    /// until the engine stops.
    pub fn run(mut self) {
        let mut backoff = Backoff::default();
        let mut first = true;
        while !self.stop.load(Ordering::Acquire) {
            match self.subscription(&mut first, &mut backoff) {
                End::Stop => break,
                End::Lost(e) => {
                    if self.is_up() || first {
                        warn!("redis: {e}; publishes refused until it is back");
                    }
                    self.set_up(false);
                }
            }
            thread::sleep(backoff.next());
        }
        self.set_up(false);
    }

    fn subscription(&mut self, first: &mut bool, backoff: &mut Backoff) -> End {
        let mut con = match link::connect_subscriber(&self.client) {
            Ok(con) => con,
            Err(e) => return End::Lost(e),
        };
        // `CLIENT LIST` tells which node each subscription is.
        let named: Result<(), RedisError> = ::redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(format!("switchboard-sub:{}", self.node))
            .query(&mut con);
        if let Err(e) = named {
            return End::Lost(e);
        }
        let node = wire::node_channel(&self.instance);
        let mut pubsub = con.as_pubsub();
        let presence = wire::presence_channel();
        let channels = [wire::events_channel(), node.clone(), presence.clone()];
        if let Err(e) = pubsub.subscribe(&channels) {
            return End::Lost(e);
        }
        // Subscribed first, then caught up: what both carry is dropped once.
        if let Err(end) = self.catch_up() {
            return end;
        }
        if *first {
            info!("redis: subscribed");
        } else {
            info!("redis: back; subscribed again and caught up");
            if let Some(redis) = self.metrics.redis() {
                redis.reconnected();
            }
        }
        *first = false;
        backoff.reset();
        // Before publishes are taken again: the command thread reconnects
        // first, and reads whose markers went with the old subscription are
        // answered at the next marker (this one).
        let _ = self.jobs.try_send(Job::Flush);
        self.set_up(true);
        loop {
            let message = match pubsub.get_message() {
                Ok(message) => message,
                Err(e) => return End::Lost(e),
            };
            let channel = message.get_channel_name();
            let handled = if channel == node {
                match message.get_payload_bytes() {
                    b"stop" => return End::Stop,
                    marker => self.marker(marker),
                }
            } else if channel == presence {
                // Another node's members, announced again after Redis came back.
                if let Some((room, instance, change)) =
                    wire::decode_refresh(message.get_payload_bytes())
                {
                    if instance != self.instance {
                        self.replica.apply(&room, &instance, &change);
                    }
                }
                Ok(())
            } else {
                match wire::decode(message.get_payload_bytes()) {
                    Some(relayed) => self.relay(relayed),
                    None => Ok(()),
                }
            };
            if let Err(end) = handled {
                return end;
            }
        }
    }

    /// After (re)subscribing: each tracked room's missed events, or its loss.
    fn catch_up(&mut self) -> Result<(), End> {
        // Presence first: the events relayed from here on apply on top.
        let others = recovery::snapshot(&self.client, &self.instance)?;
        self.replica.replace(others);
        let floor = self.floor.load(Ordering::Relaxed);
        let recovered = recovery::recover(&self.client, &mut self.tracks, floor)?;
        for (room, last_id) in recovered.lost {
            warn!("redis: the history of #{room} after id {last_id} is lost");
            if let Some(redis) = self.metrics.redis() {
                redis.lost();
            }
            self.send(Answer::Lost { room, last_id })?;
        }
        for relayed in recovered.events {
            self.relay(relayed)?;
        }
        Ok(())
    }

    /// A read's marker: hand the hub its events, now that every event
    /// before it has been relayed.
    fn marker(&mut self, payload: &[u8]) -> Result<(), End> {
        let token = std::str::from_utf8(payload)
            .ok()
            .and_then(|p| p.strip_prefix("read "))
            .and_then(|t| t.parse::<u64>().ok());
        let Some(token) = token else {
            warn!("redis: an unknown message on this node's channel");
            return Ok(());
        };
        let (mine, orphans) = self.reads.take(token);
        for orphan in orphans {
            self.send(Answer::Failed(orphan.ticket))?;
        }
        if let Some(done) = mine {
            self.send(Answer::History(done.ticket, done.events))?;
        }
        Ok(())
    }

    /// Hands one event to the hub, unless it was relayed already.
    fn relay(&mut self, relayed: Relayed) -> Result<(), End> {
        let id = relayed.id();
        self.floor.fetch_max(id, Ordering::Relaxed);
        if self.tracks.get(&relayed.room).is_some_and(|t| t.id >= id) {
            return Ok(()); // a recovery read carried it already
        }
        let track = Track {
            epoch: relayed.epoch,
            seq: relayed.seq,
            id,
        };
        self.tracks.insert(relayed.room.clone(), track);
        if self.tracks.len() > self.max_tracked {
            self.forget_oldest_half();
        }
        if let Some(redis) = self.metrics.redis() {
            redis.relayed();
        }
        let ticket = if relayed.origin == self.instance {
            self.inflight.arrived(Ticket(relayed.ticket));
            Ticket(relayed.ticket)
        } else {
            if let Some(change) = &relayed.presence {
                self.replica.apply(&relayed.room, &relayed.origin, change);
            }
            Ticket::NONE
        };
        self.send(Answer::Sequenced(ticket, relayed.event))
    }

    /// Keeps the rooms with the newest events: a bound on what this node
    /// remembers, and on what a recovery reads.
    fn forget_oldest_half(&mut self) {
        let mut ids: Vec<u64> = self.tracks.values().map(|t| t.id).collect();
        let half = ids.len() / 2;
        let (_, median, _) = ids.select_nth_unstable(half);
        let median = *median;
        self.tracks.retain(|_, t| t.id >= median);
    }

    fn send(&self, answer: Answer) -> Result<(), End> {
        self.to_hub.send(answer).map_err(|_| End::Stop)
    }

    fn is_up(&self) -> bool {
        self.metrics.redis().is_some_and(|r| r.is_up())
    }

    fn set_up(&self, up: bool) {
        if let Some(redis) = self.metrics.redis() {
            redis.set_up(up);
        }
    }
}
