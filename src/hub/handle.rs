//! How other threads reach the hub: the `Command`s they send on its one
//! bounded channel, the `HubHandle` that sends them (request/reply with a
//! one-slot reply channel for queries), and the views they get back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};
use log::debug;
use serde::Serialize;

use crate::admission::Admission;
use crate::auth::Access;
use crate::engine::Unavailable;
use crate::metrics::Metrics;
use crate::protocol::{ClientId, Event, Request, Transport};
use crate::room::{Name, RoomName};
use crate::rooms::RoomLimit;

use crate::queue::Queue;

/// A connection, as a transport hands it to the hub.
pub struct Subscriber {
    /// Its id (from `ClientIds`).
    pub id: ClientId,
    /// Its display name.
    pub name: Name,
    /// How it is connected.
    pub transport: Transport,
    /// The hub's end of its queue (`queue::bounded`).
    pub queue: Queue,
    /// What its token allows (`Access::Open` when tokens are off).
    pub access: Access,
}

/// Hands out connection ids, `c1`, `c2`, ... (an atomic: transports need an id
/// before the hub has heard of the connection, to name its threads).
#[derive(Default)]
pub struct ClientIds(AtomicU64);

impl ClientIds {
    /// The next unused id.
    pub fn next(&self) -> ClientId {
        ClientId(self.0.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// A room as `GET /rooms` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RoomSummary {
    /// The room's name.
    pub name: RoomName,
    /// How many members it has.
    pub members: usize,
    /// The id of its newest event (0 if none is kept).
    pub last_id: u64,
}

/// A member as `GET /rooms/{room}` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct MemberInfo {
    /// Connection id (unique on its node).
    pub id: ClientId,
    /// Display name.
    pub name: Name,
    /// How it is connected (not known for members on other nodes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// The node it is connected to (`--node-name`), with `--redis`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<Arc<str>>,
    /// The user id its token gave it (`sub`), when tokens are on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Arc<str>>,
}

/// A room as `GET /rooms/{room}` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RoomDetail {
    /// The room's name.
    pub name: RoomName,
    /// Its members, in joining order.
    pub members: Vec<MemberInfo>,
    /// The id of its newest event (0 if none is kept).
    pub last_id: u64,
}

/// Everything the hub can be asked to do.
pub enum Command {
    /// A new subscriber: welcome it, replay history after `since`, join `rooms`.
    Connect {
        /// The subscriber.
        subscriber: Subscriber,
        /// Rooms to join, in order.
        rooms: Vec<RoomName>,
        /// Replay events after this id first.
        since: Option<u64>,
    },
    /// A request from a connected subscriber; answers go to its queue.
    Request {
        /// Who asks.
        from: ClientId,
        /// What it asks.
        request: Request,
    },
    /// A subscriber presented a fresh token (`auth::Session::refresh`).
    /// Accepted, its `Access` replaces what it had, the subscriber leaves
    /// the rooms it may no longer read and gets a `welcome`; refused, it gets
    /// the error event.
    Regrant {
        /// Whose.
        id: ClientId,
        /// What the fresh token allows, or why it was refused.
        verdict: Result<Access, Box<Event>>,
    },
    /// A subscriber's connection ended.
    Disconnect {
        /// Whose.
        id: ClientId,
    },
    /// A message from outside any connection (REST, gRPC `Publish`).
    Publish {
        /// Target room (created if need be).
        room: RoomName,
        /// Sender's display name.
        from: Name,
        /// Sender's id as shown in `from_id` (`rest`, `grpc`).
        from_id: Arc<str>,
        /// The message.
        text: String,
        /// Gets the new event's id, or why the room could not be created.
        reply: Sender<Result<u64, Refused>>,
    },
    /// List the rooms.
    ListRooms {
        /// Gets the list, sorted by name.
        reply: Sender<Vec<RoomSummary>>,
    },
    /// Describe one room.
    DescribeRoom {
        /// Which.
        room: RoomName,
        /// Gets `None` if the room does not exist.
        reply: Sender<Option<RoomDetail>>,
    },
    /// Read a room's history.
    History {
        /// Which room.
        room: RoomName,
        /// Only events after this id; `None` for the newest.
        since: Option<u64>,
        /// At most this many.
        limit: usize,
        /// Gets `None` if the room does not exist.
        reply: Sender<Option<Vec<Arc<Event>>>>,
    },
}

/// The hub has stopped (the server is shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the hub has stopped")]
pub struct HubGone;

/// Why a publish from outside a connection (REST, gRPC `Publish`) did not
/// happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// The hub has stopped.
    #[error(transparent)]
    Stopped(#[from] HubGone),
    /// The room does not exist and `--max-rooms` rooms do, or the engine
    /// is unavailable.
    #[error(transparent)]
    Refused(#[from] Refused),
}

/// Why the hub did not publish; either way the peer is told `unavailable`
/// (REST 503, gRPC `UNAVAILABLE`, an error event) and its connection lives.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refused {
    /// A new room past `--max-rooms`.
    #[error(transparent)]
    RoomLimit(#[from] RoomLimit),
    /// The engine cannot reach Redis.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl Refused {
    /// The `error` event that tells a connection.
    pub fn to_event(&self) -> Event {
        match self {
            Refused::RoomLimit(limit) => limit.to_event(),
            Refused::Unavailable(down) => down.to_event(),
        }
    }
}

/// A command on its way to the hub, with when it was sent: how long it
/// waited for the hub says whether the hub keeps up (`pace`).
pub(super) struct Sent {
    pub(super) at: Instant,
    pub(super) command: Command,
}

/// The sending side of the hub, cloned into every thread that talks to it.
#[derive(Clone)]
pub struct HubHandle {
    pub(super) to_hub: Sender<Sent>,
    pub(super) admission: Arc<Admission>,
    pub(super) metrics: Arc<Metrics>,
}

impl HubHandle {
    /// Waits, a bounded time, while a crowd of members lags (see
    /// `admission`); returns how long. Called by every transport's
    /// connection just before it joins; a wait is logged and counted here.
    pub fn wait_to_join(&self) -> Duration {
        let waited = self.admission.wait_to_join();
        if !waited.is_zero() {
            debug!("a connection waited {waited:?} to join: members lag");
            self.metrics.join_waited();
        }
        waited
    }

    /// How many members lag now (see `admission`).
    pub fn members_lagging(&self) -> usize {
        self.admission.lagging()
    }

    /// Sends a command, waiting while the hub's queue is full (back-pressure).
    /// Fails only once the hub has stopped, which callers may ignore: a hub
    /// that has stopped has nothing left to be told.
    pub fn send(&self, command: Command) -> Result<(), HubGone> {
        let sent = Sent {
            at: Instant::now(),
            command,
        };
        self.to_hub.send(sent).map_err(|_| HubGone)
    }

    /// Publishes `text` to `room` from outside a connection; returns its id.
    pub fn publish(
        &self,
        room: RoomName,
        from: Name,
        from_id: Arc<str>,
        text: String,
    ) -> Result<u64, PublishError> {
        let published = self.ask(|reply| Command::Publish {
            room,
            from,
            from_id,
            text,
            reply,
        })?;
        Ok(published?)
    }

    /// Every room, sorted by name.
    pub fn rooms(&self) -> Result<Vec<RoomSummary>, HubGone> {
        self.ask(|reply| Command::ListRooms { reply })
    }

    /// One room's members, if it exists.
    pub fn describe(&self, room: RoomName) -> Result<Option<RoomDetail>, HubGone> {
        self.ask(|reply| Command::DescribeRoom { room, reply })
    }

    /// One room's history after `since` (or its newest), at most `limit` events.
    pub fn history(
        &self,
        room: RoomName,
        since: Option<u64>,
        limit: usize,
    ) -> Result<Option<Vec<Arc<Event>>>, HubGone> {
        self.ask(|reply| Command::History {
            room,
            since,
            limit,
            reply,
        })
    }

    /// Request/reply: a one-slot channel travels with the command.
    fn ask<T>(&self, command: impl FnOnce(Sender<T>) -> Command) -> Result<T, HubGone> {
        let (reply, answer) = bounded(1);
        self.send(command(reply))?;
        answer.recv().map_err(|_| HubGone)
    }
}
