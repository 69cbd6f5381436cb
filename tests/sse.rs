//! Server-Sent Events over raw TCP: the wire format, promptness, heartbeats,
//! replay without gaps, slow readers, and the one hub behind every transport.

mod common;
mod http_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{secs, TestServer};
use http_support::{get, members_by_transport, post_json, Item, Sse};
use serde_json::json;
use switchboard::room::{Name, RoomName};

fn room(name: &str) -> RoomName {
    RoomName::parse(name).expect("a valid room name")
}

fn name(name: &str) -> Name {
    Name::parse(name).expect("a valid name")
}

/// Opens `/events?{query}` and reads up to and including its own `joined`.
fn subscribe(server: &TestServer, query: &str) -> Sse {
    let mut sse = Sse::connect(server.http, &format!("/events?{query}"), &[]);
    assert_eq!(sse.status, 200, "GET /events?{query}");
    sse.wait_for_data(|d| d["type"] == "joined", secs(5));
    sse
}

#[test]
fn sse_stream_has_the_spec_headers_and_framing() {
    let server = TestServer::start();
    let mut sse = Sse::connect(server.http, "/events?room=lobby&name=carol", &[]);
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("Content-Type"), Some("text/event-stream"));
    assert_eq!(sse.header("Cache-Control"), Some("no-cache"));
    assert!(
        sse.header("Content-Length").is_none(),
        "the body runs until the stream ends"
    );

    // The retry line comes first, then the welcome (no id: not a room event).
    assert!(matches!(sse.next(secs(5)), Some(Item::Retry(ms)) if ms > 0));
    let welcome = sse.next(secs(5)).expect("a welcome");
    let Item::Event { id, event, data } = welcome else {
        panic!("not an event: {welcome:?}")
    };
    assert_eq!((id, event.as_str()), (None, "welcome"));
    assert_eq!(data["name"], "carol");
    assert_eq!(data["rooms"], json!(["lobby"]));

    let joined = sse.next(secs(5)).expect("our own join notice");
    let Item::Event { id, event, data } = joined else {
        panic!("not an event: {joined:?}")
    };
    assert_eq!(event, "joined");
    assert_eq!(id, data["id"].as_u64(), "id: matches the event's id");
    assert_eq!(data["name"], "carol");

    let published = post_json(
        server.http,
        "/rooms/lobby/messages",
        &json!({"text": "hi", "from": "dave"}),
    );
    assert_eq!(published.status, 202, "{published:?}");
    let message = sse.next(secs(5)).expect("the message");
    let Item::Event { id, event, data } = message else {
        panic!("not an event: {message:?}")
    };
    assert_eq!(event, "message");
    assert_eq!(id, published.json()["id"].as_u64());
    assert_eq!(data["text"], "hi");
    assert_eq!(data["from"], "dave");
    assert_eq!(data["from_id"], "rest");
    assert_eq!(data["room"], "lobby");
    assert!(data["ts"].as_u64().is_some_and(|ts| ts > 1_600_000_000_000));
}

#[test]
fn a_lone_small_event_arrives_promptly() {
    let server = TestServer::start();
    let mut sse = subscribe(&server, "room=quiet");
    let hub = server.server().hub();
    let sent = Instant::now();
    hub.publish(room("quiet"), name("ann"), Arc::from("test"), "x".into())
        .expect("publish");
    // A response buffered until 8 KiB (or the stream's end) would miss this.
    sse.wait_for_data(
        |d| d["type"] == "message" && d["text"] == "x",
        Duration::from_millis(1000),
    );
    assert!(sent.elapsed() < Duration::from_millis(1000));
}

#[test]
fn heartbeats_come_every_ping_interval() {
    let interval = Duration::from_millis(400);
    let server = TestServer::start_with(|c| c.ping_interval = interval);
    let mut sse = subscribe(&server, "room=beats");
    let start = Instant::now();
    let mut pings = Vec::new();
    while pings.len() < 3 {
        let item = sse.wait_for(|i| matches!(i, Item::Comment(_)), secs(3));
        assert_eq!(item, Item::Comment("ping".into()));
        pings.push(start.elapsed());
    }
    // Three pings take about three intervals: neither a burst nor a stall.
    let took = pings[2];
    assert!(took >= interval * 2, "3 pings in {took:?}");
    assert!(took < interval * 5, "3 pings took {took:?}");
}

#[test]
fn a_client_that_goes_away_is_noticed_within_a_ping_interval() {
    let interval = secs(1);
    let server = TestServer::start_with(|c| c.ping_interval = interval);
    let mut watcher = server.client("room=gone&name=watcher");
    let mut sse = subscribe(&server, "room=gone&name=leaver");
    watcher.wait_for(|e| e["type"] == "joined" && e["name"] == "leaver", secs(5));
    assert_eq!(
        get(server.http, "/rooms/gone").json()["members"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // Leave just after a heartbeat: the worst moment, as the next one is a
    // whole interval away and the first write to a closed peer succeeds.
    sse.wait_for(|i| matches!(i, Item::Comment(_)), interval * 3);
    drop(sse);
    let gone = Instant::now();
    watcher.wait_for(
        |e| e["type"] == "left" && e["name"] == "leaver",
        interval * 3,
    );
    let took = gone.elapsed();
    assert!(
        took < interval + Duration::from_millis(400),
        "noticed after {took:?}"
    );
    let members = get(server.http, "/rooms/gone").json()["members"].clone();
    assert_eq!(
        members.as_array().map(Vec::len),
        Some(1),
        "presence forgot it: {members}"
    );
}

/// Publishes `m0`, `m1`, ... into `room` until stopped, then `end`.
fn publisher(
    server: &TestServer,
    room_name: &'static str,
    count: usize,
) -> std::thread::JoinHandle<()> {
    let hub = server.server().hub();
    std::thread::spawn(move || {
        for n in 0..count {
            hub.publish(
                room(room_name),
                name("pub"),
                Arc::from("rest"),
                format!("m{n}"),
            )
            .expect("publish");
            std::thread::sleep(Duration::from_millis(2)); // a steady stream, not one burst
        }
        hub.publish(
            room(room_name),
            name("pub"),
            Arc::from("rest"),
            "end".into(),
        )
        .expect("publish");
    })
}

/// Reads messages from `pub` until `stop` says so; returns (id, text) pairs.
fn read_messages(sse: &mut Sse, stop: impl Fn(&[(u64, String)]) -> bool) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    while !stop(&got) {
        let data = sse.wait_for_data(|d| d["type"] == "message" && d["from"] == "pub", secs(10));
        got.push((
            data["id"].as_u64().expect("an id"),
            data["text"].as_str().expect("text").to_owned(),
        ));
    }
    got
}

fn replay_has_no_gap_and_no_duplicate(resume: impl Fn(&TestServer, u64) -> Sse) {
    let server = TestServer::start();
    let mut first = subscribe(&server, "room=replay");
    let publishing = publisher(&server, "replay", 400);

    let mut got = read_messages(&mut first, |got| got.len() >= 50);
    let last_seen = got.last().expect("50 messages").0;
    drop(first);
    // The publisher goes on while we are away; catch up from where we were.
    let mut second = resume(&server, last_seen);
    assert_eq!(second.status, 200);
    got.extend(read_messages(&mut second, |got| {
        got.last().is_some_and(|(_, t)| t == "end")
    }));
    publishing.join().expect("the publisher finishes");

    let texts: Vec<&str> = got.iter().map(|(_, t)| t.as_str()).collect();
    let expected: Vec<String> = (0..400)
        .map(|n| format!("m{n}"))
        .chain(["end".to_owned()])
        .collect();
    assert_eq!(
        texts, expected,
        "every message once, in order, across the reconnect"
    );
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "ids only increase");
    assert!(
        second
            .seen
            .iter()
            .any(|i| i.data().is_some_and(|d| d["type"] == "joined")),
        "the second connection went live too (its own join): {:?}",
        second.seen
    );
}

#[test]
fn last_event_id_header_replays_without_gap_or_duplicate_while_publishing() {
    replay_has_no_gap_and_no_duplicate(|server, last| {
        Sse::connect(
            server.http,
            "/events?room=replay",
            &[("Last-Event-ID", &last.to_string())],
        )
    });
}

#[test]
fn last_event_id_query_replays_without_gap_or_duplicate_while_publishing() {
    replay_has_no_gap_and_no_duplicate(|server, last| {
        Sse::connect(
            server.http,
            &format!("/events?room=replay&last_event_id={last}"),
            &[],
        )
    });
}

#[test]
fn slow_sse_reader_is_dropped_while_a_healthy_one_keeps_every_event() {
    const BURST: usize = 16;
    let mut server = TestServer::start_with(|c| c.send_buffer = 4 * BURST);
    let stalled = subscribe(&server, "room=flood&name=stalled");
    let mut healthy = subscribe(&server, "room=flood&name=healthy");

    // The healthy SSE reader reads on its own thread and reports progress.
    let (progress, seen) = crossbeam_channel::unbounded::<usize>();
    let reader = std::thread::spawn(move || {
        let mut texts = Vec::new();
        loop {
            let data = healthy.wait_for_data(|d| d["type"] == "message", secs(20));
            let text = data["text"].as_str().expect("text").to_owned();
            if text == "end" {
                return texts;
            }
            texts.push(text);
            let _ = progress.send(texts.len());
        }
    });

    let hub = server.server().hub();
    let big = "x".repeat(16 * 1024);
    let stalled_gone = || {
        let detail = get(server.http, "/rooms/flood").json();
        !detail["members"]
            .as_array()
            .expect("members")
            .iter()
            .any(|m| m["name"] == "stalled")
    };
    let mut sent = 0;
    let deadline = Instant::now() + secs(30);
    let mut dropped = false;
    while Instant::now() < deadline && !dropped {
        for _ in 0..BURST {
            hub.publish(
                room("flood"),
                name("pub"),
                Arc::from("rest"),
                format!("{sent} {big}"),
            )
            .expect("publish");
            sent += 1;
        }
        // Bursts stay below the queue: only a reader that stopped falls behind.
        while seen
            .recv_timeout(secs(10))
            .expect("the healthy reader keeps up")
            < sent
        {}
        dropped = stalled_gone();
    }
    assert!(
        dropped,
        "the stalled reader was not dropped after {sent} messages"
    );
    hub.publish(room("flood"), name("pub"), Arc::from("rest"), "end".into())
        .expect("publish");

    let texts = reader.join().expect("the healthy reader got everything");
    let expected: Vec<String> = (0..sent).map(|n| format!("{n} {big}")).collect();
    assert!(
        texts == expected,
        "the healthy SSE reader missed or reordered messages ({} of {sent})",
        texts.len()
    );
    let metrics = get(server.http, "/metrics").body;
    assert!(
        metrics.contains("switchboard_slow_consumers_dropped_total{transport=\"sse\"} 1"),
        "one slow SSE consumer counted:\n{metrics}"
    );
    // Its thread, stuck writing to a peer that does not read, ends too (the
    // send timeout): shutdown finds every connection thread gone in time.
    let report = server.stop();
    assert!(
        report.clean,
        "a connection thread outlived shutdown: {report:?}"
    );
    drop(stalled);
}

#[test]
fn a_websocket_message_reaches_sse_and_an_sse_subscriber_is_listed_as_sse() {
    let server = TestServer::start();
    let mut sse = subscribe(&server, "room=mix&room=other&name=listener");
    let mut alice = server.client("room=mix&name=alice");
    alice.say("mix", "over the bridge");
    let data = sse.wait_for_data(|d| d["type"] == "message", secs(5));
    assert_eq!(data["text"], "over the bridge");
    assert_eq!(data["from"], "alice");
    assert_eq!(data["room"], "mix");

    let detail = get(server.http, "/rooms/mix").json();
    let transports = members_by_transport(&detail);
    assert_eq!(
        transports,
        vec![
            (json!("listener"), json!("sse")),
            (json!("alice"), json!("ws"))
        ]
    );
}

#[test]
fn bad_sse_requests_are_refused_with_json_errors() {
    let server = TestServer::start_with(|c| c.max_connections = 1);
    let bad_room = Sse::connect(server.http, "/events?room=no%20spaces", &[]);
    assert_eq!(bad_room.status, 400);
    let bad_id = Sse::connect(server.http, "/events", &[("Last-Event-ID", "yesterday")]);
    assert_eq!(bad_id.status, 400);
    let post = http_support::request(server.http, "POST", "/events", &[], b"");
    post.assert_error(405, "method_not_allowed");

    let _only = subscribe(&server, "room=full");
    let refused = http_support::get(server.http, "/events?room=full");
    refused.assert_error(503, "unavailable");
}

#[test]
fn shutdown_ends_sse_streams() {
    let mut server = TestServer::start();
    let mut sse = subscribe(&server, "room=bye");
    let report = server.stop();
    assert!(report.clean, "every connection thread ended: {report:?}");
    let deadline = Instant::now() + secs(5);
    while !sse.ended && Instant::now() < deadline {
        let _ = sse.next(Duration::from_millis(200));
    }
    assert!(sse.ended, "the stream ended with the server");
}

/// Many subscribers connecting at once, each sending its request the moment
/// it connects (as a page full of `EventSource`s does): every one gets its
/// response head. tiny_http 0.12's connection pool could lose a wake-up when
/// connections arrived back to back, leaving a connection queued with no
/// thread until another connection closed (see `vendor/tiny_http`).
#[test]
fn a_burst_of_subscribers_all_get_their_stream() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    const SUBSCRIBERS: usize = 300;
    let server = TestServer::start();
    let streams: Vec<TcpStream> = (0..SUBSCRIBERS)
        .map(|_| {
            let mut stream = TcpStream::connect(server.http).expect("connect");
            stream
                .write_all(b"GET /events?room=burst HTTP/1.1\r\nHost: test\r\n\r\n")
                .expect("send the request");
            stream
        })
        .collect();
    let deadline = Instant::now() + secs(10);
    let mut answered = 0;
    for mut stream in streams {
        let left = deadline.saturating_duration_since(Instant::now());
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("set a read timeout");
        let mut head = [0u8; 12];
        if stream.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 200" {
            answered += 1;
        }
    }
    assert_eq!(answered, SUBSCRIBERS, "subscribers that got a 200 head");
}
