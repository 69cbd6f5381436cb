//! The hub: one thread that owns every client and every room's members.
//!
//! Every change arrives as a `Command` on one bounded channel and is applied in
//! arrival order. No lock guards this state, because no other thread can reach
//! it: the thread is the lock. A full command channel makes the *sender* wait,
//! which is the back-pressure that slows a flooding publisher down instead of
//! the hub.
//!
//! Out, the hub only `try_send`s into each subscriber's queue, which
//! `--send-buffer` bounds in events (`offer`). Full means the subscriber
//! cannot keep up: it is removed at once and its connection ended
//! (best-effort close 1008), so one slow reader never delays the rest. This
//! is the Go chat hub with two changes: a flooding publisher waits instead of
//! the hub, and a dropped client is told why.
//!
//! The hub works in rounds: the command that woke it, then whatever else is
//! already waiting (up to `ROUND_COMMANDS`), then the fan-out. Events that
//! the round published to one room, one after another, go to each member as
//! one *run*: one queue slot and at most one writer wake-up per member,
//! however many events. An idle hub sends each event on its own at once; a
//! busy one batches by itself, and the busier it is the less each event
//! costs. A room of 5000 joining at once is 12.5 M `joined` deliveries: sent
//! one event per queue item, 5000 writers woke for a trickle each, the hub got
//! a sliver of the core, and the storm had not settled after 50 s; in runs it
//! settles in 14 s (`loadgen idle -n 5000`, pinned, 2-core VM).
//!
//! Queries (`rooms`, a room's members, history) are commands that carry a reply
//! channel: request/reply over channels, with the hub as the only owner.
//!
//! Ids and history sit behind the engine (`engine`): the hub drafts each
//! room event (`broadcast`), the engine gives it its id and keeps it, and the
//! hub fans it out (`add_to_run`): at once with the in-memory engine, or when
//! the engine's answer arrives on the channel the loop selects on beside its
//! commands (`answer`). The hub never waits on the engine.
//!
//! Replay without gaps: `Connect` registers the subscriber, has the engine
//! read the history it asked for (`since`), and joins its rooms once that
//! backlog is sent (`replayed`): in the same step with the in-memory engine;
//! with an engine that answers later, when its answer arrives, holding the
//! subscriber's requests until then. Either way nothing published in between
//! can be missed or sent twice (the engine's contract says why).
//!
//! Rooms live in `Rooms` (and with them the in-memory engine's history),
//! within `--max-rooms`, `--max-history-bytes` and `--room-expiry` (see
//! `rooms`): a room that cannot be created is refused (`RoomLimit`: REST
//! 503, an `unavailable` error event), and rooms without members are swept
//! from the hub loop every `Retention::sweep_interval`, with no timer thread.
//!
//! Files: `queue` is what the hub puts in each member's queue and the bound it
//! keeps there (`Outbound`, `Hangup`); `handle` is how other threads reach the
//! hub (`Command`, `HubHandle`, and the views they get back); this file is the
//! thread itself: its loop, its rounds and fan-out, and the one exit door.

mod handle;
mod queue;

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, never, select, tick, Receiver, Sender};
use log::{debug, warn};

use crate::admission::Admission;
use crate::engine::{Answer, Draft, Engine, MemoryEngine, Read, Reading, Sequenced, Ticket, What};
use crate::metrics::Metrics;
use crate::os::memory::Housekeeping;
use crate::os::threads::{spawn_named, WRITER_STACK_BYTES};
use crate::protocol::{
    now_millis, Body, ClientId, Event, Member, Request, RoomCount, Transport, HELP,
};
use crate::room::{Name, RoomMember, RoomName};
use crate::rooms::{Retention, RoomLimit, Rooms};
use crate::subscription::MAX_ROOMS;

pub use handle::{
    ClientIds, Command, HubGone, HubHandle, MemberInfo, PublishError, RoomDetail, RoomSummary,
    Subscriber,
};
pub use queue::{Backlog, Hangup, Outbound, Run, RunPosition};

/// How many commands may wait for the hub before senders block.
const COMMAND_QUEUE: usize = 4096;
/// The most commands one round applies before its fan-out.
const ROUND_COMMANDS: usize = 64;
/// The most events in one run (fewer with a small `--send-buffer`: a run must
/// fit in a queue that is already three-quarters full).
const MAX_RUN_EVENTS: usize = 64;
/// Room reserved for a run's events: 160 pointers are 1280 bytes, above the
/// largest block glibc keeps in a thread's cache of freed blocks (1032). The
/// run is freed by the last writer to drop it, on that writer's thread, where
/// a cached block would stay for good (see `transport::ws::write_frames`).
const RUN_ROOM: usize = 160;
const _: () = assert!(RUN_ROOM * size_of::<Arc<Event>>() > 1032 && RUN_ROOM >= MAX_RUN_EVENTS);
/// The most requests held from a member whose backlog is on its way.
const HELD_REQUESTS: usize = 64;
/// The least time between two warnings that rooms are being refused.
const ROOM_LIMIT_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Why a subscriber leaves the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leave {
    /// Its connection ended.
    Closed,
    /// Its queue was full.
    TooSlow,
    /// Its queue's receiver is gone.
    Gone,
}

/// A connected subscriber, as the hub keeps it.
struct Client {
    name: Name,
    label: Arc<str>,
    transport: Transport,
    events: Sender<Outbound>,
    hangup: Arc<Hangup>,
    /// Rooms in joining order: the last one is where plain lines go.
    rooms: Vec<RoomName>,
    /// While its backlog is on its way from an engine that answers later:
    /// its requests, applied once it has joined its rooms.
    held: Option<Vec<Request>>,
    /// Rooms it has left whose `left` notice an engine that answers later
    /// has yet to sequence: it keeps its seat until its own `left` reaches
    /// it, as with the memory engine. Almost always empty.
    parting: Vec<RoomName>,
}

/// What became of a room event handed to the engine.
enum Published {
    /// Sequenced with this id (0: not at all, and no id spent, because the
    /// room is gone or the engine refused it).
    Now(u64),
    /// The engine answers later, under this ticket.
    Later(Ticket),
}

/// When a new seat in a room starts taking events.
#[derive(Clone, Copy)]
enum Seat {
    /// From its own `joined` on, as with the memory engine.
    FromOwnJoined,
    /// At once: a replay's backlog came first and everything after it is owed.
    AtOnce,
}

/// Who waits for an engine's `Later` answer.
enum Waiting {
    /// A publisher from outside a connection, for its event's id.
    Publish(Sender<Result<u64, RoomLimit>>),
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
}

/// The hub thread's state.
pub struct Hub {
    commands: Receiver<Command>,
    shutdown: Receiver<()>,
    metrics: Arc<Metrics>,
    clients: HashMap<ClientId, Client>,
    /// Every room, within the ceilings of `Retention`.
    rooms: Rooms,
    /// When rooms were last refused with a warning in the log.
    room_limit_warned: Option<Instant>,
    /// Ids and history (see `engine`).
    engine: Box<dyn Engine>,
    /// The engine's `Later` answers.
    answers: Receiver<Answer>,
    /// Tickets handed out to calls on the engine, to number them.
    tickets: u64,
    /// Who waits for which `Later` answer.
    waiting: HashMap<Ticket, Waiting>,
    /// Subscribers found slow or gone during fan-out, removed after it.
    leaving: Vec<(ClientId, Leave)>,
    /// The run this round is filling, if any: its room, and its events in
    /// `run_events`.
    open_run: Option<OpenRun>,
    run_events: Vec<Arc<Event>>,
    /// Runs opened so far, to number them.
    runs: u64,
    /// The most events in one run (`MAX_RUN_EVENTS`, or less: see there).
    max_run: usize,
    /// When to hand freed memory back.
    housekeeping: Housekeeping,
    /// The count of lagging members, which new members wait on.
    admission: Arc<Admission>,
}

/// The run being filled: which room's, and its number.
struct OpenRun {
    room: RoomName,
    number: u64,
}

impl Hub {
    /// Starts the hub thread on the in-memory engine. It runs until
    /// `shutdown` disconnects (its sender is dropped), then says goodbye to
    /// every subscriber and returns. `retention` says what it keeps and how
    /// long; `send_buffer` is the subscribers' `--send-buffer`, which bounds
    /// a run.
    pub fn spawn(
        retention: Retention,
        send_buffer: usize,
        metrics: Arc<Metrics>,
        shutdown: Receiver<()>,
    ) -> std::io::Result<(HubHandle, JoinHandle<()>)> {
        let engine = Box::new(MemoryEngine::new(Arc::clone(&metrics)));
        Hub::spawn_with_engine(engine, retention, send_buffer, metrics, shutdown)
    }

    /// Starts the hub thread on `engine` (see `spawn`).
    pub fn spawn_with_engine(
        engine: Box<dyn Engine>,
        retention: Retention,
        send_buffer: usize,
        metrics: Arc<Metrics>,
        shutdown: Receiver<()>,
    ) -> std::io::Result<(HubHandle, JoinHandle<()>)> {
        let (to_hub, commands) = bounded(COMMAND_QUEUE);
        let admission = Arc::new(Admission::default());
        let handle = HubHandle {
            to_hub,
            admission: Arc::clone(&admission),
            metrics: Arc::clone(&metrics),
        };
        let hub = Hub {
            commands,
            admission,
            shutdown,
            metrics,
            clients: HashMap::new(),
            rooms: Rooms::new(retention),
            room_limit_warned: None,
            answers: engine.answers(),
            engine,
            tickets: 0,
            waiting: HashMap::new(),
            leaving: Vec::new(),
            open_run: None,
            run_events: Vec::new(),
            runs: 0,
            max_run: (send_buffer / 4).clamp(1, MAX_RUN_EVENTS),
            housekeeping: Housekeeping::default(),
        };
        let thread = spawn_named("hub".into(), WRITER_STACK_BYTES, move || hub.run())?;
        Ok((handle, thread))
    }

    fn run(mut self) {
        let sweeps = self.rooms.sweep_interval().map_or_else(never, tick);
        'hub: loop {
            // After heavy traffic, a quiet spell is the time to hand freed
            // memory back (`memory`); otherwise wait as long as it takes.
            // A deadline, not a timeout: sweeps on the way do not end the
            // quiet spell.
            let quiet_until = self
                .housekeeping
                .trim_after_quiet()
                .map(|quiet| Instant::now() + quiet);
            loop {
                let quiet = quiet_until.map_or(Duration::MAX, |until| {
                    until.saturating_duration_since(Instant::now())
                });
                select! {
                    recv(self.commands) -> command => match command {
                        Ok(command) => {
                            self.round(command);
                            break;
                        }
                        Err(_) => break 'hub, // every sender is gone: nothing can reach the hub any more
                    },
                    recv(self.answers) -> answer => match answer {
                        Ok(answer) => {
                            self.answer_round(answer);
                            break;
                        }
                        Err(_) => {
                            // An engine whose threads have ended answers no more.
                            log::error!("the engine stopped answering");
                            self.answers = never();
                        }
                    },
                    recv(sweeps) -> _ => self.sweep(),
                    recv(self.shutdown) -> _ => break 'hub,
                    default(quiet) => {
                        self.housekeeping.trim();
                        break;
                    }
                }
            }
        }
        self.say_goodbye();
    }

    /// Forgets the rooms whose `--room-expiry` has passed.
    fn sweep(&mut self) {
        let expired = self.rooms.expire(Instant::now());
        if expired > 0 {
            debug!("{expired} rooms without members expired");
            self.metrics.rooms_expired(expired);
            self.count_rooms();
        }
    }

    fn count_rooms(&self) {
        self.metrics.set_rooms(
            self.rooms.len(),
            self.rooms.history_events(),
            self.rooms.history_bytes(),
        );
    }

    /// One round: `first`, then the commands already waiting (up to
    /// `ROUND_COMMANDS` in all), then the fan-out of the run they left open.
    fn round(&mut self, first: Command) {
        self.apply(first);
        for _ in 1..ROUND_COMMANDS {
            match self.commands.try_recv() {
                Ok(command) => self.apply(command),
                Err(_) => break, // nothing else waiting (or the hub is stopping)
            }
        }
        self.end_round();
    }

    /// A round of the engine's `Later` answers: `first`, then those already
    /// waiting, then the fan-out, as for commands.
    fn answer_round(&mut self, first: Answer) {
        self.answer(first);
        for _ in 1..ROUND_COMMANDS {
            match self.answers.try_recv() {
                Ok(answer) => self.answer(answer),
                Err(_) => break, // nothing else waiting
            }
        }
        self.end_round();
    }

    fn end_round(&mut self) {
        // The fan-out can find members slow, and removing them sends `left`
        // notices: a run of their own, which can find more.
        loop {
            self.flush_run();
            if self.leaving.is_empty() {
                break;
            }
            self.remove_leaving();
        }
        self.count_rooms();
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Connect {
                subscriber,
                rooms,
                since,
            } => self.connect(subscriber, rooms, since),
            Command::Request { from, request } => self.request(from, request),
            Command::Disconnect { id } => self.leaving.push((id, Leave::Closed)),
            Command::Publish {
                room,
                from,
                from_id,
                text,
                reply,
            } => match self.say(&room, from, from_id, text) {
                Ok(Published::Now(id)) => {
                    let _ = reply.send(Ok(id)); // the asker may have given up; nothing to undo
                }
                Ok(Published::Later(ticket)) => {
                    self.waiting.insert(ticket, Waiting::Publish(reply));
                }
                Err(refused) => {
                    let _ = reply.send(Err(refused));
                }
            },
            Command::ListRooms { reply } => {
                let _ = reply.send(self.summaries());
            }
            Command::DescribeRoom { room, reply } => {
                let _ = reply.send(self.describe(&room));
            }
            Command::History {
                room,
                since,
                limit,
                reply,
            } => {
                let read = Read {
                    rooms: vec![room.clone()],
                    since,
                    limit,
                };
                let ticket = self.next_ticket();
                match self.engine.history(&self.rooms, ticket, read) {
                    Reading::Now(events) => {
                        let _ = reply.send(self.found(&room, events));
                    }
                    Reading::Later => {
                        self.waiting
                            .insert(ticket, Waiting::History { room, reply });
                    }
                }
            }
        }
        self.remove_leaving();
    }

    /// Applies one of the engine's `Later` answers for whoever waits for it.
    fn answer(&mut self, answer: Answer) {
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
                    Some(Waiting::Join { client, room }) => self.seated(client, &room),
                    Some(Waiting::Part { client, room }) => self.parted(client, &room),
                    _ => {}
                }
            }
            Answer::History(ticket, events) => match self.waiting.remove(&ticket) {
                Some(Waiting::Backlog { client, rooms }) => {
                    self.replayed(client, rooms, events, Seat::AtOnce)
                }
                Some(Waiting::History { room, reply }) => {
                    let _ = reply.send(self.found(&room, events));
                }
                Some(Waiting::Publish(_) | Waiting::Join { .. } | Waiting::Part { .. }) | None => {} // not a read
            },
        }
        self.remove_leaving();
    }

    /// A history read's answer: `None` for a room that does not exist.
    fn found(&self, room: &RoomName, events: Vec<Arc<Event>>) -> Option<Vec<Arc<Event>>> {
        (self.rooms.contains(room) || !events.is_empty()).then_some(events)
    }

    /// A new ticket for a call on the engine.
    fn next_ticket(&mut self) -> Ticket {
        self.tickets += 1;
        Ticket(self.tickets)
    }

    /// The one exit door, taken after every command: removes the clients
    /// noted as leaving.
    fn remove_leaving(&mut self) {
        while let Some((id, why)) = self.leaving.pop() {
            self.remove_client(id, why);
        }
    }

    fn connect(&mut self, subscriber: Subscriber, rooms: Vec<RoomName>, since: Option<u64>) {
        let Subscriber {
            id,
            name,
            transport,
            events,
            hangup,
        } = subscriber;
        let mut wanted: Vec<RoomName> = Vec::with_capacity(rooms.len());
        for room in rooms {
            if !wanted.contains(&room) && wanted.len() < MAX_ROOMS {
                wanted.push(room);
            }
        }
        let _ = hangup.admission.set(Arc::clone(&self.admission)); // set once, before its first event

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
        if offer(&events, &hangup, Outbound::Event(Arc::new(welcome))).is_err() {
            return; // the connection ended before the hub heard of it
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
                events,
                hangup,
                rooms: Vec::new(),
                held: backlog.is_none().then(Vec::new),
                parting: Vec::new(),
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
    fn replayed(
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
            if let Err(why) = offer(&client.events, &client.hangup, backlog) {
                self.leaving.push((id, why));
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

    fn request(&mut self, from: ClientId, request: Request) {
        let Some(client) = self.clients.get_mut(&from) else {
            return; // it left while this request was queued
        };
        if let Some(held) = &mut client.held {
            // Its backlog comes first (`replayed`); held within a bound, so
            // that an engine slow to answer cannot make the hub hoard.
            if held.len() < HELD_REQUESTS {
                held.push(request);
                return;
            }
            let wait = "your history is on its way; send again once it has arrived";
            return self.tell(from, Event::error("rate_limited", wait));
        }
        match request {
            Request::Say { room, text } => {
                let Some(room) = room.or_else(|| client.rooms.last().cloned()) else {
                    return self.tell(from, not_member("join a room first: /join ROOM"));
                };
                if !client.rooms.contains(&room) {
                    return self.tell(from, not_member(format!("join #{room} first")));
                }
                let (name, label) = (client.name.clone(), Arc::clone(&client.label));
                if let Err(refused) = self.say(&room, name, label, text) {
                    self.tell(from, refused.to_event()); // cannot happen: a member's room exists
                }
            }
            Request::Join(room) => {
                if client.rooms.contains(&room) {
                    return; // already there: joining is idempotent
                }
                if client.rooms.len() >= MAX_ROOMS {
                    let message = format!("at most {MAX_ROOMS} rooms per connection");
                    return self.tell(from, Event::error("bad_request", message));
                }
                self.join(from, room, Seat::FromOwnJoined);
            }
            Request::Leave(room) => {
                if !client.rooms.contains(&room) {
                    return self.tell(from, not_member(format!("you are not in #{room}")));
                }
                self.part(from, &room);
            }
            Request::Nick(name) => {
                client.name = name.clone();
                let welcome = Body::Welcome {
                    id: from,
                    name,
                    rooms: client.rooms.clone(),
                };
                self.tell(from, Event::new(welcome));
            }
            Request::Who(room) => {
                let Some(room) = room.or_else(|| client.rooms.last().cloned()) else {
                    return self.tell(from, not_member("join a room first: /join ROOM"));
                };
                let members = self.rooms.get(&room).map_or_else(Vec::new, |r| {
                    r.members
                        .iter()
                        .filter_map(|m| {
                            let c = self.clients.get(&m.client)?;
                            Some(Member {
                                id: m.client,
                                name: c.name.clone(),
                            })
                        })
                        .collect()
                });
                self.tell(from, Event::new(Body::Presence { room, members }));
            }
            Request::Rooms => {
                let rooms = self
                    .summaries()
                    .into_iter()
                    .map(|r| RoomCount {
                        name: r.name,
                        members: r.members,
                    })
                    .collect();
                self.tell(from, Event::new(Body::Rooms { rooms }));
            }
            Request::Help => self.tell(from, Event::new(Body::Help { text: HELP })),
        }
    }

    /// Adds `id` to `room` and announces it (to the joiner too); a room that
    /// cannot be created is refused, and the client told.
    fn join(&mut self, id: ClientId, room: RoomName, seat: Seat) {
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
                queue: client.events.clone(),
                hangup: Arc::clone(&client.hangup),
                joined_at,
            };
            if let Err(refused) = self.rooms.join(&room, member) {
                self.refused(&refused);
                return self.tell(id, refused.to_event());
            }
        }
        client.rooms.push(room.clone());
        let (name, from_id) = (client.name.clone(), Arc::clone(&client.label));
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
    fn seated(&mut self, id: ClientId, room: &RoomName) {
        let Some(run) = &self.open_run else {
            return; // cannot happen: `add_to_run` has just opened it
        };
        let from = RunPosition {
            run: run.number,
            offset: self.run_events.len() - 1,
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

    /// Announces that `id` leaves `room` (to the leaver too), then removes it.
    fn part(&mut self, id: ClientId, room: &RoomName) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        client.rooms.retain(|r| r != room);
        let (name, from_id) = (client.name.clone(), Arc::clone(&client.label));
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
            Published::Now(_) => self.forget_member(id, room), // after the run up to its own `left`
        }
    }

    /// A member's own `left` has arrived from the engine and is in the
    /// room's run: now it gives up its seat, unless it came back meanwhile.
    fn parted(&mut self, id: ClientId, room: &RoomName) {
        let Some(client) = self.clients.get_mut(&id) else {
            return; // gone, and its seats with it
        };
        if let Some(seat) = client.parting.iter().position(|r| r == room) {
            client.parting.swap_remove(seat);
            self.forget_member(id, room);
        }
    }

    /// Publishes a message, creating its room if `--max-rooms` allows.
    fn say(
        &mut self,
        room: &RoomName,
        from: Name,
        from_id: Arc<str>,
        text: String,
    ) -> Result<Published, RoomLimit> {
        if let Err(refused) = self.rooms.create(room) {
            self.refused(&refused);
            return Err(refused);
        }
        self.metrics.published();
        let what = What::Message {
            from,
            from_id,
            text,
        };
        let published = self.broadcast(room, what);
        if !matches!(published, Published::Now(id) if id > 0) {
            // Nothing was kept here (an engine that keeps history elsewhere,
            // or one that refused): a room just created for it goes again.
            self.rooms.release(room);
        }
        Ok(published)
    }

    /// Counts a room refused at `--max-rooms`, and says so in the log (at
    /// most once a minute: the metric counts every one).
    fn refused(&mut self, refused: &RoomLimit) {
        self.metrics.room_refused();
        let warned_lately = self
            .room_limit_warned
            .is_some_and(|at| at.elapsed() < ROOM_LIMIT_WARNING_EVERY);
        if warned_lately {
            debug!("{refused}");
        } else {
            warn!("{refused} (switchboard_rooms_refused_total counts every refusal)");
            self.room_limit_warned = Some(Instant::now());
        }
    }

    /// Has the engine sequence a room event (give it the next id and keep
    /// it), and fans it out: now, if the engine answers at once, or when its
    /// answer arrives (`answer`).
    fn broadcast(&mut self, room: &RoomName, what: What) -> Published {
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
        }
    }

    /// Adds a sequenced event to the room's run; the run goes to the members
    /// when the round ends (`flush_run`). A run holds one room's events, so
    /// that a member of several rooms still gets every event in id order.
    fn add_to_run(&mut self, room: &RoomName, event: Arc<Event>) {
        let same_room = self.open_run.as_ref().is_some_and(|run| &run.room == room);
        if !same_room || self.run_events.len() >= self.max_run {
            self.flush_run();
        }
        if self.open_run.is_none() {
            self.runs += 1;
            self.open_run = Some(OpenRun {
                room: room.clone(),
                number: self.runs,
            });
        }
        if self.run_events.capacity() == 0 {
            self.run_events.reserve_exact(RUN_ROOM);
        }
        self.run_events.push(event);
    }

    /// The fan-out: `try_send` the open run to every member of its room, one
    /// queue item each. Never `send`: a blocking send would let one slow
    /// reader stall every room. Members that fail are noted in `leaving`.
    fn flush_run(&mut self) {
        let Some(OpenRun { room, number }) = self.open_run.take() else {
            return;
        };
        let Some(target) = self.rooms.get(&room) else {
            self.run_events.clear(); // everyone left
            return;
        };
        let run = Arc::new(Run(std::mem::take(&mut self.run_events)));
        let mut delivered = 0;
        for member in &target.members {
            let Some(item) = Run::part_from(&run, member.joined_at.start_in(number)) else {
                continue; // joined after the run's last event was added
            };
            let count = item.counted();
            match offer(&member.queue, &member.hangup, item) {
                Ok(()) => delivered += count as u64,
                Err(why) => self.leaving.push((member.client, why)),
            }
        }
        self.metrics.delivered(delivered);
        self.housekeeping.delivered(delivered);
        // A run nobody shares (one event goes out as a plain event) gives its
        // buffer back for the next.
        if let Some(Run(mut events)) = Arc::into_inner(run) {
            events.clear();
            self.run_events = events;
        }
    }

    /// Sends an answer to one client; a full queue drops it like fan-out does.
    fn tell(&mut self, id: ClientId, event: Event) {
        self.flush_run(); // what the round published comes first
        let Some(client) = self.clients.get(&id) else {
            return;
        };
        let answer = Outbound::Event(Arc::new(event));
        if let Err(why) = offer(&client.events, &client.hangup, answer) {
            self.leaving.push((id, why));
        }
    }

    /// The only code that forgets a client: it leaves every room (the hub's
    /// clones of its queue go with it), its connection is told why, the others
    /// get `left` notices, and the metrics count it.
    fn remove_client(&mut self, id: ClientId, why: Leave) {
        let Some(client) = self.clients.remove(&id) else {
            return; // already removed (it can be noted twice in one fan-out)
        };
        self.admission.set_members(self.clients.len());
        for room in client.rooms.iter().chain(&client.parting) {
            self.forget_member(id, room);
        }
        if why == Leave::TooSlow {
            warn!(
                "{id} dropped: slow consumer (queue of {} events full)",
                client.hangup.bound
            );
            client.hangup.drop_as_slow();
            self.metrics.slow_consumer(client.transport);
        } else {
            debug!("{id} leaves the hub ({why:?})");
        }
        let Client {
            name,
            label,
            transport,
            rooms,
            ..
        } = client; // dropping `events` here closes the queue
        for room in rooms {
            if !self.rooms.contains(&room) {
                continue;
            }
            let (name, from_id) = (name.clone(), Arc::clone(&label));
            self.broadcast(&room, What::Left { name, from_id });
        }
        self.metrics.disconnected(transport);
    }

    /// Takes `id` out of `room`, once it has what the room's open run holds
    /// for it: a gRPC chat that half-closes still reads its queue to the end.
    fn forget_member(&mut self, id: ClientId, room: &RoomName) {
        if self.open_run.as_ref().is_some_and(|run| &run.room == room) {
            self.flush_run();
        }
        self.rooms.leave(room, id);
    }

    fn summaries(&self) -> Vec<RoomSummary> {
        let mut rooms: Vec<RoomSummary> = self
            .rooms
            .iter()
            .map(|(name, room)| RoomSummary {
                name: name.clone(),
                members: room.members.len(),
                last_id: room.last_id(),
            })
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        rooms
    }

    fn describe(&self, room: &RoomName) -> Option<RoomDetail> {
        let r = self.rooms.get(room)?;
        let members = r
            .members
            .iter()
            .filter_map(|m| {
                let c = self.clients.get(&m.client)?;
                Some(MemberInfo {
                    id: m.client,
                    name: c.name.clone(),
                    transport: c.transport,
                })
            })
            .collect();
        Some(RoomDetail {
            name: room.clone(),
            members,
            last_id: r.last_id(),
        })
    }

    /// Shutdown: queue a goodbye for everyone; a queue too full for it gets its
    /// connection cut instead. Dropping the hub then closes every queue.
    fn say_goodbye(&mut self) {
        self.flush_run();
        for (id, client) in self.clients.drain() {
            if client.events.try_send(Outbound::GoingAway).is_err() {
                debug!("{id}: queue full at shutdown, cutting the connection");
                client.hangup.cut();
            }
            self.metrics.disconnected(client.transport);
        }
        self.rooms.clear();
    }
}

/// Puts `item` in a subscriber's queue if its events fit under the queue's
/// bound (`Hangup::queued`), and nudges the writer once the queue is more
/// than half full: it must not linger now.
fn offer(queue: &Sender<Outbound>, hangup: &Hangup, item: Outbound) -> Result<(), Leave> {
    let count = item.counted();
    let bound = hangup.bound;
    // Counted before the send, so that the consumer's `took` cannot come first.
    let queued = hangup.count_in(count);
    let sent = if queued > bound {
        Err(Leave::TooSlow)
    } else {
        // Never waits: the queue is unbounded, and the count above its bound.
        queue.send(item).map_err(|_| Leave::Gone)
    };
    match sent {
        Ok(()) if queued * 2 > bound => hangup.nudge(),
        Ok(()) => {}
        Err(_) => hangup.count_out(count),
    }
    sent
}

fn not_member(message: impl Into<String>) -> Event {
    Event::error("not_member", message)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    use crate::protocol::Transport;

    /// A hub of its own, without history, and the sender whose drop stops it.
    fn spawn_hub(send_buffer: usize) -> (Sender<()>, HubHandle, JoinHandle<()>) {
        let (stop, shutdown) = bounded::<()>(0);
        let (hub, thread) = Hub::spawn(
            no_history(),
            send_buffer,
            Arc::new(Metrics::new()),
            shutdown,
        )
        .expect("hub starts");
        (stop, hub, thread)
    }

    #[test]
    fn a_queue_slot_is_small() {
        // A queue grows by blocks of slots: every subscriber keeps one.
        assert!(std::mem::size_of::<Outbound>() <= 16);
    }

    /// A subscriber of `hub` in `room`, whose queue holds `send_buffer` events.
    fn subscribe(
        hub: &HubHandle,
        n: u64,
        room: &RoomName,
        send_buffer: usize,
    ) -> (Receiver<Outbound>, Arc<Hangup>) {
        let (events, queue) = crossbeam_channel::unbounded();
        let hangup = Hangup::new(None, send_buffer);
        let subscriber = Subscriber {
            id: ClientId(n),
            name: Name::guest(n),
            transport: Transport::Ws,
            events,
            hangup: Arc::clone(&hangup),
        };
        let rooms = vec![room.clone()];
        let connect = Command::Connect {
            subscriber,
            rooms,
            since: None,
        };
        hub.send(connect).expect("hub runs");
        (queue, hangup)
    }

    /// Holds the hub on a query until the returned sender is dropped or
    /// answered: commands sent meanwhile wait, and the hub then finds them
    /// all queued together, as it would under load.
    fn hold(hub: &HubHandle) -> Receiver<Option<Vec<Arc<Event>>>> {
        let (reply, answer) = bounded(0); // the hub's answer waits for us
        let room = RoomName::parse("held").expect("valid");
        let query = Command::History {
            room,
            since: None,
            limit: 1,
            reply,
        };
        hub.send(query).expect("hub runs");
        answer
    }

    /// The default ceilings, with no history kept.
    fn no_history() -> Retention {
        Retention {
            history: 0,
            ..Retention::default()
        }
    }

    fn publish(
        hub: &HubHandle,
        room: &RoomName,
        text: String,
        reply: &Sender<Result<u64, RoomLimit>>,
    ) {
        let publish = Command::Publish {
            room: room.clone(),
            from: Name::guest(0),
            from_id: "test".into(),
            text,
            reply: reply.clone(),
        };
        hub.send(publish).expect("hub runs");
    }

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// What a subscriber received: message texts, and how many queue items.
    fn texts(items: &[Outbound]) -> Vec<String> {
        let texts = items.iter().flat_map(Outbound::events);
        texts
            .filter_map(|event| match event.body() {
                Body::Message { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn queued_publishes_go_out_in_runs_and_the_send_buffer_bounds_events_not_slots() {
        const SEND_BUFFER: usize = 64;
        const TOTAL: usize = 2000;
        let (stop, hub, thread) = spawn_hub(SEND_BUFFER);
        let room = RoomName::parse("r").expect("valid");
        let (stalled, stalled_hangup) = subscribe(&hub, 1, &room, SEND_BUFFER);
        // Room for everything: it takes nothing until the end.
        let (healthy, healthy_hangup) = subscribe(&hub, 2, &room, 2 * TOTAL);

        let held = hold(&hub);
        let (reply, ids) = bounded(TOTAL);
        for n in 0..TOTAL {
            publish(&hub, &room, format!("m{n}"), &reply);
        }
        held.recv().expect("the hub answers the query");
        for _ in 0..TOTAL {
            ids.recv_timeout(Duration::from_secs(10))
                .expect("answered")
                .expect("published");
        }
        wait_until("the stalled subscriber is dropped", || {
            stalled_hangup.is_too_slow()
        });
        let waiting: usize = stalled.try_iter().map(|item| item.counted()).sum();
        assert!(waiting <= SEND_BUFFER, "{waiting} events waited");

        drop(stop);
        thread.join().expect("hub ends");
        let items: Vec<Outbound> = healthy.try_iter().collect();
        items.iter().for_each(|item| healthy_hangup.took(item));
        assert_eq!(healthy_hangup.queued.load(Ordering::Acquire), 0);
        let expected: Vec<String> = (0..TOTAL).map(|n| format!("m{n}")).collect();
        assert_eq!(texts(&items), expected, "every message once, in order");
        // Runs of a quarter of the send buffer, each one queue item.
        let most = TOTAL / (SEND_BUFFER / 4) + 10;
        assert!(items.len() <= most, "{} items for {TOTAL}", items.len());
    }

    #[test]
    fn members_count_as_lagging_while_their_queue_is_past_a_quarter_full() {
        const SEND_BUFFER: usize = 16;
        let (stop, hub, thread) = spawn_hub(SEND_BUFFER);
        let room = RoomName::parse("r").expect("valid");
        let (slow, slow_hangup) = subscribe(&hub, 1, &room, SEND_BUFFER);
        let (gone, gone_hangup) = subscribe(&hub, 2, &room, SEND_BUFFER);
        let (reply, ids) = bounded(SEND_BUFFER);
        // welcome + joined (+ joined) + 3 messages: 5 or 6 of 16, past a quarter.
        for n in 0..3 {
            publish(&hub, &room, format!("m{n}"), &reply);
            ids.recv_timeout(Duration::from_secs(10))
                .expect("answered")
                .expect("published");
        }
        wait_until("both members lag", || hub.members_lagging() == 2);

        // One catches up by taking what it was sent...
        for item in slow.try_iter() {
            slow_hangup.took(&item);
        }
        assert_eq!(hub.members_lagging(), 1);
        // ...the other leaves with its queue still full: gone, so no longer lagging.
        hub.send(Command::Disconnect { id: ClientId(2) })
            .expect("hub runs");
        drop(gone);
        wait_until("the hub let go of the member that left", || {
            Arc::strong_count(&gone_hangup) == 1
        });
        drop(gone_hangup);
        assert_eq!(hub.members_lagging(), 0);
        assert_eq!(hub.wait_to_join(), Duration::ZERO);
        drop(stop);
        thread.join().expect("hub ends");
    }

    #[test]
    fn members_joining_during_a_run_get_only_what_follows_their_own_joined() {
        const JOINERS: u64 = 40;
        let (stop, hub, thread) = spawn_hub(256);
        let room = RoomName::parse("r").expect("valid");
        let held = hold(&hub);
        let queues: Vec<_> = (1..=JOINERS)
            .map(|n| subscribe(&hub, n, &room, 256))
            .collect();
        held.recv().expect("the hub answers the query");
        // Answered once every join is applied; the round then ends with its
        // fan-out before the hub looks at `stop`.
        hub.rooms().expect("hub runs");
        drop(stop);
        thread.join().expect("hub ends");
        for (n, (queue, _)) in (1..=JOINERS).zip(queues) {
            let joined: Vec<u64> = queue
                .try_iter()
                .flat_map(|item| item.events().to_vec())
                .filter_map(|event| match event.body() {
                    Body::Joined { from_id, .. } => from_id[1..].parse().ok(),
                    _ => None,
                })
                .collect();
            let expected: Vec<u64> = (n..=JOINERS).collect();
            assert_eq!(joined, expected, "c{n} sees itself and every later joiner");
        }
    }
}
