//! Rooms over WebSocket: who gets what, notices, commands in both dialects,
//! text mode, and every error code the SPEC lists for WebSocket.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use common::{secs, Client, Got, TestServer};
use serde_json::{json, Value};

fn is_message(text: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["type"] == "message" && e["text"] == text
}

#[test]
fn members_get_each_message_and_non_members_do_not() {
    let server = TestServer::start();
    let mut alice = server.client("room=lobby&name=alice");
    let mut bob = server.client("room=lobby&name=bob");
    let mut carol = server.client("room=dev&name=carol");

    let sent = alice.say("lobby", "hello lobby");
    let got = bob.wait_for(is_message("hello lobby"), secs(5));
    assert_eq!(got, sent, "bob sees exactly what alice's own echo shows");
    assert_eq!(got["from"], "alice");
    assert_eq!(got["room"], "lobby");
    assert!(got["from_id"]
        .as_str()
        .is_some_and(|id| id.starts_with('c')));
    assert!(got["id"].as_u64().is_some() && got["ts"].as_u64().is_some());

    // carol's next message is her own, sent after alice's: nothing from lobby came first.
    carol.say("dev", "only dev");
    assert!(
        !carol.seen.iter().any(|e| e["type"] == "message"),
        "carol got a lobby message: {:?}",
        carol.seen
    );
}

#[test]
fn join_and_leave_notices_reach_the_room_and_the_member_itself() {
    let server = TestServer::start();
    let mut alice = server.client("room=lobby&name=alice");
    let welcome_joined = alice.wait_for(|e| e["type"] == "joined", secs(5));
    assert_eq!(
        welcome_joined["name"], "alice",
        "a member's own join reaches it"
    );

    let mut bob = server.client("room=lobby&name=bob");
    let bob_id = bob.wait_for(|e| e["type"] == "joined", secs(5))["from_id"].clone();
    let joined = alice.wait_for(|e| e["type"] == "joined" && e["name"] == "bob", secs(5));
    assert_eq!(joined["room"], "lobby");
    assert_eq!(joined["from_id"], bob_id);

    bob.send_json(json!({"type": "leave", "room": "lobby"}));
    let own_left = bob.wait_for(|e| e["type"] == "left", secs(5));
    assert_eq!(own_left["name"], "bob");
    let left = alice.wait_for(|e| e["type"] == "left" && e["name"] == "bob", secs(5));
    assert!(left["id"].as_u64() > joined["id"].as_u64());

    // A connection that ends leaves its rooms too.
    let mut carol = server.client("room=lobby&name=carol");
    alice.wait_for(|e| e["type"] == "joined" && e["name"] == "carol", secs(5));
    carol.ws.close(None).expect("close");
    alice.wait_for(|e| e["type"] == "left" && e["name"] == "carol", secs(5));
}

#[test]
fn one_connection_can_be_in_several_rooms() {
    let server = TestServer::start();
    let mut both = server.client("room=a&room=b&name=both");
    let mut only_a = server.client("room=a&name=only-a");
    let mut only_b = server.client("room=b&name=only-b");

    both.say("a", "to a");
    both.say("b", "to b");
    only_a.wait_for(is_message("to a"), secs(5));
    only_b.wait_for(is_message("to b"), secs(5));

    // A plain line goes to the room joined last (b), then to a new one.
    both.send_text("plain line");
    let plain = only_b.wait_for(is_message("plain line"), secs(5));
    assert_eq!(plain["room"], "b");
    both.send_text("/join c");
    both.wait_for(|e| e["type"] == "joined" && e["room"] == "c", secs(5));
    both.send_text("now in c");
    let in_c = both.wait_for(is_message("now in c"), secs(5));
    assert_eq!(in_c["room"], "c");
    only_a.say("a", "marker");
    assert!(!only_a.seen.iter().any(|e| e["text"] == "plain line"));
}

#[test]
fn a_crowd_joining_at_once_each_sees_its_own_join_and_every_later_one_once_in_order() {
    // Joins that arrive together reach the room together (one run per round
    // of the hub): each member must still get exactly the notices from its
    // own on, none from before it joined.
    const CROWD: usize = 200;
    let server = TestServer::start();
    let start = Arc::new(Barrier::new(CROWD));
    let url = server.ws_url("/ws?room=crowd");
    let crowd: Vec<(Client, String)> = (0..CROWD)
        .map(|_| {
            let (start, url) = (Arc::clone(&start), url.clone());
            thread::spawn(move || {
                start.wait();
                let mut client = Client::connect(&url);
                let welcome = client.wait_for(|e| e["type"] == "welcome", secs(20));
                let id = welcome["id"].as_str().expect("an id").to_owned();
                (client, id)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("a member connects"))
        .collect();

    // Everyone is in (a welcome comes with the join): a message now follows
    // every notice, so reading up to it reads them all.
    let mut fence = server.client("room=crowd&name=fence");
    fence.say("crowd", "fence");
    let seen: Vec<(String, Vec<(u64, String)>)> = crowd
        .into_iter()
        .map(|(mut client, id)| {
            client.wait_for(is_message("fence"), secs(30));
            let joins = client
                .seen
                .iter()
                .filter(|e| e["type"] == "joined")
                .map(|e| (e["id"].as_u64().expect("id"), e["from_id"].to_string()))
                .collect();
            (id, joins)
        })
        .collect();

    let mut every_join: Vec<(u64, String)> = seen.iter().flat_map(|(_, j)| j.clone()).collect();
    every_join.sort();
    every_join.dedup();
    assert_eq!(
        every_join.len(),
        CROWD + 1,
        "one notice per member and the fence"
    );
    for (id, joins) in &seen {
        let own = joins.first().expect("its own join first");
        assert_eq!(own.1, format!("{id:?}"), "{id}: its own join comes first");
        let expected: Vec<(u64, String)> = every_join
            .iter()
            .filter(|j| j.0 >= own.0)
            .cloned()
            .collect();
        assert_eq!(joins, &expected, "{id}: every later join, once, in order");
    }
}

#[test]
fn slash_commands_work_like_their_json_forms() {
    let server = TestServer::start();
    let mut alice = server.client("name=alice");
    let _bob = server.client("name=bob");

    alice.send_text("/nick alicia");
    let renamed = alice.wait_for(|e| e["type"] == "welcome", secs(5));
    assert_eq!(renamed["name"], "alicia");
    assert_eq!(renamed["rooms"], json!(["lobby"]));

    alice.send_text("/who");
    let presence = alice.wait_for(|e| e["type"] == "presence", secs(5));
    let names: Vec<&str> = presence["members"]
        .as_array()
        .expect("members is a list")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, ["alicia", "bob"]);

    alice.send_text("/join dev");
    alice.send_text("/rooms");
    let rooms = alice.wait_for(|e| e["type"] == "rooms", secs(5));
    assert_eq!(
        rooms["rooms"],
        json!([{"name": "dev", "members": 1}, {"name": "lobby", "members": 2}])
    );

    alice.send_json(json!({"type": "who", "room": "dev"}));
    let dev = alice.wait_for(|e| e["type"] == "presence", secs(5));
    assert_eq!(dev["room"], "dev");
    assert_eq!(dev["members"].as_array().map(Vec::len), Some(1));

    alice.send_text("/leave dev");
    alice.wait_for(|e| e["type"] == "left" && e["room"] == "dev", secs(5));
    alice.send_json(json!({"type": "nick", "name": "al"}));
    alice.wait_for(|e| e["type"] == "welcome" && e["name"] == "al", secs(5));
    alice.send_json(json!({"type": "rooms"}));
    alice.wait_for(|e| e["type"] == "rooms", secs(5));

    alice.send_text("/help");
    let help = alice.wait_for(|e| e["type"] == "help", secs(5));
    assert!(help["text"].as_str().is_some_and(|t| t.contains("/join")));
}

#[test]
fn text_format_sends_one_readable_line_per_event() {
    let server = TestServer::start();
    let mut term = Client::connect(&server.ws_url("/ws?name=bob&format=text&room=lobby"));
    term.wait_for_line(|l| l.starts_with("* welcome bob (c"), secs(5));
    term.wait_for_line(|l| l == "[lobby] * bob joined", secs(5));
    let mut alice = server.client("name=alice");
    term.wait_for_line(|l| l == "[lobby] * alice joined", secs(5));
    alice.say("lobby", "hi");
    term.wait_for_line(|l| l == "[lobby] alice: hi", secs(5));
    term.send_text("/leave dev");
    term.wait_for_line(|l| l == "! not_member: you are not in #dev", secs(5));
    term.send_text("hello from the terminal");
    term.wait_for_line(|l| l == "[lobby] bob: hello from the terminal", secs(5));
}

#[test]
fn every_websocket_error_code_comes_as_an_error_event_and_the_connection_lives() {
    let server = TestServer::start_with(|c| c.rate_limit = Some(20));
    let mut alice = server.client("name=alice");
    let expect_error = |client: &mut Client, send: &str, code: &str| {
        client.send_text(send);
        let error = client.wait_for(|e| e["type"] == "error", secs(5));
        let shown: String = send.chars().take(60).collect();
        assert_eq!(error["code"], code, "after sending {shown}: {error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    };
    expect_error(&mut alice, r#"{"type":"message","text":"#, "bad_request");
    expect_error(&mut alice, r#"{"type":"teleport"}"#, "bad_request");
    expect_error(
        &mut alice,
        r#"{"type":"join","room":"no spaces"}"#,
        "bad_room",
    );
    expect_error(&mut alice, "/join has/slash", "bad_room");
    expect_error(&mut alice, r#"{"type":"nick","name":""}"#, "bad_name");
    expect_error(&mut alice, &format!("/nick {}", "x".repeat(33)), "bad_name");
    expect_error(
        &mut alice,
        r#"{"type":"message","room":"dev","text":"hi"}"#,
        "not_member",
    );
    let deep = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    expect_error(&mut alice, &deep, "bad_request");

    alice
        .ws
        .send(tungstenite::Message::binary(vec![1, 2, 3]))
        .expect("send binary");
    let unsupported = alice.wait_for(|e| e["type"] == "error", secs(5));
    assert_eq!(unsupported["code"], "unsupported");

    // The connection still works after all of that.
    alice.say("lobby", "still here");

    // Over the rate limit: at most 20 a second, so 60 at once must hit it.
    for n in 0..60 {
        alice.send_text(&format!("flood {n}"));
    }
    let limited = alice.wait_for(|e| e["type"] == "error", secs(5));
    assert_eq!(limited["code"], "rate_limited");

    // Over --max-message-size: too_large, then close 1009.
    alice.send_text(&"x".repeat(70_000));
    let too_large = alice.wait_for(
        |e| e["type"] == "error" && e["code"] != "rate_limited",
        secs(5),
    );
    assert_eq!(too_large["code"], "too_large");
    match alice.wait_for_close(secs(5)) {
        Got::Closed(Some(frame)) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }
}

/// Whether a terminal could act on `c`, or a reader be fooled by it: the
/// characters text mode must never print as they came.
fn acts_on_a_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        || matches!(
            c,
            '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{2028}' | '\u{2029}'
        )
}

#[test]
fn issue_17_text_mode_escapes_control_characters_and_bidi_overrides_it_received() {
    let server = TestServer::start();
    let mut term = Client::connect(&server.ws_url("/ws?name=bob&format=text&room=lobby"));
    term.wait_for_line(|l| l == "[lobby] * bob joined", secs(5));
    let mut alice = server.client("name=alice");
    // Clear the screen, set the window title, ring the bell; reverse what
    // follows; break the line three ways; a C1 CSI; DEL; a tab; and
    // backslashes of its own, one of which looks like an escape.
    let nasty = "\x1b[2J\x1b]0;pwned\x07 \u{202e}olleh\u{2028}next\r\nline \u{9b}31m \x7f \
                 tab\there back\\slash lit\\n";
    alice.say("lobby", nasty);
    let line = term.wait_for_line(|l| l.starts_with("[lobby] alice: "), secs(5));
    assert_eq!(
        line,
        r"[lobby] alice: \x1b[2J\x1b]0;pwned\x07 \u{202e}olleh\u{2028}next\r\nline \u{9b}31m \x7f tab\there back\slash lit\\n"
    );

    // An error that quotes what the client sent is escaped too.
    term.send_text(r#"{"type":"\u001b]0;pwned\u0007"}"#);
    let error = term.wait_for_line(|l| l.starts_with("! "), secs(5));
    assert!(error.contains(r"\x1b]0;pwned\x07"), "{error}");

    for line in term
        .seen
        .iter()
        .filter_map(Value::as_str)
        .chain([&*line, &*error])
    {
        assert!(
            !line.chars().any(acts_on_a_terminal),
            "a raw control character reached the terminal: {line:?}"
        );
    }
}

#[test]
fn issue_17_names_with_control_characters_bidi_overrides_or_separators_are_bad_names() {
    let server = TestServer::start();
    let mut alice = server.client("name=alice");
    for bad in [
        "\u{202e}evil",
        "a\u{2028}b",
        "a\u{2029}b",
        "\u{2066}isolate",
        "mark\u{200f}",
        "\x1b[2Jx",
        "a\u{9b}b",
        "del\x7f",
    ] {
        alice.send_json(json!({"type": "nick", "name": bad}));
        let error = alice.wait_for(|e| e["type"] == "error", secs(5));
        assert_eq!(error["code"], "bad_name", "nick {bad:?}: {error}");

        let encoded: String = bad.bytes().map(|b| format!("%{b:02X}")).collect();
        let refused = common::raw_http(
            server.ws,
            &common::handshake_request(&format!("/ws?name={encoded}"), ""),
        );
        assert!(
            refused.starts_with("HTTP/1.1 400") && refused.contains("names are"),
            "handshake with name {bad:?}: {refused}"
        );
    }
    alice.send_text("/nick \u{202e}evil");
    let error = alice.wait_for(|e| e["type"] == "error", secs(5));
    assert_eq!(error["code"], "bad_name", "{error}");
    // Letters from any script, and spaces inside, are still names.
    alice.send_json(json!({"type": "nick", "name": "Zoë ﺱ 名前"}));
    alice.wait_for(
        |e| e["type"] == "welcome" && e["name"] == "Zoë ﺱ 名前",
        secs(5),
    );
}
