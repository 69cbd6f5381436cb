//! Rooms whose history lives in Redis, on nodes with a real `redis-server`:
//! `GET /rooms` and `GET /rooms/{room}` list a room that has history and no
//! member (with its newest id) from any node, and its history expires
//! `--room-expiry` after its last member left, never while it has one.

mod common;
mod http_support;

use std::thread;
use std::time::{Duration, Instant};

use common::redis_support::RedisServer;
use common::{secs, TestServer};
use http_support::{get, post_json};
use serde_json::{json, Value};

/// A node on `redis`, once it has reached it.
fn node(redis: &RedisServer, expiry: Duration) -> TestServer {
    let server = TestServer::start_with(|c| {
        c.redis = Some(redis.url());
        c.room_expiry = expiry;
    });
    wait_until("the node reaches redis", || {
        get(server.http, "/healthz").status == 200
    });
    server
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn publish(server: &TestServer, room: &str, text: &str) -> u64 {
    let resp = post_json(
        server.http,
        &format!("/rooms/{room}/messages"),
        &json!({ "text": text }),
    );
    assert_eq!(resp.status, 202, "{resp:?}");
    resp.json()["id"].as_u64().expect("an id")
}

fn room_names(server: &TestServer) -> Vec<String> {
    let rooms = get(server.http, "/rooms").json();
    rooms
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| r["name"].as_str().expect("a name").to_owned())
        .collect()
}

#[test]
fn a_room_with_history_only_is_listed_and_described_from_every_node() {
    let redis = RedisServer::start();
    let a = node(&redis, Duration::ZERO);
    let b = node(&redis, Duration::ZERO);
    let first = publish(&a, "log", "one");
    let last = publish(&a, "log", "two");
    assert!(last > first);

    for server in [&a, &b] {
        assert_eq!(
            get(server.http, "/rooms").json(),
            json!([{"name": "log", "members": 0, "last_id": last}])
        );
        let detail = get(server.http, "/rooms/log");
        assert_eq!(detail.status, 200, "{detail:?}");
        assert_eq!(
            detail.json(),
            json!({"name": "log", "members": [], "last_id": last})
        );
        let after_last = get(server.http, &format!("/rooms/log/messages?since={last}"));
        assert_eq!(after_last.status, 200, "an empty page, the room exists");
        assert_eq!(after_last.json(), json!([]));
        assert_eq!(get(server.http, "/rooms/nowhere").status, 404);
        assert_eq!(get(server.http, "/rooms/nowhere/messages").status, 404);
    }
}

#[test]
fn a_rooms_history_expires_after_its_last_member_left_and_not_while_it_has_one() {
    const EXPIRY: Duration = Duration::from_millis(400);
    let redis = RedisServer::start();
    let server = node(&redis, EXPIRY);
    let mut alice = server.client("room=kept&name=alice");
    let _: Value = alice.say("kept", "stays while alice is here");
    let published = Instant::now();
    publish(&server, "gone", "nobody is in this room");

    wait_until("#gone expires", || {
        !room_names(&server).contains(&"gone".to_owned())
    });
    assert!(
        published.elapsed() >= EXPIRY,
        "forgotten after {:?}, before its expiry",
        published.elapsed()
    );
    assert_eq!(get(server.http, "/rooms/gone").status, 404);
    assert_eq!(get(server.http, "/rooms/gone/messages").status, 404);
    // Alice's room is older than the expiry and stays, history and all.
    assert!(room_names(&server).contains(&"kept".to_owned()));
    let kept = get(server.http, "/rooms/kept/messages").json();
    assert_eq!(
        kept.as_array().map(Vec::len),
        Some(2),
        "joined and the message: {kept}"
    );

    alice.send_json(json!({"type": "leave", "room": "kept"}));
    alice.wait_for(|e| e["type"] == "left", secs(5));
    let left = Instant::now();
    wait_until("#kept expires once empty", || {
        !room_names(&server).contains(&"kept".to_owned())
    });
    assert!(
        left.elapsed() >= EXPIRY,
        "forgotten after {:?}",
        left.elapsed()
    );
}
