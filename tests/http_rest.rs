//! The REST API, the page and `/healthz`: every endpoint and every status
//! code, on a real server.

mod common;
mod http_support;

use common::{secs, TestServer};
use http_support::{get, members_by_transport, parse_prometheus, post_json, request, sample, Sse};
use serde_json::{json, Value};

const JSON: (&str, &str) = ("Content-Type", "application/json");
const TEXT: (&str, &str) = ("Content-Type", "text/plain; charset=utf-8");

#[test]
fn publishing_json_returns_202_with_the_id_and_reaches_websocket_members() {
    let server = TestServer::start();
    let mut bob = server.client("room=dev&name=bob");
    let resp = post_json(
        server.http,
        "/rooms/dev/messages",
        &json!({"text": "deploy done", "from": "ci"}),
    );
    assert_eq!(resp.status, 202, "{resp:?}");
    assert_eq!(resp.header("Content-Type"), Some("application/json"));
    let id = resp.json()["id"].as_u64().expect("an id");

    let event = bob.wait_for(|e| e["type"] == "message", secs(5));
    assert_eq!(event["id"], id);
    assert_eq!(event["text"], "deploy done");
    assert_eq!(event["from"], "ci");
    assert_eq!(event["from_id"], "rest");
    assert_eq!(event["room"], "dev");
}

#[test]
fn publishing_plain_text_names_the_sender_from_the_query_or_api() {
    let server = TestServer::start();
    let mut bob = server.client("room=dev&name=bob");
    let named = request(
        server.http,
        "POST",
        "/rooms/dev/messages?from=cron",
        &[TEXT],
        "nightly ok".as_bytes(),
    );
    assert_eq!(named.status, 202, "{named:?}");
    let anonymous = request(
        server.http,
        "POST",
        "/rooms/dev/messages",
        &[TEXT],
        "héllo".as_bytes(),
    );
    assert_eq!(anonymous.status, 202, "{anonymous:?}");
    assert!(
        anonymous.json()["id"].as_u64() > named.json()["id"].as_u64(),
        "ids increase"
    );

    let first = bob.wait_for(|e| e["type"] == "message", secs(5));
    assert_eq!(
        (&first["from"], &first["text"]),
        (&json!("cron"), &json!("nightly ok"))
    );
    let second = bob.wait_for(|e| e["type"] == "message", secs(5));
    assert_eq!(
        (&second["from"], &second["text"]),
        (&json!("api"), &json!("héllo"))
    );
}

#[test]
fn publishing_creates_the_room_with_history() {
    let server = TestServer::start();
    let resp = post_json(
        server.http,
        "/rooms/fresh/messages",
        &json!({"text": "first"}),
    );
    assert_eq!(resp.status, 202);
    let rooms = get(server.http, "/rooms").json();
    assert_eq!(
        rooms,
        json!([{"name": "fresh", "members": 0, "last_id": resp.json()["id"]}])
    );
}

#[test]
fn bad_bodies_rooms_and_names_are_400_with_a_clear_error() {
    let server = TestServer::start();
    let post =
        |path: &str, body: &str| request(server.http, "POST", path, &[JSON], body.as_bytes());
    post("/rooms/dev/messages", "{not json").assert_error(400, "bad_request");
    post("/rooms/dev/messages", r#"{"from":"x"}"#).assert_error(400, "bad_request");
    post("/rooms/dev/messages", r#"{"text":42}"#).assert_error(400, "bad_request");
    post("/rooms/dev/messages", r#"{"text":"   "}"#).assert_error(400, "bad_request");
    post("/rooms/no%20space/messages", r#"{"text":"hi"}"#).assert_error(400, "bad_room");
    post("/rooms/dev/messages", r#"{"text":"hi","from":""}"#).assert_error(400, "bad_name");
    let long_name = format!(r#"{{"text":"hi","from":"{}"}}"#, "n".repeat(33));
    post("/rooms/dev/messages", &long_name).assert_error(400, "bad_name");
    request(
        server.http,
        "POST",
        "/rooms/dev/messages",
        &[TEXT],
        b"\xff\xfe",
    )
    .assert_error(400, "bad_request");
    let message = post("/rooms/dev/messages", "{not json").json()["message"].clone();
    assert!(
        message.as_str().is_some_and(|m| m.contains(r#"{"text""#)),
        "says what a body looks like: {message}"
    );
}

#[test]
fn the_api_key_is_needed_when_set() {
    let server = TestServer::start_with(|c| c.api_key = Some("s3cret".into()));
    let body = br#"{"text":"hi"}"#;
    let missing = request(server.http, "POST", "/rooms/dev/messages", &[JSON], body);
    missing.assert_error(401, "unauthorized");
    assert_eq!(missing.header("WWW-Authenticate"), Some("Bearer"));
    let wrong = request(
        server.http,
        "POST",
        "/rooms/dev/messages",
        &[JSON, ("Authorization", "Bearer nope")],
        body,
    );
    wrong.assert_error(401, "unauthorized");
    let basic = request(
        server.http,
        "POST",
        "/rooms/dev/messages",
        &[JSON, ("Authorization", "s3cret")],
        body,
    );
    basic.assert_error(401, "unauthorized");
    let right = request(
        server.http,
        "POST",
        "/rooms/dev/messages",
        &[JSON, ("Authorization", "Bearer s3cret")],
        body,
    );
    assert_eq!(right.status, 202, "{right:?}");
    // Reading stays open.
    assert_eq!(get(server.http, "/rooms").status, 200);
    assert_eq!(get(server.http, "/rooms/dev/messages").status, 200);
}

#[test]
fn messages_over_the_size_limit_are_413() {
    let server = TestServer::start_with(|c| c.max_message_bytes = 1000);
    let at_limit = post_json(
        server.http,
        "/rooms/dev/messages",
        &json!({"text": "a".repeat(1000)}),
    );
    assert_eq!(
        at_limit.status, 202,
        "a message of exactly the limit is fine"
    );
    post_json(
        server.http,
        "/rooms/dev/messages",
        &json!({"text": "a".repeat(1001)}),
    )
    .assert_error(413, "too_large");
    let text = request(
        server.http,
        "POST",
        "/rooms/dev/messages",
        &[TEXT],
        &[b'a'; 1001],
    );
    text.assert_error(413, "too_large");
    let huge = request(
        server.http,
        "POST",
        "/rooms/dev/messages",
        &[JSON],
        &vec![b' '; 100_000],
    );
    huge.assert_error(413, "too_large");
}

#[test]
fn other_content_types_are_415() {
    let server = TestServer::start();
    let form = request(
        server.http,
        "POST",
        "/rooms/dev/messages",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"text=hi",
    );
    form.assert_error(415, "unsupported");
    request(server.http, "POST", "/rooms/dev/messages", &[], b"hi")
        .assert_error(415, "unsupported");
}

#[test]
fn wrong_methods_are_405_with_allow_and_unknown_paths_404() {
    let server = TestServer::start();
    let delete = request(server.http, "DELETE", "/rooms/dev/messages", &[], b"");
    delete.assert_error(405, "method_not_allowed");
    assert_eq!(delete.header("Allow"), Some("GET, HEAD, POST"));
    let post_rooms = request(server.http, "POST", "/rooms", &[JSON], b"{}");
    post_rooms.assert_error(405, "method_not_allowed");
    assert_eq!(post_rooms.header("Allow"), Some("GET, HEAD"));
    request(server.http, "PUT", "/healthz", &[], b"").assert_error(405, "method_not_allowed");
    get(server.http, "/nope").assert_error(404, "not_found");
    get(server.http, "/rooms/dev/messages/extra").assert_error(404, "not_found");
}

#[test]
fn rooms_are_listed_and_described_with_members_and_transports() {
    let server = TestServer::start();
    assert_eq!(get(server.http, "/rooms").json(), json!([]));
    let _alice = server.client("room=lobby&room=dev&name=alice");
    let mut sse = Sse::connect(server.http, "/events?room=dev&name=carol", &[]);
    sse.wait_for_data(|d| d["type"] == "joined" && d["name"] == "carol", secs(5));

    let rooms = get(server.http, "/rooms").json();
    let summary: Vec<(Value, Value)> = rooms
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| (r["name"].clone(), r["members"].clone()))
        .collect();
    assert_eq!(
        summary,
        vec![(json!("dev"), json!(2)), (json!("lobby"), json!(1))],
        "sorted by name"
    );
    assert!(rooms[0]["last_id"].as_u64().is_some_and(|id| id > 0));

    let dev = get(server.http, "/rooms/dev");
    assert_eq!(dev.status, 200);
    let dev = dev.json();
    assert_eq!(dev["name"], "dev");
    assert_eq!(dev["last_id"], rooms[0]["last_id"]);
    let members = members_by_transport(&dev);
    assert_eq!(
        members,
        vec![
            (json!("alice"), json!("ws")),
            (json!("carol"), json!("sse"))
        ]
    );
    assert!(dev["members"][0]["id"]
        .as_str()
        .is_some_and(|id| id.starts_with('c')));

    get(server.http, "/rooms/nowhere").assert_error(404, "not_found");
    get(server.http, "/rooms/bad%20room").assert_error(400, "bad_room");
}

#[test]
fn history_pages_with_since_and_limit() {
    let server = TestServer::start();
    let ids: Vec<u64> = (0..5)
        .map(|n| {
            let resp = post_json(
                server.http,
                "/rooms/log/messages",
                &json!({"text": format!("m{n}")}),
            );
            resp.json()["id"].as_u64().expect("an id")
        })
        .collect();
    let texts = |path: &str| -> Vec<String> {
        let resp = get(server.http, path);
        assert_eq!(resp.status, 200, "{path}: {resp:?}");
        resp.json()
            .as_array()
            .expect("a JSON array")
            .iter()
            .map(|e| {
                assert_eq!(e["type"], "message");
                e["text"].as_str().expect("text").to_owned()
            })
            .collect()
    };
    assert_eq!(texts("/rooms/log/messages"), ["m0", "m1", "m2", "m3", "m4"]);
    assert_eq!(
        texts("/rooms/log/messages?limit=2"),
        ["m3", "m4"],
        "the newest, oldest first"
    );
    assert_eq!(
        texts(&format!("/rooms/log/messages?since={}", ids[1])),
        ["m2", "m3", "m4"]
    );
    assert_eq!(
        texts(&format!("/rooms/log/messages?since={}&limit=1", ids[1])),
        ["m2"]
    );
    assert_eq!(
        texts(&format!("/rooms/log/messages?since={}", ids[4])),
        Vec::<String>::new()
    );
    let full = get(server.http, "/rooms/log/messages?limit=1").json();
    assert_eq!(full[0]["id"], ids[4]);
    assert_eq!(full[0]["from_id"], "rest");

    get(server.http, "/rooms/log/messages?since=soon").assert_error(400, "bad_request");
    get(server.http, "/rooms/log/messages?limit=-1").assert_error(400, "bad_request");
    get(server.http, "/rooms/void/messages").assert_error(404, "not_found");
}

#[test]
fn healthz_says_ok() {
    let server = TestServer::start();
    let resp = get(server.http, "/healthz");
    assert_eq!((resp.status, resp.body.trim()), (200, "ok"));
}

#[test]
fn the_page_is_served_with_the_websocket_port_filled_in() {
    let server = TestServer::start();
    let resp = get(server.http, "/");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert!(resp.body.contains("<html"), "an HTML page");
    assert!(
        !resp.body.contains("__WS_PORT__"),
        "the placeholder is replaced"
    );
    let port = server.ws.port().to_string();
    assert!(
        resp.body.contains(&format!("content=\"{port}\"")),
        "the page knows the WebSocket port {port}"
    );
    let head = request(server.http, "HEAD", "/", &[], b"");
    assert_eq!((head.status, head.body.as_str()), (200, ""));
}

#[test]
fn issue_17_a_cross_origin_browser_post_is_refused_and_nothing_is_published() {
    let server = TestServer::start();
    let mut bob = server.client("room=dev&name=bob");
    let post = |headers: &[(&str, &str)], text: &str| {
        let mut all = vec![TEXT];
        all.extend_from_slice(headers);
        request(
            server.http,
            "POST",
            "/rooms/dev/messages",
            &all,
            text.as_bytes(),
        )
    };

    // What a form or `fetch(..., {mode: "no-cors"})` on another site sends:
    // text/plain needs no preflight, so the browser just sends it.
    post(&[("Origin", "http://evil.example")], "cross-site").assert_error(403, "forbidden");
    // A browser that sends no Origin still says where the request came from.
    post(&[("Sec-Fetch-Site", "cross-site")], "no origin").assert_error(403, "forbidden");
    // A page on a name rebound to this server: same origin as far as the
    // browser knows, but not an address of ours.
    let rebound = common::raw_http(
        server.http,
        &format!(
            "POST /rooms/dev/messages HTTP/1.1\r\nHost: evil.example:{port}\r\n\
             Origin: http://evil.example:{port}\r\nContent-Type: text/plain\r\n\
             Content-Length: 7\r\nConnection: close\r\n\r\nrebound",
            port = server.http.port()
        ),
    );
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");

    // The chat page itself, and a program that sends no Origin, publish.
    let page = format!("http://{}", server.http);
    let from_page = post(
        &[("Origin", &page), ("Sec-Fetch-Site", "same-origin")],
        "from the page",
    );
    assert_eq!(from_page.status, 202, "{from_page:?}");
    let from_program = post(&[], "from a program");
    assert_eq!(from_program.status, 202, "{from_program:?}");

    let first = bob.wait_for(|e| e["type"] == "message", secs(5));
    assert_eq!(first["text"], "from the page");
    let second = bob.wait_for(|e| e["type"] == "message", secs(5));
    assert_eq!(second["text"], "from a program");
    let history = get(server.http, "/rooms/dev/messages").json();
    let texts: Vec<&Value> = history
        .as_array()
        .expect("a list")
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| &e["text"])
        .collect();
    assert_eq!(texts, [&json!("from the page"), &json!("from a program")]);
    let samples = parse_prometheus(&get(server.http, "/metrics").body);
    let refused = sample(
        &samples,
        "switchboard_connections_refused_total",
        &[("reason", "origin")],
    );
    assert_eq!(refused, Some(3.0), "each refusal is counted");
}

#[test]
fn issue_17_a_sender_name_with_a_bidi_override_is_refused_as_bad_name() {
    let server = TestServer::start();
    for from in ["\u{202e}evil", "line\u{2028}break"] {
        let resp = post_json(
            server.http,
            "/rooms/dev/messages",
            &json!({"text": "hi", "from": from}),
        );
        resp.assert_error(400, "bad_name");
    }
}
