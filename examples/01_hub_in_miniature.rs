//! Lesson 1: switchboard's own hub, with channels only and no sockets.
//!
//! Lesson 0's Go hub, grown up: the same one thread that owns every client,
//! reached through one `Command` channel, with rooms and event ids. Two
//! subscribers join `#lobby`: one reads its queue, one never does. The hub
//! offers every event; when the idle subscriber's small queue is full, the
//! hub drops it at once and keeps serving the other. Nobody waits for
//! anybody. Each queue is made by `queue::bounded(events, ...)`: the hub's
//! end refuses what would pass the bound, and the reader's end counts out
//! what it takes, since one queue item can carry several events (a run
//! published together). That count is the bound: the channel under it
//! allocates only as it fills.
//!
//!     cargo run --example 01_hub_in_miniature
//!
//! In switchboard: `src/queue/` (the queue, its bound, and who is dropped);
//! `src/hub/` (`Hub::spawn` and the loop in `mod.rs`, fan-out in
//! `fanout.rs`, `remove_client` in `members.rs`); every transport builds its
//! subscriber the way `main` does here (`src/transport/ws/`,
//! `src/transport/sse.rs`).

use std::sync::Arc;

use crossbeam_channel::bounded;
use switchboard::hub::{Command, Hub, Subscriber};
use switchboard::metrics::Metrics;
use switchboard::protocol::{ClientId, Transport};
use switchboard::queue::{self, OnSlow};
use switchboard::room::{Name, RoomName};
use switchboard::rooms::Retention;

fn main() {
    let (_stop, shutdown) = bounded::<()>(0); // dropping `_stop` would stop the hub
    let history = Retention {
        history: 100, // events kept per room
        ..Retention::default()
    };
    let (hub, _thread) =
        Hub::spawn(history, 64, Arc::new(Metrics::new()), shutdown).expect("hub starts");
    let lobby = RoomName::parse("lobby").expect("a valid room");

    let mut queues = Vec::new();
    for (n, name, capacity) in [(1, "reader", 64), (2, "sleeper", 4)] {
        // No socket to shut: a dropped subscriber finds its queue closed.
        let (queue, inbox) = queue::bounded(capacity, OnSlow::Nothing);
        let subscriber = Subscriber {
            id: ClientId(n),
            name: Name::parse(name).expect("a valid name"),
            transport: Transport::Ws,
            queue,
            access: switchboard::auth::Access::Open, // tokens off
        };
        let rooms = vec![lobby.clone()];
        hub.send(Command::Connect {
            subscriber,
            rooms,
            since: None,
        })
        .expect("the hub runs");
        queues.push(inbox);
    }
    let (reader, sleeper) = (&queues[0], &queues[1]);

    for n in 0..10 {
        let from = Name::parse("api").expect("a valid name");
        hub.publish(lobby.clone(), from, "api".into(), format!("message {n}"))
            .expect("the hub runs");
        // The reader drains its queue as it goes; the sleeper never does.
        while let Ok(item) = reader.try_recv() {
            for event in item.events() {
                println!("reader got  {}", event.json());
            }
        }
    }
    // `iter` ends once the hub has let go of the queue.
    let kept: usize = sleeper.iter().map(|item| item.events().len()).sum();
    println!("the sleeper's queue held {kept} events; then the hub dropped it");
    println!("dropped as too slow: {}", sleeper.is_too_slow());
}
