//! Lesson 1: switchboard's own hub, with channels only and no sockets.
//!
//! Lesson 0's Go hub, grown up: the same one thread that owns every client,
//! reached through one `Command` channel, with rooms and event ids. Two
//! subscribers join `#lobby`: one reads its queue, one never does. The hub
//! `try_send`s every event; when the idle subscriber's small queue is full,
//! the hub drops it at once and keeps serving the other. Nobody waits for
//! anybody. Whoever reads a queue tells the hub what it took (`Hangup::took`):
//! that is how the hub counts the events waiting, since one queue item can
//! carry several (a run of events published together). That count is the
//! queue's bound: the channel itself is unbounded, and allocates only as it fills.
//!
//!     cargo run --example 01_hub_in_miniature
//!
//! In switchboard: `src/hub/` (`Hub::spawn` and the loop in `mod.rs`,
//! `offer` in `fanout.rs`, `remove_client` in `members.rs`); every transport builds its subscriber the way `main`
//! does here (`src/transport/ws/`, `src/transport/sse.rs`).

use std::sync::Arc;

use crossbeam_channel::{bounded, unbounded};
use switchboard::hub::{Command, Hub, Subscriber};
use switchboard::metrics::Metrics;
use switchboard::protocol::{ClientId, Transport};
use switchboard::queue::Hangup;
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
        let (to_client, events) = unbounded();
        let hangup = Hangup::new(None, capacity);
        let subscriber = Subscriber {
            id: ClientId(n),
            name: Name::parse(name).expect("a valid name"),
            transport: Transport::Ws,
            events: to_client,
            hangup: Arc::clone(&hangup),
            access: switchboard::auth::Access::Open, // tokens off
        };
        let rooms = vec![lobby.clone()];
        hub.send(Command::Connect {
            subscriber,
            rooms,
            since: None,
        })
        .expect("the hub runs");
        queues.push((events, hangup));
    }
    let ((reader, reader_hangup), (sleeper, _)) = (&queues[0], &queues[1]);

    for n in 0..10 {
        let from = Name::parse("api").expect("a valid name");
        hub.publish(lobby.clone(), from, "api".into(), format!("message {n}"))
            .expect("the hub runs");
        // The reader drains its queue as it goes; the sleeper never does.
        while let Ok(item) = reader.try_recv() {
            reader_hangup.took(&item);
            for event in item.events() {
                println!("reader got  {}", event.json());
            }
        }
    }
    let kept: usize = sleeper.try_iter().map(|item| item.events().len()).sum();
    println!("the sleeper's queue held {kept} events; then the hub dropped it");
    println!("its queue is disconnected now: {}", sleeper.recv().is_err());
}
