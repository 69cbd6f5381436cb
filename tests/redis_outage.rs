//! Redis down and back, under traffic, with real nodes and a real
//! `redis-server` killed with SIGKILL: nobody is disconnected, publishes are
//! refused as `unavailable` while it is down, `/healthz` says so, and once it
//! is back every member gets what it missed or a `history_lost` error naming
//! the room and the last id it got. Never a silent gap.

mod common;
mod http_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::redis_support::RedisServer;
use common::{secs, Client, Got, TestServer};
use http_support::{get, parse_prometheus, post_json, sample};
use serde_json::{json, Value};

fn node(redis: &RedisServer, name: &str) -> TestServer {
    let server = TestServer::start_with(|config| {
        config.redis = Some(redis.url());
        config.node_name = Some(name.into());
        config.send_buffer = 8192;
        config.rate_limit = None;
    });
    wait_healthy(&server, 200);
    server
}

fn wait_healthy(server: &TestServer, status: u16) {
    let deadline = Instant::now() + secs(15);
    loop {
        let health = get(server.http, "/healthz");
        if health.status == status {
            if status == 503 {
                assert_eq!(health.body.trim(), "redis unavailable");
            }
            return;
        }
        assert!(Instant::now() < deadline, "healthz stayed {health:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A publisher's answers: (status, id or 0, text), in order.
type Answers = Vec<(u16, u64, String)>;

/// A REST publisher into `room` on `http`, until stopped: every answer,
/// (status, id or 0), in order.
struct Publisher {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Answers>,
}

impl Publisher {
    fn start(server: &TestServer, room: &'static str) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let http = server.http;
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut answers = Vec::new();
            let deadline = Instant::now() + secs(60);
            let mut n = 0;
            while !stopped.load(Ordering::Acquire) && Instant::now() < deadline {
                let text = format!("p{n}");
                n += 1;
                let path = format!("/rooms/{room}/messages");
                let resp = post_json(http, &path, &json!({"text": text}));
                let id = match resp.status {
                    202 => resp.json()["id"].as_u64().expect("an id"),
                    503 => {
                        resp.assert_error(503, "unavailable");
                        thread::sleep(Duration::from_millis(5)); // not a busy loop while down
                        0
                    }
                    other => panic!("publish answered {other}: {resp:?}"),
                };
                answers.push((resp.status, id, text));
            }
            answers
        });
        Publisher { stop, thread }
    }

    fn accepted(answers: &Answers) -> Vec<(u64, String)> {
        answers
            .iter()
            .filter(|(status, ..)| *status == 202)
            .map(|(_, id, text)| (*id, text.clone()))
            .collect()
    }

    fn finish(self) -> Answers {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("publisher")
    }
}

/// Every event `client` got until `until` says stop, with a deadline; panics
/// if the connection ended.
fn read_until(client: &mut Client, who: &str, until: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + secs(30);
    while !until(&client.seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next(left) {
            Got::Text(text) => client.seen.push(serde_json::from_str(&text).expect("JSON")),
            other => panic!("{who}: {other:?} after {} events", client.seen.len()),
        }
    }
}

/// The messages of `seen`, (id, text), in order.
fn messages(seen: &[Value]) -> Vec<(u64, String)> {
    seen.iter()
        .filter(|e| e["type"] == "message")
        .map(|e| {
            (
                e["id"].as_u64().unwrap(),
                e["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn has_text(seen: &[Value], text: &str) -> bool {
    seen.iter().any(|e| e["text"] == text)
}

fn redis_metric(server: &TestServer, name: &str) -> f64 {
    let text = get(server.http, "/metrics").body;
    sample(&parse_prometheus(&text), name, &[]).unwrap_or(-1.0)
}

/// Kills Redis mid-traffic, checks the outage, restarts it; returns the
/// members, the publisher's answers and the last id each member had.
fn outage(redis: &mut RedisServer) -> (Vec<Client>, Answers, Vec<TestServer>) {
    let (a, b) = (node(redis, "a"), node(redis, "b"));
    let mut bob = b.client("room=lobby&name=bob");
    // Its own `joined` first: a joiner's seat takes what follows it.
    read_until(&mut bob, "bob", |seen| {
        seen.iter().any(|e| e["type"] == "joined")
    });
    let mut alice = a.client("room=lobby&name=alice");
    read_until(&mut bob, "bob", |seen| {
        seen.iter()
            .any(|e| e["type"] == "joined" && e["name"] == "alice")
    });
    let publisher = Publisher::start(&a, "lobby");
    read_until(&mut bob, "bob", |seen| has_text(seen, "p50"));

    redis.kill();
    wait_healthy(&a, 503);
    wait_healthy(&b, 503);
    assert_eq!(redis_metric(&a, "switchboard_redis_up"), 0.0);
    // Publishing is refused, on every transport, and said so.
    let resp = post_json(
        b.http,
        "/rooms/lobby/messages",
        &json!({"text": "while down"}),
    );
    resp.assert_error(503, "unavailable");
    alice.send_json(json!({"type": "message", "room": "lobby", "text": "ws while down"}));
    read_until(&mut alice, "alice", |seen| {
        seen.iter()
            .any(|e| e["type"] == "error" && e["code"] == "unavailable")
    });

    redis.restart();
    wait_healthy(&a, 200);
    wait_healthy(&b, 200);
    assert!(redis_metric(&a, "switchboard_redis_reconnects_total") >= 1.0);
    // Traffic goes on after it is back; then the publisher stops.
    let mark = Instant::now();
    loop {
        let resp = post_json(a.http, "/rooms/lobby/messages", &json!({"text": "after"}));
        if resp.status == 202 {
            break;
        }
        assert!(mark.elapsed() < secs(10), "{resp:?}");
    }
    let answers = publisher.finish();
    let last = Publisher::accepted(&answers)
        .last()
        .expect("accepted")
        .1
        .clone();
    for (who, client) in [("alice", &mut alice), ("bob", &mut bob)] {
        read_until(client, who, |seen| {
            has_text(seen, "after") && has_text(seen, &last)
        });
    }
    assert!(!has_text(&bob.seen, "while down") && !has_text(&bob.seen, "ws while down"));
    (vec![alice, bob], answers, vec![a, b])
}

#[test]
fn redis_killed_mid_traffic_and_back_empty_every_member_is_told_history_lost() {
    let mut redis = RedisServer::start();
    let (members, answers, _nodes) = outage(&mut redis);
    let accepted = Publisher::accepted(&answers);
    for (member, who) in members.iter().zip(["alice", "bob"]) {
        let seen = &member.seen;
        let lost = seen
            .iter()
            .position(|e| e["type"] == "error" && e["code"] == "history_lost")
            .unwrap_or_else(|| panic!("{who}: no history_lost in {seen:?}"));
        let last_id = seen[..lost]
            .iter()
            .filter_map(|e| e["id"].as_u64())
            .max()
            .expect("events before the outage");
        let said = seen[lost]["message"].as_str().expect("a message");
        assert!(
            said.contains("#lobby") && said.contains(&format!("after id {last_id}")),
            "{who}: names the room and the last id it got ({last_id}): {said}"
        );
        let once = seen.iter().filter(|e| e["code"] == "history_lost").count();
        assert_eq!(once, 1, "{who}: once per room");
        // Everything accepted before the outage arrived, in order; ids go on
        // increasing after it (the counter was raised, not restarted).
        let got = messages(seen);
        for pair in got.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{who}: {pair:?}");
        }
        for (id, text) in accepted.iter().filter(|(id, _)| *id <= last_id) {
            assert!(
                got.contains(&(*id, text.clone())),
                "{who}: {text} ({id}) missing"
            );
        }
    }
}

#[test]
fn redis_killed_mid_traffic_and_back_with_its_data_every_member_gets_every_event_once() {
    let mut redis = RedisServer::persistent();
    let (members, answers, _nodes) = outage(&mut redis);
    let accepted = Publisher::accepted(&answers);
    for (member, who) in members.iter().zip(["alice", "bob"]) {
        let seen = &member.seen;
        assert!(
            !seen.iter().any(|e| e["code"] == "history_lost"),
            "{who}: nothing was lost: {seen:?}"
        );
        let got: Vec<(u64, String)> = messages(seen)
            .into_iter()
            .filter(|(_, t)| t.starts_with('p'))
            .collect();
        assert_eq!(
            got, accepted,
            "{who}: every accepted message once, in order"
        );
    }
}

#[test]
fn a_node_that_lost_its_subscription_gets_what_it_missed_from_history() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut bob = b.client("room=lobby&name=bob");
    // Its own `joined` first: a joiner's seat takes what follows it.
    read_until(&mut bob, "bob", |seen| {
        seen.iter().any(|e| e["type"] == "joined")
    });
    let publisher = Publisher::start(&a, "lobby");
    read_until(&mut bob, "bob", |seen| has_text(seen, "p30"));
    // Node B's subscription only: node A goes on publishing meanwhile.
    let clients = redis.command("CLIENT LIST");
    let line = clients
        .lines()
        .find(|l| l.contains("name=switchboard-sub:b "))
        .unwrap_or_else(|| panic!("node b's subscription in {clients}"));
    let id = line
        .split(' ')
        .find_map(|f| f.strip_prefix("id="))
        .expect("an id");
    assert!(redis
        .command(&format!("CLIENT KILL ID {id}"))
        .starts_with(":1"));
    let reconnected = Instant::now();
    while redis_metric(&b, "switchboard_redis_reconnects_total") < 1.0 {
        assert!(reconnected.elapsed() < secs(10), "node b reconnects");
        thread::sleep(Duration::from_millis(10));
    }
    read_until(&mut bob, "bob", |seen| {
        let last = messages(seen).last().map_or(0, |(id, _)| *id);
        last > 0 && messages(seen).len() > 60
    });
    let answers = publisher.finish();
    let accepted = Publisher::accepted(&answers);
    let last = accepted.last().expect("accepted").1.clone();
    read_until(&mut bob, "bob", |seen| has_text(seen, &last));
    assert!(
        !bob.seen.iter().any(|e| e["type"] == "error"),
        "{:?}",
        bob.seen
    );
    assert_eq!(
        messages(&bob.seen),
        accepted,
        "every message once, in order"
    );
}
