//! Signed tokens on the HTTP side: `/events` (401s, forbidden rooms,
//! filtered replay, the end at `exp`) and REST (publishing beside the API
//! key, reads that need a token and show only its rooms). Real server, raw
//! HTTP clients, tokens signed here (`auth_support`).

mod auth_support;
mod common;
mod http_support;

use std::time::{Duration, Instant};

use auth_support::*;
use common::{secs, TestServer};
use http_support::{request, Resp, Sse};
use serde_json::{json, Value};
use switchboard::auth::mint::now_secs;

const API_KEY: &str = "operator-key";

fn server() -> TestServer {
    TestServer::start_with(|config| {
        hs256_server(config);
        config.api_key = Some(API_KEY.to_owned());
    })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn get_with(server: &TestServer, path: &str, token: Option<&str>) -> Resp {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    request(server.http, "GET", path, &headers, b"")
}

fn publish(server: &TestServer, room: &str, authorization: Option<&str>, text: &str) -> Resp {
    let body = json!({"text": text, "from": "someone"}).to_string();
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = authorization {
        headers.push(("Authorization", a));
    }
    request(
        server.http,
        "POST",
        &format!("/rooms/{room}/messages"),
        &headers,
        body.as_bytes(),
    )
}

/// Publishes with the API key and returns the event id.
fn publish_as_operator(server: &TestServer, room: &str, text: &str) -> u64 {
    let resp = publish(server, room, Some(&bearer(API_KEY)), text);
    assert_eq!(resp.status, 202, "{resp:?}");
    resp.json()["id"].as_u64().expect("an id")
}

#[test]
fn events_need_a_good_token_in_the_query_or_the_header() {
    let server = server();
    get_with(&server, "/events?room=lobby", None).assert_error(401, "unauthorized");
    for (what, token) in bad_hs256_tokens() {
        let resp = get_with(&server, &format!("/events?room=lobby&token={token}"), None);
        assert_eq!(resp.status, 401, "{what}: {resp:?}");
        let resp = get_with(&server, "/events?room=lobby", Some(&token));
        assert_eq!(resp.status, 401, "{what} (header): {resp:?}");
        assert_eq!(resp.header("WWW-Authenticate"), Some("Bearer"));
    }
    let token = hs(&claims("alice", &["lobby"]));
    let mut by_query = Sse::connect(
        server.http,
        &format!("/events?room=lobby&token={token}"),
        &[],
    );
    assert_eq!(by_query.status, 200);
    by_query.wait_for_data(|d| d["type"] == "joined", secs(5));
    let auth = bearer(&token);
    let mut by_header = Sse::connect(
        server.http,
        "/events?room=lobby",
        &[("Authorization", &auth)],
    );
    assert_eq!(by_header.status, 200);
    let joined = by_header.wait_for_data(|d| d["type"] == "joined", secs(5));
    assert_eq!(joined["room"], "lobby");
}

#[test]
fn events_and_rest_check_audience_and_issuer_when_configured() {
    let server = TestServer::start_with(aud_iss_server);
    let (good, bad) = aud_iss_tokens("alice", &["lobby"]);
    for (what, token) in &bad {
        let resp = get_with(&server, &format!("/events?room=lobby&token={token}"), None);
        assert_eq!(resp.status, 401, "SSE, {what}: {resp:?}");
        let resp = publish(&server, "lobby", Some(&bearer(token)), "x");
        assert_eq!(resp.status, 401, "REST, {what}: {resp:?}");
        let resp = get_with(&server, "/rooms", Some(token));
        assert_eq!(resp.status, 401, "REST read, {what}: {resp:?}");
    }
    let mut sse = Sse::connect(
        server.http,
        &format!("/events?room=lobby&token={good}"),
        &[],
    );
    assert_eq!(sse.status, 200);
    sse.wait_for_data(|d| d["type"] == "joined", secs(5));
    assert_eq!(
        publish(&server, "lobby", Some(&bearer(&good)), "x").status,
        202
    );
}

#[test]
fn events_refuse_rooms_outside_the_token_and_replay_only_readable_ones() {
    let server = server();
    let first = publish_as_operator(&server, "team-a", "one");
    publish_as_operator(&server, "secret", "hidden");
    publish_as_operator(&server, "team-a", "two");
    let token = hs(&claims("alice", &["team-*"]));
    let auth = bearer(&token);
    let since = (first - 1).to_string();
    let mut sse = Sse::connect(
        server.http,
        "/events?room=team-a&room=secret",
        &[("Authorization", &auth), ("Last-Event-ID", &since)],
    );
    assert_eq!(sse.status, 200);
    let refused = sse.wait_for_data(|d| d["type"] == "error", secs(5));
    assert_eq!(refused["code"], "forbidden");
    sse.wait_for_data(|d| d["text"] == "two", secs(5));
    let seen: Vec<Value> = sse.seen.iter().filter_map(|i| i.data().cloned()).collect();
    assert!(seen.iter().any(|d| d["text"] == "one"), "{seen:?}");
    assert!(seen.iter().all(|d| d["text"] != "hidden"), "{seen:?}");
}

#[test]
fn an_event_stream_ends_at_exp_and_says_why() {
    let server = server();
    let mut c = claims("alice", &["lobby"]);
    let exp = now_secs() + 2;
    c["exp"] = json!(exp);
    let mut sse = Sse::connect(
        server.http,
        &format!("/events?room=lobby&token={}", hs(&c)),
        &[],
    );
    assert_eq!(sse.status, 200);
    let why = sse.wait_for_data(|d| d["type"] == "error", secs(6));
    assert_eq!(why["code"], "token_expired");
    let deadline = Instant::now() + secs(5);
    while !sse.ended && Instant::now() < deadline {
        let _ = sse.next(Duration::from_millis(200));
    }
    assert!(sse.ended, "the stream ended");
    let now = now_secs();
    assert!((exp..=exp + 1).contains(&now), "ended at {now}, exp {exp}");
    // Its member is gone from the room.
    let detail = get_with(&server, "/rooms/lobby", Some(API_KEY)).json();
    assert_eq!(detail["members"], json!([]), "{detail}");
}

#[test]
fn rest_publishing_takes_the_api_key_or_a_token_that_allows_the_room() {
    let server = server();
    publish(&server, "news", None, "x").assert_error(401, "unauthorized");
    publish(&server, "news", Some("Bearer wrong"), "x").assert_error(401, "unauthorized");
    let expired = {
        let mut c = claims("a", &["*"]);
        c["exp"] = json!(now_secs() - 10);
        hs(&c)
    };
    publish(&server, "news", Some(&bearer(&expired)), "x").assert_error(401, "unauthorized");
    let mut c = claims("editor", &["*"]);
    c["publish"] = json!(["news", "team-*"]);
    c["name"] = json!("Editor");
    let token = bearer(&hs(&c));
    publish(&server, "gossip", Some(&token), "x").assert_error(403, "forbidden");
    assert_eq!(publish(&server, "news", Some(&token), "x").status, 202);
    assert_eq!(publish(&server, "team-7", Some(&token), "x").status, 202);
    assert_eq!(
        publish(&server, "gossip", Some(&bearer(API_KEY)), "x").status,
        202
    );
    // The token's name wins over the body's `from`.
    let history = get_with(&server, "/rooms/news/messages", Some(API_KEY)).json();
    assert_eq!(history[0]["from"], "Editor", "{history}");
}

#[test]
fn rest_reads_need_a_token_and_show_only_its_rooms() {
    let server = server();
    publish_as_operator(&server, "team-a", "a");
    publish_as_operator(&server, "secret", "s");
    for path in ["/rooms", "/rooms/team-a", "/rooms/team-a/messages"] {
        get_with(&server, path, None).assert_error(401, "unauthorized");
    }
    let token = hs(&claims("alice", &["team-*"]));
    let rooms = get_with(&server, "/rooms", Some(&token)).json();
    let names: Vec<&str> = rooms
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["team-a"]);
    let history = get_with(&server, "/rooms/team-a/messages", Some(&token));
    assert_eq!(history.status, 200);
    assert_eq!(history.json()[0]["text"], "a");
    get_with(&server, "/rooms/secret/messages", Some(&token)).assert_error(403, "forbidden");
    get_with(&server, "/rooms/secret", Some(&token)).assert_error(403, "forbidden");
    // ?token= works too, and the operator's key reads everything.
    let by_query = get_with(
        &server,
        &format!("/rooms/team-a/messages?token={token}"),
        None,
    );
    assert_eq!(by_query.status, 200);
    assert_eq!(
        get_with(&server, "/rooms/secret/messages", Some(API_KEY)).status,
        200
    );
    // Health, metrics and the page stay open.
    assert_eq!(get_with(&server, "/healthz", None).status, 200);
    assert_eq!(get_with(&server, "/metrics", None).status, 200);
}

#[test]
fn describe_lists_each_member_s_user() {
    let server = server();
    let token = hs(&claims("user-7", &["lobby"]));
    let mut sse = Sse::connect(
        server.http,
        &format!("/events?room=lobby&token={token}"),
        &[],
    );
    sse.wait_for_data(|d| d["type"] == "joined", secs(5));
    let detail = get_with(&server, "/rooms/lobby", Some(&token)).json();
    assert_eq!(detail["members"][0]["user"], "user-7", "{detail}");
    assert_eq!(detail["members"][0]["transport"], "sse");
}

#[test]
fn refused_tokens_are_counted() {
    let server = server();
    get_with(&server, "/events?room=lobby", None).assert_error(401, "unauthorized");
    let metrics = get_with(&server, "/metrics", None).body;
    let samples = http_support::parse_prometheus(&metrics);
    let refused = http_support::sample(
        &samples,
        "switchboard_connections_refused_total",
        &[("reason", "token")],
    );
    assert_eq!(refused, Some(1.0), "{metrics}");
}
