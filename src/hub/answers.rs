//! The hub's side of the engine seam: it hands each room event to the engine
//! (`broadcast`) and applies the engine's answers (`answer`), whether they
//! come at once or later on the channel the loop selects on. Whoever waits
//! for a `Later` answer is noted under its ticket (`Waiting`).

use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::engine::{Answer, Draft, Sequenced, Ticket, Unavailable, What};
use crate::protocol::{now_millis, ClientId, Event};
use crate::room::RoomName;

use super::members::Seat;
use super::{Hub, Leave, Refused, RoomDetail, RoomSummary};

/// What became of a room event handed to the engine.
pub(super) enum Published {
    /// Sequenced with this id (0: not at all, and no id spent, because the
    /// room is gone or the engine refused it).
    Now(u64),
    /// The engine answers later, under this ticket.
    Later(Ticket),
    /// Not sequenced: the engine is unavailable (Redis is down).
    Unavailable,
}

/// Who waits for an engine's `Later` answer.
pub(super) enum Waiting {
    /// A publisher from outside a connection, for its event's id.
    Publish(Sender<Result<u64, Refused>>),
    /// A member that said something, to be told if it fails.
    Say { client: ClientId },
    /// A new subscriber, for its backlog: it joins `rooms` once that is sent.
    Backlog {
        client: ClientId,
        rooms: Vec<RoomName>,
    },
    /// A member that joined a room, for its own `joined` (`RunPosition::WAITING`).
    Join { client: ClientId, room: RoomName },
    /// A member that left a room, for its own `left` (see `Client::parting`).
    Part { client: ClientId, room: RoomName },
    /// A history reader (REST), for one room's events.
    History {
        room: RoomName,
        reply: Sender<Option<Vec<Arc<Event>>>>,
    },
    /// `GET /rooms`, for the rooms with history kept outside the hub.
    Rooms(Sender<Vec<RoomSummary>>),
    /// `GET /rooms/{room}`, for the room's newest id kept outside the hub.
    Describe {
        room: RoomName,
        reply: Sender<Option<RoomDetail>>,
    },
    /// A history reader that got nothing, for whether the room has history
    /// at all (an empty page) or not (`404`).
    Exists(Sender<Option<Vec<Arc<Event>>>>),
}

impl Waiting {
    /// The member it is for, if any.
    fn client(&self) -> Option<ClientId> {
        match self {
            Waiting::Say { client }
            | Waiting::Backlog { client, .. }
            | Waiting::Join { client, .. }
            | Waiting::Part { client, .. } => Some(*client),
            Waiting::Publish(_)
            | Waiting::History { .. }
            | Waiting::Rooms(_)
            | Waiting::Describe { .. }
            | Waiting::Exists(_) => None,
        }
    }
}

impl Hub {
    /// A connection ended. With an engine that answers later, a member
    /// whose own events are still on their way stays until they are back,
    /// as with the memory engine, where they were queued already (a gRPC
    /// chat that half-closes still gets its last message); then it leaves.
    pub(super) fn disconnect(&mut self, id: ClientId) {
        if self.owed(id) {
            if let Some(client) = self.clients.get_mut(&id) {
                client.closing = true;
                return;
            }
        }
        self.leaving.push((id, Leave::Closed));
    }

    /// Whether an answer the engine owes is for `id`.
    fn owed(&self, id: ClientId) -> bool {
        self.waiting.values().any(|w| w.client() == Some(id))
    }

    /// After an answer for `owner`: a closing member with nothing more owed leaves.
    fn close_if_done(&mut self, owner: Option<ClientId>) {
        let Some(id) = owner else {
            return;
        };
        let closing = self.clients.get(&id).is_some_and(|c| c.closing);
        if closing && !self.owed(id) {
            self.leaving.push((id, Leave::Closed));
        }
    }

    /// Applies one of the engine's `Later` answers for whoever waits for it.
    pub(super) fn answer(&mut self, answer: Answer) {
        let owner = match &answer {
            Answer::Sequenced(ticket, _) | Answer::History(ticket, _) | Answer::Failed(ticket) => {
                self.waiting.get(ticket).and_then(Waiting::client)
            }
            Answer::Lost { .. } | Answer::Stored(..) => None,
        };
        match answer {
            Answer::Sequenced(ticket, event) => {
                let waiting = self.waiting.remove(&ticket);
                if let Some(Waiting::Publish(reply)) = &waiting {
                    let _ = reply.send(Ok(event.id().unwrap_or(0))); // the asker may have given up
                }
                let Some(room) = event.room().cloned() else {
                    return; // not a room event: an engine's mistake, nothing to fan out
                };
                self.add_to_run(&room, event);
                match waiting {
                    Some(Waiting::Join { client, room }) => self.seated(client, &room, true),
                    Some(Waiting::Part { client, room }) => self.parted(client, &room),
                    _ => {}
                }
            }
            Answer::History(ticket, events) => match self.waiting.remove(&ticket) {
                Some(Waiting::Backlog { client, rooms }) => {
                    self.replayed(client, rooms, events, Seat::AtOnce)
                }
                Some(Waiting::History { room, reply }) => self.read(room, reply, events),
                Some(Waiting::Publish(_) | Waiting::Say { .. }) => {} // not a read
                Some(
                    Waiting::Join { .. }
                    | Waiting::Part { .. }
                    | Waiting::Rooms(_)
                    | Waiting::Describe { .. }
                    | Waiting::Exists(_),
                )
                | None => {}
            },
            Answer::Stored(ticket, stored) => self.stored(ticket, &stored),
            Answer::Failed(ticket) => self.failed(ticket),
            Answer::Lost { room, last_id } => self.lost(&room, last_id),
        }
        self.close_if_done(owner);
        self.remove_leaving();
    }

    /// The engine lost its way to Redis before `ticket` was done: whoever
    /// waits for it is told, or goes on without it.
    fn failed(&mut self, ticket: Ticket) {
        match self.waiting.remove(&ticket) {
            Some(Waiting::Publish(reply)) => {
                let _ = reply.send(Err(Unavailable.into())); // the asker may have given up
            }
            Some(Waiting::Say { client }) => self.tell(client, Unavailable.to_event()),
            // Its `joined` may never come: it takes events from now on.
            Some(Waiting::Join { client, room }) => self.seated(client, &room, false),
            Some(Waiting::Part { client, room }) => self.parted(client, &room),
            Some(Waiting::Backlog { client, rooms }) => {
                let message = "your history could not be read (redis unavailable): \
                               events before this one may be missing";
                self.tell(client, Event::error("history_lost", message));
                self.replayed(client, rooms, Vec::new(), Seat::AtOnce);
            }
            Some(Waiting::History { reply, .. } | Waiting::Exists(reply)) => {
                let _ = reply.send(None);
            }
            // Redis did not say: this node's view alone.
            Some(Waiting::Rooms(reply)) => {
                let _ = reply.send(self.summaries(&[]));
            }
            Some(Waiting::Describe { room, reply }) => {
                let _ = reply.send(self.describe(&room, None));
            }
            None => {}
        }
    }

    /// A room's history is gone (Redis came back empty): each member is
    /// told, with the last id of it this node relayed. Never a silent gap.
    fn lost(&mut self, room: &RoomName, last_id: u64) {
        let members: Vec<ClientId> = self
            .rooms
            .get(room)
            .map(|r| r.members.iter().map(|m| m.client).collect())
            .unwrap_or_default();
        let message = format!(
            "#{room}: history after id {last_id} was lost (redis restarted without it); \
             events after {last_id} may be missing"
        );
        for client in members {
            self.tell(client, Event::error("history_lost", message.clone()));
        }
    }

    /// A history read for REST came back: an empty one from a room with
    /// no members here may still be a room whose history lives in the
    /// engine (an empty page, not `404`), so the engine is asked.
    fn read(
        &mut self,
        room: RoomName,
        reply: Sender<Option<Vec<Arc<Event>>>>,
        events: Vec<Arc<Event>>,
    ) {
        if events.is_empty() && !self.rooms.contains(&room) {
            let ticket = self.next_ticket();
            if self.engine.stored(ticket, Some(&room)) {
                self.waiting.insert(ticket, Waiting::Exists(reply));
                return;
            }
        }
        let _ = reply.send(self.found(&room, events));
    }

    /// The engine said which rooms have history (`Engine::stored`).
    fn stored(&mut self, ticket: Ticket, stored: &[(RoomName, u64)]) {
        match self.waiting.remove(&ticket) {
            Some(Waiting::Rooms(reply)) => {
                let _ = reply.send(self.summaries(stored));
            }
            Some(Waiting::Describe { room, reply }) => {
                let newest = stored.iter().find(|(r, _)| *r == room).map(|(_, id)| *id);
                let _ = reply.send(self.describe(&room, newest));
            }
            Some(Waiting::Exists(reply)) => {
                let _ = reply.send((!stored.is_empty()).then(Vec::new));
            }
            _ => {}
        }
    }

    /// A history read's answer: `None` for a room that does not exist.
    pub(super) fn found(
        &self,
        room: &RoomName,
        events: Vec<Arc<Event>>,
    ) -> Option<Vec<Arc<Event>>> {
        (self.rooms.contains(room) || !events.is_empty()).then_some(events)
    }

    /// Whether `room` announces joins and leaves (`--join-notices-max`),
    /// counting its members on every node; `counting` adds one that has
    /// just left it here.
    pub(super) fn announces(&self, room: &RoomName, counting: usize) -> bool {
        let elsewhere = self.engine.elsewhere(room).len();
        self.rooms.announces(room, counting + elsewhere)
    }

    /// A new ticket for a call on the engine.
    pub(super) fn next_ticket(&mut self) -> Ticket {
        self.tickets += 1;
        Ticket(self.tickets)
    }

    /// Has the engine sequence a room event (give it the next id and keep
    /// it), and fans it out: now, if the engine answers at once, or when its
    /// answer arrives (`answer`).
    pub(super) fn broadcast(&mut self, room: &RoomName, what: What) -> Published {
        let draft = Draft {
            room: room.clone(),
            ts: now_millis(),
            what,
        };
        let ticket = self.next_ticket();
        match self.engine.sequence(&mut self.rooms, ticket, draft) {
            Sequenced::Now(event) => {
                let id = event.id().unwrap_or(0);
                self.add_to_run(room, event);
                Published::Now(id)
            }
            Sequenced::Later => Published::Later(ticket),
            Sequenced::Refused => Published::Now(0),
            Sequenced::Unavailable => Published::Unavailable,
        }
    }
}
