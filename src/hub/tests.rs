//! The hub's own unit tests: rounds, runs, the queue bound and lagging
//! members, driven through `HubHandle` as other threads drive it.

use crossbeam_channel::Sender;

use super::*;

use crate::protocol::{Body, Transport};
use crate::queue::{self, Inbox, OnSlow, Outbound};

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
fn subscribe(hub: &HubHandle, n: u64, room: &RoomName, send_buffer: usize) -> Inbox {
    let (queue, inbox) = queue::bounded(send_buffer, OnSlow::Nothing);
    let subscriber = Subscriber {
        id: ClientId(n),
        name: Name::guest(n),
        transport: Transport::Ws,
        queue,
        access: crate::auth::Access::Open,
    };
    let rooms = vec![room.clone()];
    let connect = Command::Connect {
        subscriber,
        rooms,
        since: None,
    };
    hub.send(connect).expect("hub runs");
    inbox
}

/// Everything waiting in `inbox` now.
fn drain(inbox: &Inbox) -> Vec<Outbound> {
    std::iter::from_fn(|| inbox.try_recv().ok()).collect()
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

fn publish(hub: &HubHandle, room: &RoomName, text: String, reply: &Sender<Result<u64, Refused>>) {
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
    let stalled = subscribe(&hub, 1, &room, SEND_BUFFER);
    // Room for everything: it takes nothing until the end.
    let healthy = subscribe(&hub, 2, &room, 2 * TOTAL);

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
        stalled.is_too_slow()
    });
    let waiting = stalled.queued();
    assert!(waiting <= SEND_BUFFER, "{waiting} events waited");

    drop(stop);
    thread.join().expect("hub ends");
    let items = drain(&healthy);
    assert_eq!(healthy.queued(), 0);
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
    let slow = subscribe(&hub, 1, &room, SEND_BUFFER);
    let gone = subscribe(&hub, 2, &room, SEND_BUFFER);
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
    drain(&slow);
    assert_eq!(hub.members_lagging(), 1);
    // ...the other leaves with its queue still full: gone, so no longer lagging.
    hub.send(Command::Disconnect { id: ClientId(2) })
        .expect("hub runs");
    drop(gone);
    wait_until("the hub let go of the member that left", || {
        hub.members_lagging() == 0
    });
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
    for (n, queue) in (1..=JOINERS).zip(queues) {
        let joined: Vec<u64> = drain(&queue)
            .iter()
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
