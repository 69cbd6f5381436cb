//! Lesson 4: request/reply over channels: a reply sender inside the command.
//!
//! One thread owns the rooms and their ids; nobody else can touch them, so no
//! lock guards them. To ask it something, a thread makes a one-slot channel,
//! sends the command with the sender inside, and waits on the receiver. The
//! slot is why the owner never waits on an asker: its one `send` always fits,
//! even if the asker is slow to read, or gone (then the send fails, and the
//! owner does not care). Three "HTTP handler" threads publish at once and get
//! their ids; an asker that does not read yet cannot hold the owner up.
//!
//!     cargo run --example 04_request_reply
//!
//! In switchboard: `HubHandle::ask` in `src/hub/handle.rs`, which `POST /rooms/{room}/messages`
//! and the `GET /rooms…` routes of `src/http/rest.rs` use to reach the hub.

use std::collections::HashMap;
use std::thread;

use crossbeam_channel::{bounded, Receiver, Sender};

/// What the owner is asked, each with the sender its answer goes to.
enum Command {
    /// Append `text` to `room`; answers the message's id.
    Publish {
        room: String,
        text: String,
        reply: Sender<u64>,
    },
    /// A room's messages, if the room exists.
    History {
        room: String,
        reply: Sender<Option<Vec<(u64, String)>>>,
    },
}

/// The owner has stopped: switchboard's `HubGone`.
#[derive(Debug)]
struct OwnerGone;

/// The asking side, cloned into every thread that talks to the owner.
#[derive(Clone)]
struct OwnerHandle {
    to_owner: Sender<Command>,
}

impl OwnerHandle {
    fn publish(&self, room: &str, text: String) -> Result<u64, OwnerGone> {
        let room = room.to_owned();
        self.ask(|reply| Command::Publish { room, text, reply })
    }

    fn history(&self, room: &str) -> Result<Option<Vec<(u64, String)>>, OwnerGone> {
        let room = room.to_owned();
        self.ask(|reply| Command::History { room, reply })
    }

    /// The whole pattern: a one-slot channel travels with the command.
    /// Either end failing means the owner has stopped.
    fn ask<T>(&self, command: impl FnOnce(Sender<T>) -> Command) -> Result<T, OwnerGone> {
        let (reply, answer) = bounded(1);
        self.to_owner.send(command(reply)).map_err(|_| OwnerGone)?;
        answer.recv().map_err(|_| OwnerGone)
    }
}

/// The one thread that owns the state.
struct Owner {
    commands: Receiver<Command>,
    next_id: u64,
    rooms: HashMap<String, Vec<(u64, String)>>,
}

impl Owner {
    /// Answers commands in arrival order until every handle is dropped.
    fn run(mut self) {
        for command in self.commands.iter() {
            match command {
                Command::Publish { room, text, reply } => {
                    self.next_id += 1;
                    self.rooms
                        .entry(room)
                        .or_default()
                        .push((self.next_id, text));
                    // `let _`: an asker that gave up is not the owner's problem.
                    let _ = reply.send(self.next_id);
                }
                Command::History { room, reply } => {
                    let _ = reply.send(self.rooms.get(&room).cloned());
                }
            }
        }
    }
}

fn main() {
    let (to_owner, commands) = bounded(16); // full: askers wait (back-pressure)
    let owner = Owner {
        commands,
        next_id: 0,
        rooms: HashMap::new(),
    };
    let owner_thread = spawn("owner", move || owner.run());
    let handle = OwnerHandle { to_owner };

    // Three handlers publish at once; the owner hands out ids one at a time.
    let handlers: Vec<_> = ["ci", "cron", "pager"]
        .into_iter()
        .map(|from| {
            let handle = handle.clone();
            spawn(&format!("http {from}"), move || {
                for n in 1..=3 {
                    let id = handle.publish("lobby", format!("{from} {n}"));
                    println!("{from} {n}: id {}", id.expect("the owner runs"));
                }
            })
        })
        .collect();
    for handler in handlers {
        handler.join().expect("a handler finishes");
    }

    // An asker that sends its command but does not read yet: the answer waits
    // in the slot, and the owner moves on. With `bounded(0)` the owner would
    // stop here until this asker read, and every other asker behind it.
    let (reply, slow_answer) = bounded(1);
    let room = "lobby".to_owned();
    let command = Command::History { room, reply };
    handle.to_owner.send(command).expect("the owner runs");
    let id = handle.publish("lobby", "after the slow asker".into());
    println!("the next asker got id {}", id.expect("the owner runs"));
    let snapshot = slow_answer.recv().expect("the answer sits in its slot");
    let count = snapshot.map_or(0, |messages| messages.len());
    println!("the slow asker reads at last: {count} messages, as they were when it asked");

    let lobby = handle.history("lobby").expect("the owner runs");
    let count = lobby.map_or(0, |messages| messages.len());
    let nowhere = handle.history("nowhere").expect("the owner runs");
    println!("lobby holds {count} messages; a room never used: {nowhere:?}");

    drop(handle); // the last sender: the owner's loop ends
    owner_thread
        .join()
        .expect("the owner ends once nobody can ask");
    println!("every handle dropped; the owner ended");
}

/// A named thread, as every switchboard thread is.
fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> thread::JoinHandle<()> {
    let builder = thread::Builder::new().name(name.to_owned());
    builder.spawn(body).expect("a thread starts")
}
