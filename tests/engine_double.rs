//! A second engine, built outside the crate from the public boundary alone,
//! that answers everything `Later`: it proves the hub never assumes `Now`.
//!
//! `DeferredEngine` does what a Redis engine will do, with one thread
//! standing in for Redis: `sequence` and `history` only `try_send` the work
//! to that thread and return; the thread takes a little while over each job
//! (a few hundred microseconds, at random), gives ids from its own counter,
//! keeps its own history, and answers on a bounded channel the hub selects
//! on. The hub's own rooms then hold members only. On it, the real server
//! must still deliver every event once, in id order, to every member on
//! every transport, replay `since` with no gap and no duplicate while
//! publishing goes on, and give a REST publisher its event's id.

mod common;
mod http_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{secs, Client, Got, TestServer};
use crossbeam_channel::{bounded, Receiver, Sender};
use http_support::{get, post_json, Sse};
use serde_json::{json, Value};
use switchboard::engine::{merge, Answer, Draft, Engine, Read, Reading, Sequenced, Ticket};
use switchboard::protocol::Event;
use switchboard::room::RoomName;
use switchboard::rooms::Rooms;

/// Work handed to the engine's thread.
enum Job {
    Sequence(Ticket, Draft),
    Read(Ticket, Read),
}

/// An engine whose work happens on a thread of its own, answered later.
struct DeferredEngine {
    jobs: Sender<Job>,
    answers: Receiver<Answer>,
}

impl DeferredEngine {
    /// Starts its thread; each job takes up to `most` to do.
    fn start(most: Duration) -> DeferredEngine {
        let (jobs, work) = bounded::<Job>(65_536);
        let (to_hub, answers) = bounded(1024);
        let body = move || {
            let mut last_id = 0;
            let mut history: HashMap<RoomName, Vec<Arc<Event>>> = HashMap::new();
            let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
            // Ends when the hub drops the engine (and with it `jobs`).
            for job in work {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let nanos = (seed >> 33) % (most.as_nanos() as u64 + 1);
                thread::sleep(Duration::from_nanos(nanos)); // the round trip
                let answer = match job {
                    Job::Sequence(ticket, draft) => {
                        last_id += 1;
                        let room = draft.room.clone();
                        let event = Arc::new(draft.into_event(last_id));
                        history.entry(room).or_default().push(Arc::clone(&event));
                        Answer::Sequenced(ticket, event)
                    }
                    Job::Read(ticket, read) => {
                        let after = read.since.unwrap_or(0);
                        let kept = read.rooms.iter().filter_map(|r| history.get(r));
                        let events = kept
                            .flatten()
                            .filter(|e| e.id().is_some_and(|id| id > after))
                            .cloned()
                            .collect();
                        Answer::History(ticket, merge(events, read.since, read.limit))
                    }
                };
                if to_hub.send(answer).is_err() {
                    break; // the hub has stopped
                }
            }
        };
        thread::Builder::new()
            .name("engine".into())
            .spawn(body)
            .expect("the engine's thread starts");
        DeferredEngine { jobs, answers }
    }
}

impl Engine for DeferredEngine {
    fn sequence(&mut self, _local: &mut Rooms, ticket: Ticket, draft: Draft) -> Sequenced {
        match self.jobs.try_send(Job::Sequence(ticket, draft)) {
            Ok(()) => Sequenced::Later,
            Err(_) => Sequenced::Refused, // behind: the hub must not wait
        }
    }

    fn history(&mut self, _local: &Rooms, ticket: Ticket, read: Read) -> Reading {
        self.jobs
            .try_send(Job::Read(ticket, read))
            .expect("the queue holds all of a test's work");
        Reading::Later
    }

    fn answers(&self) -> Receiver<Answer> {
        self.answers.clone()
    }
}

fn deferred_server() -> TestServer {
    let engine = Box::new(DeferredEngine::start(Duration::from_micros(300)));
    TestServer::start_on(engine, |config| {
        config.send_buffer = 8192; // nobody here is slow: they read at the end
        config.rate_limit = None;
    })
}

/// A member's messages: (id, text), in the order they came.
type Seen = Vec<(u64, String)>;

/// Reads `client`'s events until it has seen every text in `want`; returns
/// every message it got, in order, after those it had `seen` already.
fn messages_until(client: &mut Client, mut seen: Seen, want: &[String]) -> Seen {
    let deadline = Instant::now() + secs(30);
    let missing = |seen: &Seen| want.iter().any(|w| !seen.iter().any(|(_, t)| t == w));
    while missing(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Got::Text(text) = client.next(left) else {
            let lost: Vec<&String> = want
                .iter()
                .filter(|w| !seen.iter().any(|(_, t)| t == *w))
                .collect();
            panic!("{} of {} came; missing: {lost:?}", seen.len(), want.len());
        };
        let event: Value = serde_json::from_str(&text).expect("JSON");
        assert_ne!(event["type"], "error", "{event}");
        if event["type"] == "message" {
            let id = event["id"].as_u64().expect("a message has an id");
            seen.push((id, event["text"].as_str().expect("text").to_owned()));
        }
    }
    seen
}

fn assert_each_once_in_id_order(seen: &Seen, want: &[String], who: &str) {
    for pair in seen.windows(2) {
        assert!(pair[0].0 < pair[1].0, "{who}: ids out of order: {pair:?}");
    }
    let mut texts: Vec<&String> = seen.iter().map(|(_, t)| t).collect();
    texts.sort();
    let mut expected: Vec<&String> = want.iter().collect();
    expected.sort();
    assert_eq!(texts, expected, "{who}: every message once");
}

#[test]
fn on_an_engine_that_answers_later_every_member_gets_every_event_once_in_id_order() {
    const EACH: usize = 150;
    const REST: usize = 20;
    let server = deferred_server();
    let mut early: Vec<Client> = (0..3)
        .map(|n| server.client(&format!("room=a&room=b&name=early{n}")))
        .collect();
    let mut sse = Sse::connect(server.http, "/events?room=a&room=b&name=sse", &[]);
    assert_eq!(sse.status, 200);
    // Seated before anyone publishes: it is owed every message below.
    sse.wait_seated("sse", &["a", "b"], secs(10));

    // Two WebSocket publishers, one per room, and REST into b, all at once.
    let publishers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|room| {
            let mut publisher = server.client(&format!("room={room}&name=pub-{room}"));
            thread::spawn(move || {
                for n in 0..EACH {
                    let text = format!("{room}-{n}");
                    publisher.send_json(json!({"type": "message", "room": room, "text": text}));
                }
                publisher.wait_for(|e| e["text"] == format!("{room}-{}", EACH - 1), secs(30));
            })
        })
        .collect();
    let http = server.http;
    let rest = thread::spawn(move || {
        (0..REST)
            .map(|n| {
                let text = format!("rest-{n}");
                let resp = post_json(http, "/rooms/b/messages", &json!({"text": text}));
                assert_eq!(resp.status, 202, "{resp:?}");
                let id = resp.json()["id"].as_u64().expect("an id");
                assert!(id > 0, "the engine's id reaches the publisher");
                (id, text)
            })
            .collect::<Vec<(u64, String)>>()
    });

    // A late joiner asks for what followed a message it saw, while
    // publishing goes on, and speaks at once: before its backlog is back.
    let first = early[0].wait_for(|e| e["text"] == "a-40", secs(30));
    let since = first["id"].as_u64().expect("an id");
    let mut late = server.client(&format!("room=a&room=b&name=late&since={since}"));
    late.send_json(json!({"type": "message", "room": "a", "text": "late hello"}));

    let mut want: Vec<String> = ["a", "b"]
        .iter()
        .flat_map(|room| (0..EACH).map(move |n| format!("{room}-{n}")))
        .chain((0..REST).map(|n| format!("rest-{n}")))
        .collect();
    want.push("late hello".into());
    for publisher in publishers {
        publisher.join().expect("publisher");
    }
    let rest_ids = rest.join().expect("REST publisher");

    let mut reference = None;
    for (n, client) in early.iter_mut().enumerate() {
        let mut seen: Seen = client
            .seen
            .drain(..)
            .filter(|e| e["type"] == "message")
            .map(|e| {
                (
                    e["id"].as_u64().unwrap(),
                    e["text"].as_str().unwrap().into(),
                )
            })
            .collect();
        if n == 0 {
            seen.push((since, "a-40".into()));
        }
        let seen = messages_until(client, seen, &want);
        assert_each_once_in_id_order(&seen, &want, &format!("early{n}"));
        for (id, text) in &rest_ids {
            assert!(
                seen.contains(&(*id, text.clone())),
                "REST got {id} for {text}"
            );
        }
        reference.get_or_insert(seen);
    }
    let reference = reference.expect("three early members");

    // The late joiner: exactly what followed `since`, backlog then live.
    let after: Vec<String> = reference
        .iter()
        .filter(|(id, _)| *id > since)
        .map(|(_, t)| t.clone())
        .collect();
    let seen = messages_until(&mut late, Vec::new(), &after);
    assert_each_once_in_id_order(&seen, &after, "late");
    let expected: Vec<&(u64, String)> = reference.iter().filter(|(id, _)| *id > since).collect();
    assert_eq!(
        seen.iter().collect::<Vec<_>>(),
        expected,
        "same ids, same order"
    );

    // SSE too, and REST history read through the engine.
    let mut sse_seen = Vec::new();
    while sse_seen.len() < want.len() {
        let data = sse.wait_for_data(|d| d["type"] == "message", secs(30));
        sse_seen.push((
            data["id"].as_u64().unwrap(),
            data["text"].as_str().unwrap().into(),
        ));
    }
    assert_eq!(
        sse_seen, reference,
        "SSE: the same events in the same order"
    );
    let history = get(server.http, "/rooms/a/messages?since=0&limit=1000").json();
    let texts: Vec<&Value> = history
        .as_array()
        .expect("an array")
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| &e["text"])
        .collect();
    assert_eq!(
        texts.len(),
        EACH + 1,
        "room a's messages, late hello included"
    );
}

#[test]
fn on_an_engine_that_answers_later_a_room_without_members_lives_in_the_engine() {
    let server = deferred_server();
    // Published to a room nobody is in: the hub keeps no room for it...
    let resp = post_json(
        server.http,
        "/rooms/quiet/messages",
        &json!({"text": "kept"}),
    );
    assert_eq!(resp.status, 202, "{resp:?}");
    let id = resp.json()["id"].as_u64().expect("an id");
    // (Not an empty room left behind for ever. `GET /rooms` lists the hub's
    // rooms only, for now: listing the engine's is for the Redis issue.)
    let rooms = get(server.http, "/rooms").json();
    assert_eq!(rooms, json!([]), "no members, and no history in the hub");
    // ...yet its history is read from the engine, over REST and on connect.
    let history = get(server.http, "/rooms/quiet/messages?since=0").json();
    assert_eq!(history[0]["id"], id);
    assert_eq!(history[0]["text"], "kept");
    let mut late = server.client("room=quiet&since=0");
    let replayed = late.wait_for(|e| e["type"] == "message", secs(5));
    assert_eq!(
        (replayed["id"].as_u64(), &replayed["text"]),
        (Some(id), &json!("kept"))
    );
    // Its own `joined` follows the backlog, with a later id.
    let joined = late.wait_for(|e| e["type"] == "joined", secs(5));
    assert!(joined["id"].as_u64().expect("an id") > id);
    let missing = get(server.http, "/rooms/nowhere/messages");
    assert_eq!(missing.status, 404, "{missing:?}");
}

#[test]
fn on_an_engine_that_answers_later_a_member_hears_its_own_left_and_may_come_straight_back() {
    let server = deferred_server();
    let mut alice = server.client("room=r&name=alice");
    alice.wait_for(|e| e["type"] == "joined", secs(5));
    // Back in before the engine has sequenced its `left`.
    alice.send_json(json!({"type": "leave", "room": "r"}));
    alice.send_json(json!({"type": "join", "room": "r"}));
    let left = alice.wait_for(|e| e["type"] == "left", secs(5));
    let joined = alice.wait_for(|e| e["type"] == "joined", secs(5));
    assert!(
        left["id"].as_u64() < joined["id"].as_u64(),
        "{left} then {joined}"
    );
    // One seat, not two: each message once, and presence lists it once.
    alice.say("r", "still here");
    alice.send_json(json!({"type": "who", "room": "r"}));
    let presence = alice.wait_for(|e| e["type"] == "presence", secs(5));
    assert_eq!(presence["members"].as_array().map(Vec::len), Some(1));
    let again = alice.seen.iter().filter(|e| e["text"] == "still here");
    assert_eq!(again.count(), 0, "a second copy: {:?}", alice.seen);
    // Leaving for good: its own `left`, then nothing more from the room.
    alice.send_json(json!({"type": "leave", "room": "r"}));
    alice.wait_for(|e| e["type"] == "left", secs(5));
    let resp = post_json(server.http, "/rooms/r/messages", &json!({"text": "after"}));
    assert_eq!(resp.status, 202);
    alice.send_json(json!({"type": "rooms"}));
    alice.wait_for(|e| e["type"] == "rooms", secs(5));
    assert!(
        !alice.seen.iter().any(|e| e["text"] == "after"),
        "{:?}",
        alice.seen
    );
}

#[test]
fn on_an_engine_that_answers_later_a_joiner_gets_its_own_joined_first_then_what_follows() {
    let server = deferred_server();
    let mut publisher = server.client("room=busy&name=pub");
    let flood = thread::spawn(move || {
        for n in 0..300 {
            let text = format!("m{n}");
            publisher.send_json(json!({"type": "message", "room": "busy", "text": text}));
        }
        publisher.wait_for(|e| e["text"] == "m299", secs(30));
    });
    for name in ["bob", "carol", "dave"] {
        // On connect, and by a `join` request.
        let mut joiner = server.client(&format!("room=lobby&name={name}"));
        joiner.send_json(json!({"type": "join", "room": "busy"}));
        let said = format!("{name} here");
        joiner.send_json(json!({"type": "message", "room": "busy", "text": said}));
        let mut own = None;
        loop {
            let event = joiner.event(secs(10));
            if event["room"] != "busy" {
                continue;
            }
            let id = event["id"].as_u64().expect("a room event has an id");
            match &own {
                None => {
                    assert_eq!(event["type"], "joined", "{name}'s first: {event}");
                    assert_eq!(event["name"], name, "its own");
                    own = Some(id);
                }
                Some(own) => assert!(id > *own, "{name}: {event} before its joined"),
            }
            if event["text"] == said {
                break;
            }
        }
    }
    flood.join().expect("publisher");
}
