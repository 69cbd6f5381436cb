//! The hub: one thread that owns every client and every room's members.
//!
//! Every change arrives as a `Command` on one bounded channel and is applied in
//! arrival order. No lock guards this state, because no other thread can reach
//! it: the thread is the lock. A full command channel makes the *sender* wait,
//! which is the back-pressure that slows a flooding publisher down instead of
//! the hub.
//!
//! Out, the hub only offers into each subscriber's queue, which
//! `--send-buffer` bounds in events (`Queue::offer`, `crate::queue`). Full,
//! while the peer does not read, means the subscriber cannot keep up: it is
//! removed at once and its connection ended (best-effort close 1008), so one
//! slow reader never delays the rest. This is the Go chat hub with three
//! changes: a flooding publisher waits instead of the hub, a dropped client
//! is told why, and a member whose writer has merely not run yet (the
//! machine is busy) is not dropped until a hard ceiling.
//!
//! The hub works in rounds: the command that woke it, then whatever else is
//! already waiting (up to `ROUND_COMMANDS`), then the fan-out. Events that
//! the round published to one room, one after another, go to each member as
//! one *run*: one queue slot and at most one writer wake-up per member,
//! however many events. An idle hub sends each event on its own at once; a
//! busy one batches by itself, and the busier it is the less each event
//! costs (the figures: `docs/performance.md`).
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
//! Files: this one is the thread itself — its state, its loop and rounds,
//! and the one exit door (`remove_leaving`); `handle` is how other threads
//! reach it (`Command`, `HubHandle`, the views they get back); `members`
//! is who is in which room (connect, join, leave, remove); `requests` what
//! members ask for; `answers` the hub's side of the engine seam; `fanout`
//! runs. The queue itself, its bound and its one door (`Queue::offer`) are
//! `crate::queue`.

mod answers;
mod fanout;
mod handle;
mod members;
mod requests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, never, select, tick, Receiver};
use log::debug;

use crate::admission::Admission;
use crate::auth::Access;
use crate::engine::{Answer, Engine, MemoryEngine, Read, Reading, Ticket, Unavailable};
use crate::log_every::LogEvery;
use crate::metrics::Metrics;
use crate::os::memory::Housekeeping;
use crate::os::threads::{spawn_named, WRITER_STACK_BYTES};
use crate::pace;
use crate::protocol::{ClientId, Event, Request, Transport};
use crate::queue::{NotQueued, Queue};
use crate::room::{Name, RoomName};
use crate::rooms::{Retention, Rooms};

use answers::{Published, Waiting};
use fanout::{OpenRun, MAX_RUN_EVENTS};
use handle::Sent;

pub use handle::{
    ClientIds, Command, HubGone, HubHandle, MemberInfo, PublishError, Refused, RoomDetail,
    RoomSummary, Subscriber,
};

/// How many commands may wait for the hub before senders block.
const COMMAND_QUEUE: usize = 4096;
/// The most commands one round applies before its fan-out.
const ROUND_COMMANDS: usize = 64;

/// Why a subscriber leaves the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leave {
    /// Its connection ended.
    Closed,
    /// Its queue was full, and it does not read.
    TooSlow,
    /// Its queue reached the hard ceiling (`queue::CEILING_FACTOR`).
    Ceiling,
    /// Its queue's receiver is gone.
    Gone,
}

impl From<NotQueued> for Leave {
    fn from(why: NotQueued) -> Leave {
        match why {
            NotQueued::Slow => Leave::TooSlow,
            NotQueued::Ceiling => Leave::Ceiling,
            NotQueued::Gone => Leave::Gone,
        }
    }
}

/// A connected subscriber, as the hub keeps it.
struct Client {
    name: Name,
    label: Arc<str>,
    transport: Transport,
    queue: Queue,
    /// What its token allows: asked before every join, message and `who`.
    access: Access,
    /// Rooms in joining order: the last one is where plain lines go.
    rooms: Vec<RoomName>,
    /// While its backlog is on its way from an engine that answers later:
    /// its requests, applied once it has joined its rooms.
    held: Option<Vec<Request>>,
    /// Its connection ended while its own events were on their way from an
    /// engine that answers later: it leaves once they are back (`disconnect`).
    closing: bool,
    /// Rooms it has left whose `left` notice an engine that answers later
    /// has yet to sequence: it keeps its seat until its own `left` reaches
    /// it, as with the memory engine. Almost always empty.
    parting: Vec<RoomName>,
    /// A refresh took rooms away and its `welcome` waits for the last of
    /// those `left`s (`parting`), so that it comes after them, as with the
    /// memory engine.
    welcome_owed: bool,
}

/// The hub thread's state.
pub struct Hub {
    commands: Receiver<Sent>,
    shutdown: Receiver<()>,
    metrics: Arc<Metrics>,
    clients: HashMap<ClientId, Client>,
    /// Every room, within the ceilings of `Retention`.
    rooms: Rooms,
    /// Rooms refused at `--max-rooms`, said in the log at most once a minute.
    room_limit_warning: LogEvery,
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
            room_limit_warning: LogEvery::new(requests::ROOM_LIMIT_WARNING_EVERY),
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
                        Ok(sent) => {
                            self.round(sent);
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
    fn round(&mut self, first: Sent) {
        pace::hub_took(first.at);
        self.apply(first.command);
        for _ in 1..ROUND_COMMANDS {
            match self.commands.try_recv() {
                Ok(sent) => self.apply(sent.command),
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
            Command::Regrant { id, verdict } => match verdict {
                Ok(access) => self.regrant(id, access),
                Err(refused) => self.tell(id, *refused),
            },
            Command::Disconnect { id } => self.disconnect(id),
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
                Ok(Published::Unavailable) => {
                    let _ = reply.send(Err(Unavailable.into())); // as above
                }
                Err(refused) => {
                    let _ = reply.send(Err(refused));
                }
            },
            // With history kept outside the hub (Redis), the engine says
            // which rooms have some, and their newest ids, first.
            Command::ListRooms { reply } => {
                let ticket = self.next_ticket();
                if self.engine.stored(ticket, None) {
                    self.waiting.insert(ticket, Waiting::Rooms(reply));
                } else {
                    let _ = reply.send(self.summaries(&[]));
                }
            }
            Command::DescribeRoom { room, reply } => {
                let ticket = self.next_ticket();
                if self.engine.stored(ticket, Some(&room)) {
                    self.waiting
                        .insert(ticket, Waiting::Describe { room, reply });
                } else {
                    let _ = reply.send(self.describe(&room, None));
                }
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

    /// The one exit door, taken after every command: removes the clients
    /// noted as leaving.
    fn remove_leaving(&mut self) {
        while let Some((id, why)) = self.leaving.pop() {
            self.remove_client(id, why);
        }
    }
}
