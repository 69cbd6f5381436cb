//! Issue 17, finding 8: ceilings on rooms and on history, on a real server.
//! Rooms past `--max-rooms` are refused (REST `503`, an `unavailable` error
//! event on a connection that lives on); all history stays within
//! `--max-history-bytes`, the hub's oldest events going first; a room without
//! members is forgotten `--room-expiry` after its last use.

mod common;
mod http_support;

use std::time::{Duration, Instant};

use common::{secs, Client, TestServer};
use http_support::{get, parse_prometheus, post_json, sample, Resp, Sse};
use serde_json::{json, Value};

fn publish(server: &TestServer, room: &str, text: &str) -> Resp {
    let path = format!("/rooms/{room}/messages");
    post_json(server.http, &path, &json!({"text": text, "from": "test"}))
}

/// Publishes and returns the new event's id.
fn published_id(server: &TestServer, room: &str, text: &str) -> u64 {
    let resp = publish(server, room, text);
    assert_eq!(resp.status, 202, "publish to #{room}: {resp:?}");
    resp.json()["id"].as_u64().expect("an id")
}

fn metric(server: &TestServer, name: &str) -> f64 {
    let samples = parse_prometheus(&get(server.http, "/metrics").body);
    sample(&samples, name, &[]).unwrap_or_else(|| panic!("no {name} in /metrics"))
}

fn room_names(server: &TestServer) -> Vec<String> {
    let rooms = get(server.http, "/rooms").json();
    let rooms = rooms.as_array().expect("GET /rooms is a list");
    rooms
        .iter()
        .map(|r| r["name"].as_str().expect("a name").to_owned())
        .collect()
}

/// The ids of a room's kept history, oldest first (REST `since=0`); none
/// if the room is gone.
fn history_ids(server: &TestServer, room: &str) -> Vec<u64> {
    let resp = get(
        server.http,
        &format!("/rooms/{room}/messages?since=0&limit=1000"),
    );
    if resp.status == 404 {
        return Vec::new(); // no members and nothing kept: the room is gone
    }
    assert_eq!(resp.status, 200, "history of #{room}: {:?}", resp.status);
    let body = match resp.header("Transfer-Encoding") {
        Some("chunked") => unchunk(&resp.body),
        _ => resp.body.clone(),
    };
    let events: Value = serde_json::from_str(&body).expect("history is JSON");
    let events = events.as_array().expect("a list of events");
    events
        .iter()
        .map(|e| e["id"].as_u64().expect("an id"))
        .collect()
}

/// The body of a chunked response (tiny_http chunks large bodies).
fn unchunk(mut chunked: &str) -> String {
    let mut body = String::new();
    loop {
        let (size, rest) = chunked.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return body;
        }
        body.push_str(&rest[..size]);
        chunked = &rest[size + 2..];
    }
}

/// Polls `done` (an HTTP endpoint, so with a pause) until it holds; panics
/// after `timeout`.
fn wait_until(what: &str, timeout: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20)); // polling an endpoint, with a deadline
    }
}

#[test]
fn rooms_past_the_ceiling_are_refused_over_rest_with_503_and_existing_rooms_still_work() {
    if common::memory_engine_only(
        "rooms_past_the_ceiling_are_refused_over_rest_with_503_and_existing_rooms_still_work",
        "--max-rooms counts rooms with members on this node; a room with history only lives in Redis and is not refused",
    ) {
        return;
    }
    let server = TestServer::start_with(|c| c.max_rooms = 3);
    for room in ["a", "b", "c"] {
        published_id(&server, room, "hi");
    }
    let refused = publish(&server, "d", "one room too many");
    refused.assert_error(503, "unavailable");
    let message = refused.json()["message"].clone();
    assert!(
        message
            .as_str()
            .is_some_and(|m| m.contains("#d") && m.contains("3 rooms")),
        "says which room and the limit: {message}"
    );
    published_id(&server, "b", "rooms that exist keep working");
    assert_eq!(room_names(&server), ["a", "b", "c"]);
    assert_eq!(get(server.http, "/rooms/d/messages").status, 404);
    assert_eq!(metric(&server, "switchboard_rooms_refused_total"), 1.0);
    wait_until("the rooms gauge says 3", secs(5), || {
        metric(&server, "switchboard_rooms") == 3.0
    });
}

#[test]
fn joining_a_room_past_the_ceiling_gets_an_unavailable_error_and_the_connection_lives() {
    if common::memory_engine_only(
        "joining_a_room_past_the_ceiling_gets_an_unavailable_error_and_the_connection_lives",
        "--max-rooms counts rooms with members on this node; a room with history only lives in Redis and is not refused",
    ) {
        return;
    }
    let server = TestServer::start_with(|c| c.max_rooms = 2);
    let mut alice = server.client("room=a&name=alice");
    published_id(&server, "b", "takes the last place");

    alice.send_json(json!({"type": "join", "room": "c"}));
    let error = alice.wait_for(|e| e["type"] == "error", secs(5));
    assert_eq!(error["code"], "unavailable", "{error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("#c") && m.contains("2 rooms")),
        "{error}"
    );
    alice.send_text("/join d");
    let error = alice.wait_for(|e| e["type"] == "error", secs(5));
    assert_eq!(error["code"], "unavailable", "{error}");
    alice.say("a", "still connected");

    // Asked for at the handshake: left out of the welcome, then the error.
    let mut bob = Client::connect(&server.ws_url("/ws?room=a&room=z&name=bob"));
    let welcome = bob.wait_for(|e| e["type"] == "welcome", secs(5));
    assert_eq!(welcome["rooms"], json!(["a"]));
    let error = bob.wait_for(|e| e["type"] == "error", secs(5));
    assert_eq!(error["code"], "unavailable", "{error}");
    bob.say("a", "bob too");
    alice.wait_for(|e| e["text"] == "bob too", secs(5));

    // The same over SSE: the stream stays open in the rooms it could join.
    let mut sse = Sse::connect(server.http, "/events?room=a&room=y&name=carol", &[]);
    let error = sse.wait_for_data(|e| e["type"] == "error", secs(5));
    assert_eq!(error["code"], "unavailable", "{error}");
    alice.say("a", "to carol");
    sse.wait_for_data(|e| e["text"] == "to carol", secs(5));

    assert_eq!(room_names(&server), ["a", "b"]);
    assert_eq!(metric(&server, "switchboard_rooms_refused_total"), 4.0);
}

#[test]
fn history_memory_stays_under_the_budget_while_large_messages_pour_in() {
    if common::memory_engine_only(
        "history_memory_stays_under_the_budget_while_large_messages_pour_in",
        "the history budget (--max-history-bytes) counts the node's memory; on Redis history is bounded by --history per room",
    ) {
        return;
    }
    const BUDGET: usize = 1 << 20;
    let server = TestServer::start_with(|c| c.max_history_bytes = BUDGET);
    let big = "x".repeat(60_000);
    // The finding: 4 rooms × 1000 × 60 KB held 246 MB. Here 4 MB of text.
    for n in 0..64 {
        published_id(&server, &format!("r{}", n % 4), &big);
        let held = metric(&server, "switchboard_history_bytes");
        assert!(held <= BUDGET as f64, "{held} bytes held, over {BUDGET}");
    }
    wait_until("history is counted", secs(5), || {
        metric(&server, "switchboard_history_bytes") > 0.0
    });
    let evicted = metric(&server, "switchboard_history_evicted_total");
    let kept: usize = (0..4)
        .map(|n| history_ids(&server, &format!("r{n}")).len())
        .sum();
    assert!(kept >= 2, "history still replays something: {kept} kept");
    assert_eq!(kept as f64 + evicted, 64.0, "each event kept or evicted");
    wait_until("the events gauge agrees", secs(5), || {
        metric(&server, "switchboard_history_events") == kept as f64
    });
}

#[test]
fn one_rooms_history_cannot_exceed_the_budget_alone() {
    if common::memory_engine_only(
        "one_rooms_history_cannot_exceed_the_budget_alone",
        "the history budget (--max-history-bytes) counts the node's memory; on Redis history is bounded by --history per room",
    ) {
        return;
    }
    const BUDGET: usize = 512 * 1024;
    let server = TestServer::start_with(|c| c.max_history_bytes = BUDGET);
    let big = "z".repeat(50_000);
    let mut last = 0;
    for _ in 0..40 {
        last = published_id(&server, "solo", &big);
    }
    let held = metric(&server, "switchboard_history_bytes");
    assert!(held > 0.0 && held <= BUDGET as f64, "{held} bytes held");
    let kept = history_ids(&server, "solo");
    assert!(!kept.is_empty() && kept.len() < 40, "{} kept", kept.len());
    assert_eq!(kept.last(), Some(&last), "the newest stays");
    let text_kept = kept.len() * big.len();
    assert!(text_kept <= BUDGET, "{text_kept} bytes of text kept");
}

#[test]
fn the_hubs_oldest_events_go_first_and_replay_returns_the_newest_in_order() {
    if common::memory_engine_only(
        "the_hubs_oldest_events_go_first_and_replay_returns_the_newest_in_order",
        "the history budget (--max-history-bytes) counts the node's memory; on Redis history is bounded by --history per room",
    ) {
        return;
    }
    let server = TestServer::start_with(|c| c.max_history_bytes = 256 * 1024);
    let text = "y".repeat(4000);
    let mut published = Vec::new();
    for n in 0..60 {
        let room = if n % 3 == 0 { "a" } else { "b" };
        published.push(published_id(&server, room, &format!("{n} {text}")));
    }
    let (in_a, in_b) = (history_ids(&server, "a"), history_ids(&server, "b"));
    for kept in [&in_a, &in_b] {
        assert!(
            kept.windows(2).all(|w| w[0] < w[1]),
            "in id order: {kept:?}"
        );
    }
    let mut kept: Vec<u64> = in_a.iter().chain(&in_b).copied().collect();
    kept.sort_unstable();
    assert!(
        (5..60).contains(&kept.len()),
        "some kept, some dropped: {kept:?}"
    );
    let newest = &published[published.len() - kept.len()..];
    assert_eq!(kept, newest, "the kept events are the newest of the hub");

    // Replay over WebSocket, across both rooms, in id order.
    let mut carol = Client::connect(&server.ws_url("/ws?room=a&room=b&since=0&name=carol"));
    let mut replayed = Vec::new();
    while replayed.len() < kept.len() {
        let event = carol.wait_for(|e| e["type"] == "message", secs(5));
        replayed.push(event["id"].as_u64().expect("an id"));
    }
    assert_eq!(replayed, kept);
}

#[test]
fn an_empty_rooms_history_expires_after_the_configured_time_and_a_room_with_members_does_not() {
    if common::memory_engine_only(
        "an_empty_rooms_history_expires_after_the_configured_time_and_a_room_with_members_does_not",
        "--max-rooms and switchboard_rooms_expired_total count this node's rooms; expiry on Redis is tests/redis_rooms.rs",
    ) {
        return;
    }
    const EXPIRY: Duration = Duration::from_millis(400);
    let server = TestServer::start_with(|c| {
        c.room_expiry = EXPIRY;
        c.max_rooms = 2;
    });
    let mut alice = server.client("room=kept&name=alice");
    alice.say("kept", "stays while alice is here");
    let published = Instant::now();
    published_id(&server, "gone", "nobody is in this room");
    publish(&server, "third", "no place yet").assert_error(503, "unavailable");

    wait_until("#gone expires", secs(10), || {
        !room_names(&server).contains(&"gone".to_owned())
    });
    assert!(
        published.elapsed() >= EXPIRY,
        "forgotten after {:?}, before its expiry",
        published.elapsed()
    );
    assert_eq!(get(server.http, "/rooms/gone/messages").status, 404);
    assert_eq!(metric(&server, "switchboard_rooms_expired_total"), 1.0);
    // Alice's room is older than the expiry, and stays, history and all.
    assert!(room_names(&server).contains(&"kept".to_owned()));
    assert_eq!(
        history_ids(&server, "kept").len(),
        2,
        "joined and the message"
    );
    // The expired room's place is free again.
    published_id(&server, "third", "now there is a place");

    alice.send_json(json!({"type": "leave", "room": "kept"}));
    alice.wait_for(|e| e["type"] == "left", secs(5));
    let left = Instant::now();
    wait_until("#kept expires once empty", secs(10), || {
        !room_names(&server).contains(&"kept".to_owned())
    });
    assert!(
        left.elapsed() >= EXPIRY,
        "forgotten after {:?}",
        left.elapsed()
    );
}
