//! Membership: a subscriber's arrival (`connect`, with its replay), joining
//! and leaving rooms with their notices, and the one place that forgets a
//! client (`remove_client`). Runs on the hub thread only.

use std::sync::Arc;

use log::{debug, warn};

use crate::auth::{forbidden, Access};
use crate::engine::{Read, Reading, What};
use crate::protocol::{Body, ClientId, Event};
use crate::queue::{Backlog, Outbound, RunPosition, CEILING_FACTOR};
use crate::room::{RoomMember, RoomName};
use crate::subscription::MAX_ROOMS;

use super::answers::{Published, Waiting};
use super::{Client, Hub, Leave, Subscriber};

/// When a new seat in a room starts taking events.
#[derive(Clone, Copy)]
pub(super) enum Seat {
    /// From its own `joined` on, as with the memory engine.
    FromOwnJoined,
    /// At once: a replay's backlog came first and everything after it is owed.
    AtOnce,
}

impl Hub {
    pub(super) fn connect(
        &mut self,
        subscriber: Subscriber,
        rooms: Vec<RoomName>,
        since: Option<u64>,
    ) {
        let Subscriber {
            id,
            name,
            transport,
            queue,
            access,
        } = subscriber;
        let mut wanted: Vec<RoomName> = Vec::with_capacity(rooms.len());
        for room in rooms {
            if !wanted.contains(&room) && wanted.len() < MAX_ROOMS {
                wanted.push(room);
            }
        }
        // A token's rooms only: the others are refused after the welcome,
        // and their history is never read.
        let refused: Vec<RoomName> = wanted
            .iter()
            .filter(|room| !access.may_read(room))
            .cloned()
            .collect();
        wanted.retain(|room| access.may_read(room));
        queue.report_lag_to(&self.admission); // before its first event

        // The welcome lists the rooms it will be in: new rooms only while
        // `--max-rooms` allows (`join` tells it about the others).
        let mut vacancies = self.rooms.vacancies();
        let mut joining = Vec::with_capacity(wanted.len());
        for room in &wanted {
            if self.rooms.contains(room) {
                joining.push(room.clone());
            } else if vacancies > 0 {
                vacancies -= 1;
                joining.push(room.clone());
            }
        }
        let welcome = Event::new(Body::Welcome {
            id,
            name: name.clone(),
            rooms: joining,
        });
        if queue.offer(Outbound::Event(Arc::new(welcome))).is_err() {
            return; // the connection ended before the hub heard of it
        }
        for room in refused {
            let refusal = forbidden(format!("your token does not let you read #{room}"));
            if queue.offer(Outbound::Event(Arc::new(refusal))).is_err() {
                return;
            }
        }
        let backlog = match since {
            None => Some(Vec::new()),
            Some(since) => {
                let read = Read {
                    rooms: wanted.clone(),
                    since: Some(since),
                    limit: usize::MAX,
                };
                let ticket = self.next_ticket();
                match self.engine.history(&self.rooms, ticket, read) {
                    Reading::Now(events) => Some(events),
                    Reading::Later => {
                        // It joins when its backlog arrives (`replayed`): what
                        // the engine answers before that is in the backlog,
                        // what it answers after reaches it live (the
                        // engine's contract).
                        let rooms = std::mem::take(&mut wanted);
                        self.waiting
                            .insert(ticket, Waiting::Backlog { client: id, rooms });
                        None
                    }
                }
            }
        };
        debug!("{id} joins the hub over {}", transport.as_str());
        self.metrics.connected(transport);
        self.clients.insert(
            id,
            Client {
                name,
                label: id.to_string().into(),
                transport,
                queue,
                access,
                rooms: Vec::new(),
                held: backlog.is_none().then(Vec::new),
                closing: false,
                parting: Vec::new(),
                welcome_owed: false,
            },
        );
        self.admission.set_members(self.clients.len());
        if let Some(backlog) = backlog {
            self.replayed(id, wanted, backlog, Seat::FromOwnJoined);
        }
    }

    /// Sends a new subscriber its backlog, then joins it to its rooms and
    /// applies the requests it sent meanwhile. With the memory engine this
    /// is the same hub step as `connect`, so nothing can come in between.
    /// A backlog that came later seats it `AtOnce`: everything the engine
    /// answers after the backlog is after `since`, so it is owed.
    pub(super) fn replayed(
        &mut self,
        id: ClientId,
        rooms: Vec<RoomName>,
        backlog: Vec<Arc<Event>>,
        seat: Seat,
    ) {
        let Some(client) = self.clients.get_mut(&id) else {
            return; // it left while its backlog was on its way
        };
        let held = client.held.take().unwrap_or_default();
        if !backlog.is_empty() {
            let backlog = Outbound::Backlog(Box::new(Backlog(backlog)));
            if let Err(why) = client.queue.offer(backlog) {
                self.leaving.push((id, why.into()));
                return;
            }
        }
        for room in rooms {
            self.join(id, room, seat);
        }
        for request in held {
            self.request(id, request);
        }
    }

    /// Adds `id` to `room` and announces it (to the joiner too) unless the
    /// room is past `--join-notices-max`; a room that cannot be created is
    /// refused, and the client told.
    pub(super) fn join(&mut self, id: ClientId, room: RoomName, seat: Seat) {
        self.add_member(id, room, seat);
        // Back in a room a refresh had it leaving: that welcome may be due.
        self.welcome_if_owed(id);
    }

    fn add_member(&mut self, id: ClientId, room: RoomName, seat: Seat) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        // Joining in the middle of this room's run: only what follows is ours.
        let joined_at = match &self.open_run {
            Some(run) if run.room == room => RunPosition {
                run: run.number,
                offset: self.run_events.len(),
            },
            _ => RunPosition::default(),
        };
        let mut new_seat = false;
        if let Some(kept) = client.parting.iter().position(|r| *r == room) {
            // Back before its `left` came: it still has its seat.
            client.parting.swap_remove(kept);
        } else {
            new_seat = true;
            let member = RoomMember {
                client: id,
                queue: client.queue.clone(),
                joined_at,
            };
            if let Err(refused) = self.rooms.join(&room, member) {
                self.refused(&refused);
                return self.tell(id, refused.to_event());
            }
        }
        client.rooms.push(room.clone());
        let (name, from_id) = (client.name.clone(), Arc::clone(&client.label));
        if !self.announces(&room, 0) {
            // A big room: its seat takes events from here on, unannounced.
            self.engine.unannounced(&room, &name, &from_id, true);
            return self.metrics.notice_skipped();
        }
        let published = self.broadcast(&room, What::Joined { name, from_id });
        if let (Published::Later(ticket), true, Seat::FromOwnJoined) = (published, new_seat, seat) {
            // Its first event here will be its own `joined` (`seated`).
            let member = self
                .rooms
                .seats_mut(&room)
                .and_then(|seats| seats.last_mut());
            if let Some(member) = member.filter(|m| m.client == id) {
                member.joined_at = RunPosition::WAITING;
                self.waiting
                    .insert(ticket, Waiting::Join { client: id, room });
            }
        }
    }

    /// A member's own `joined` has arrived from the engine and is the last
    /// event of the room's open run: its seat takes events from there on.
    /// Without it (`own_joined` false: the engine failed to sequence it),
    /// the seat takes events from the next run on.
    pub(super) fn seated(&mut self, id: ClientId, room: &RoomName, own_joined: bool) {
        let from = if own_joined {
            let Some(run) = &self.open_run else {
                return; // cannot happen: `add_to_run` has just opened it
            };
            RunPosition {
                run: run.number,
                offset: self.run_events.len() - 1,
            }
        } else {
            self.flush_run();
            RunPosition::default()
        };
        let members = self
            .rooms
            .seats_mut(room)
            .map(|seats| seats.iter_mut().rev());
        // Seats waiting for their `joined` are the newest: found near the end.
        let seat = members.and_then(|mut m| m.find(|m| m.client == id));
        if let Some(seat) = seat.filter(|s| s.joined_at.is_waiting()) {
            seat.joined_at = from;
        }
    }

    /// Announces that `id` leaves `room` (to the leaver too) unless the room
    /// is past `--join-notices-max`, then removes it.
    pub(super) fn part(&mut self, id: ClientId, room: &RoomName) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        client.rooms.retain(|r| r != room);
        let (name, from_id) = (client.name.clone(), Arc::clone(&client.label));
        if !self.announces(room, 0) {
            self.engine.unannounced(room, &name, &from_id, false);
            self.metrics.notice_skipped();
            return self.forget_member(id, room);
        }
        match self.broadcast(room, What::Left { name, from_id }) {
            Published::Later(ticket) => {
                // Seated until its own `left` arrives (`parted`).
                if let Some(client) = self.clients.get_mut(&id) {
                    client.parting.push(room.clone());
                }
                let part = Waiting::Part {
                    client: id,
                    room: room.clone(),
                };
                self.waiting.insert(ticket, part);
            }
            // After the run up to its own `left` (or at once, if the engine
            // could not take it).
            Published::Now(_) | Published::Unavailable => self.forget_member(id, room),
        }
    }

    /// A member's own `left` has arrived from the engine and is in the
    /// room's run: now it gives up its seat, unless it came back meanwhile.
    pub(super) fn parted(&mut self, id: ClientId, room: &RoomName) {
        let Some(client) = self.clients.get_mut(&id) else {
            return; // gone, and its seats with it
        };
        if let Some(seat) = client.parting.iter().position(|r| r == room) {
            client.parting.swap_remove(seat);
            self.forget_member(id, room);
            self.welcome_if_owed(id);
        }
    }

    /// Tells `id` where it is now, if a refresh owes it that and none of
    /// its `left`s is still on its way.
    fn welcome_if_owed(&mut self, id: ClientId) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        if client.welcome_owed && client.parting.is_empty() {
            client.welcome_owed = false;
            self.welcome(id);
        }
    }

    /// A `welcome` listing where `id` is now.
    fn welcome(&mut self, id: ClientId) {
        if let Some(client) = self.clients.get(&id) {
            let welcome = Body::Welcome {
                id,
                name: client.name.clone(),
                rooms: client.rooms.clone(),
            };
            self.tell(id, Event::new(welcome));
        }
    }

    /// The only code that forgets a client: it leaves every room (the hub's
    /// clones of its queue go with it), its connection is told why, the others
    /// get `left` notices, and the metrics count it.
    pub(super) fn remove_client(&mut self, id: ClientId, why: Leave) {
        let Some(client) = self.clients.remove(&id) else {
            return; // already removed (it can be noted twice in one fan-out)
        };
        self.admission.set_members(self.clients.len());
        for room in client.rooms.iter().chain(&client.parting) {
            self.forget_member(id, room);
        }
        if why == Leave::TooSlow {
            warn!(
                "{id} dropped: slow consumer (queue of {} events full, and it does not read)",
                client.queue.bound()
            );
            client.queue.drop_as_slow();
            self.metrics.slow_consumer(client.transport);
        } else if why == Leave::Ceiling {
            warn!(
                "{id} dropped: its queue reached the ceiling of {} events",
                client.queue.bound() * CEILING_FACTOR
            );
            client.queue.drop_as_slow();
            self.metrics.queue_ceiling(client.transport);
        } else {
            debug!("{id} leaves the hub ({why:?})");
        }
        let Client {
            name,
            label,
            transport,
            rooms,
            ..
        } = client; // dropping `queue` here closes it
        for room in rooms {
            if !self.rooms.contains(&room) {
                continue;
            }
            if !self.announces(&room, 1) {
                self.engine.unannounced(&room, &name, &label, false);
                self.metrics.notice_skipped();
                continue;
            }
            let (name, from_id) = (name.clone(), Arc::clone(&label));
            self.broadcast(&room, What::Left { name, from_id });
        }
        self.metrics.disconnected(transport);
    }

    /// Takes `id` out of `room`, once it has what the room's open run holds
    /// for it: a gRPC chat that half-closes still reads its queue to the end.
    pub(super) fn forget_member(&mut self, id: ClientId, room: &RoomName) {
        if self.open_run.as_ref().is_some_and(|run| &run.room == room) {
            self.flush_run();
        }
        self.rooms.leave(room, id);
    }

    /// Shutdown: queue a goodbye for everyone; a queue whose writer is gone
    /// gets its connection cut instead. Dropping the hub then closes every queue.
    pub(super) fn say_goodbye(&mut self) {
        self.flush_run();
        for (id, client) in self.clients.drain() {
            debug!("{id}: goodbye");
            client.queue.say_goodbye();
            self.metrics.disconnected(client.transport);
        }
        self.rooms.clear();
    }

    /// A fresh token replaces what the subscriber may do: it leaves the
    /// rooms it may no longer read, then gets a `welcome` listing where it
    /// is, as after `nick` (with an engine that answers later, once its own
    /// `left`s are back: `welcome_if_owed`).
    pub(super) fn regrant(&mut self, id: ClientId, access: Access) {
        let Some(client) = self.clients.get_mut(&id) else {
            return; // it left meanwhile
        };
        let lost: Vec<RoomName> = client
            .rooms
            .iter()
            .filter(|room| !access.may_read(room))
            .cloned()
            .collect();
        client.access = access;
        for room in &lost {
            self.part(id, room);
        }
        if let Some(client) = self.clients.get_mut(&id) {
            client.welcome_owed = true;
        }
        self.welcome_if_owed(id);
    }
}
