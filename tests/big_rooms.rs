//! Big rooms (issue 19 point 3, SPEC "Big rooms"): past `--join-notices-max`
//! members a room sends no `joined`/`left` notices and keeps none in its
//! history, while `who` and the welcome stay exact; a room that shrinks back
//! under the limit sends them again, and `0` turns them off everywhere.

mod common;

use common::{raw_http, secs, Client, TestServer};
use serde_json::{json, Value};

fn joined(name: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["type"] == "joined" && e["name"] == name
}

fn left(name: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["type"] == "left" && e["name"] == name
}

/// Sends `who` and returns the names in the presence list it gets back.
fn who(client: &mut Client, room: &str) -> Vec<String> {
    client.send_json(json!({"type": "who", "room": room}));
    let presence = client.wait_for(|e| e["type"] == "presence", secs(5));
    let mut names: Vec<String> = presence["members"]
        .as_array()
        .expect("a presence lists members")
        .iter()
        .map(|m| m["name"].as_str().expect("a member has a name").to_owned())
        .collect();
    names.sort();
    names
}

/// Everything `client` has seen once `marker`, its own message, is back: a
/// notice sent before it would be among what it saw.
fn seen_before(client: &mut Client, room: &str, marker: &str) -> Vec<Value> {
    client.say(room, marker);
    client.seen.clone()
}

#[test]
fn a_room_past_the_limit_sends_no_join_or_leave_notices_and_keeps_none() {
    let server = TestServer::start_with(|c| c.join_notices_max = 3);
    let mut alice = server.client("room=big&name=alice");
    let mut bob = server.client("room=big&name=bob");
    let mut carol = server.client("room=big&name=carol");
    // Three members: every join was announced.
    alice.wait_for(joined("carol"), secs(5));

    // The fourth takes the room past the limit: nobody hears of it, the
    // joiner included, but its welcome and presence are exact.
    let mut dave = Client::connect(&server.ws_url("/ws?room=big&name=dave"));
    let welcome = dave.wait_for(|e| e["type"] == "welcome", secs(5));
    assert_eq!(welcome["rooms"], json!(["big"]));
    assert_eq!(who(&mut alice, "big"), ["alice", "bob", "carol", "dave"]);
    let seen = seen_before(&mut alice, "big", "after dave");
    assert!(
        !seen.iter().any(joined("dave")),
        "alice heard dave join: {seen:?}"
    );
    let seen = seen_before(&mut dave, "big", "dave here");
    assert!(
        !seen.iter().any(joined("dave")),
        "dave heard his own join: {seen:?}"
    );

    // Leaving from four members: still past the limit, no notice.
    dave.send_json(json!({"type": "leave", "room": "big"}));
    alice.wait_for(
        |e| e["type"] == "message" && e["text"] == "dave here",
        secs(5),
    );
    let until = std::time::Instant::now() + secs(5);
    while who(&mut alice, "big").len() != 3 {
        assert!(std::time::Instant::now() < until, "dave never left");
    }
    let seen = seen_before(&mut alice, "big", "after dave left");
    assert!(
        !seen.iter().any(left("dave")),
        "alice heard dave leave: {seen:?}"
    );

    // Back at three members, the room announces again.
    carol.send_json(json!({"type": "leave", "room": "big"}));
    bob.wait_for(left("carol"), secs(5));
    let mut erin = server.client("room=big&name=erin");
    bob.wait_for(joined("erin"), secs(5));
    erin.wait_for(joined("erin"), secs(5));

    // History holds the notices that were sent and none of those that were not.
    let body = raw_http(
        server.server().http_addr,
        "GET /rooms/big/messages?limit=100 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let json_start = body.find("\r\n\r\n").expect("a response head") + 4;
    let history: Value = serde_json::from_str(&body[json_start..]).expect("JSON history");
    let kept: Vec<String> = history
        .as_array()
        .or_else(|| history["events"].as_array())
        .expect("a list of events")
        .iter()
        .filter(|e| e["type"] == "joined" || e["type"] == "left")
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap(),
                e["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        kept,
        [
            "joined alice",
            "joined bob",
            "joined carol",
            "left carol",
            "joined erin"
        ]
    );
}

#[test]
fn zero_turns_notices_off_in_every_room() {
    let server = TestServer::start_with(|c| c.join_notices_max = 0);
    let mut alice = server.client("room=quiet&name=alice");
    let mut bob = server.client("room=quiet&name=bob");
    assert_eq!(who(&mut alice, "quiet"), ["alice", "bob"]);
    bob.send_json(json!({"type": "leave", "room": "quiet"}));
    let until = std::time::Instant::now() + secs(5);
    while who(&mut alice, "quiet").len() != 1 {
        assert!(std::time::Instant::now() < until, "bob never left");
    }
    let seen = seen_before(&mut alice, "quiet", "alone");
    assert!(
        !seen
            .iter()
            .any(|e| e["type"] == "joined" || e["type"] == "left"),
        "a notice with notices off: {seen:?}"
    );
}
