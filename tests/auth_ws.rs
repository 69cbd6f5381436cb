//! Signed tokens on the WebSocket: the handshake's 401s, what a token lets a
//! connection join, read and send, its name, presence, and its end at `exp`
//! unless a refresh came first. Real server, real clients, tokens signed here
//! with real keys (`auth_support`).

mod auth_support;
mod common;

use std::time::Duration;

use auth_support::*;
use common::{handshake_request, raw_http, secs, set_timeout, Client, Got, TestServer};
use serde_json::{json, Value};
use switchboard::auth::mint::now_secs;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;

fn hs_server() -> TestServer {
    TestServer::start_with(hs256_server)
}

/// The status line of a handshake for `/ws?{query}` with extra headers.
fn handshake_status(server: &TestServer, query: &str, extra: &str) -> String {
    let response = raw_http(
        server.ws,
        &handshake_request(&format!("/ws?{query}"), extra),
    );
    response.lines().next().unwrap_or("").to_owned() + "\n" + &response
}

/// Connects with `Authorization: Bearer token` and waits for the welcome.
fn connect_with_header(server: &TestServer, query: &str, token: &str) -> (Client, Value) {
    let mut request = server
        .ws_url(&format!("/ws?{query}"))
        .into_client_request()
        .expect("a request");
    let bearer = format!("Bearer {token}").parse().expect("a header value");
    request.headers_mut().insert("Authorization", bearer);
    let (ws, _) = tungstenite::connect(request).expect("the handshake succeeds");
    set_timeout(&ws, Some(Duration::from_millis(200)));
    let mut client = Client {
        ws,
        seen: Vec::new(),
    };
    let welcome = client.wait_for(|e| e["type"] == "welcome", secs(5));
    (client, welcome)
}

/// Connects with `?token=` and returns the client and its welcome.
fn connect(server: &TestServer, query: &str, token: &str) -> (Client, Value) {
    let mut client = Client::connect(&server.ws_url(&format!("/ws?{query}&token={token}")));
    let welcome = client.wait_for(|e| e["type"] == "welcome", secs(5));
    (client, welcome)
}

fn is_error(code: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["type"] == "error" && e["code"] == code
}

#[test]
fn without_a_token_the_handshake_is_401_and_with_one_the_connection_opens() {
    let server = hs_server();
    let refused = handshake_status(&server, "room=lobby", "");
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(refused.contains("WWW-Authenticate: Bearer"), "{refused}");
    assert!(refused.contains("a token is required"), "{refused}");

    let token = hs(&claims("alice", &["lobby"]));
    let (_by_query, welcome) = connect(&server, "room=lobby", &token);
    assert_eq!(welcome["rooms"], json!(["lobby"]));
    let (_by_header, welcome) = connect_with_header(&server, "room=lobby", &token);
    assert_eq!(welcome["rooms"], json!(["lobby"]));
}

#[test]
fn tampered_foreign_expired_and_unsigned_tokens_are_401() {
    let server = hs_server();
    for (what, token) in bad_hs256_tokens() {
        let response = handshake_status(&server, &format!("token={token}"), "");
        assert!(response.starts_with("HTTP/1.1 401"), "{what}: {response}");
        let header = format!("Authorization: Bearer {token}\r\n");
        let response = handshake_status(&server, "", &header);
        assert!(
            response.starts_with("HTTP/1.1 401"),
            "{what} (header): {response}"
        );
    }
    let expired = {
        let mut c = claims("alice", &["*"]);
        c["exp"] = json!(now_secs() - 5);
        hs(&c)
    };
    let response = handshake_status(&server, &format!("token={expired}"), "");
    assert!(response.contains("expired"), "says why: {response}");
}

#[test]
fn public_key_servers_take_their_algorithm_and_refuse_the_confusions() {
    for (public, good, other) in [
        (
            RSA_PUBLIC,
            rs as fn(&Value) -> String,
            es as fn(&Value) -> String,
        ),
        (EC_PUBLIC, es, rs),
    ] {
        let server = TestServer::start_with(|c| public_key_server(c, public));
        let c = claims("alice", &["lobby"]);
        let (_client, welcome) = connect(&server, "", &good(&c));
        assert_eq!(welcome["rooms"], json!(["lobby"]));
        for (what, token) in [
            ("the other key type", other(&c)),
            (
                "HS256 with the public key as secret",
                hs256_with_rsa_public_key(&c),
            ),
            ("HS256", hs(&c)),
            ("alg none", alg_none(&c)),
            ("tampered", tampered(&good(&c))),
        ] {
            let response = handshake_status(&server, &format!("token={token}"), "");
            assert!(response.starts_with("HTTP/1.1 401"), "{what}: {response}");
        }
    }
}

#[test]
fn audience_and_issuer_are_required_when_configured() {
    let server = TestServer::start_with(|config| {
        hs256_server(config);
        let verifier = switchboard::auth::Verifier::hs256(SECRET)
            .expect("a secret")
            .with_audience("chat")
            .with_issuer("https://auth.example");
        config.jwt = Some(std::sync::Arc::new(verifier));
    });
    let mut good = claims("alice", &["lobby"]);
    good["aud"] = json!("chat");
    good["iss"] = json!("https://auth.example");
    let (_client, _) = connect(&server, "", &hs(&good));
    for (claim, value) in [("aud", "other"), ("iss", "https://evil.example")] {
        let mut bad = good.clone();
        bad[claim] = json!(value);
        let response = handshake_status(&server, &format!("token={}", hs(&bad)), "");
        assert!(
            response.starts_with("HTTP/1.1 401"),
            "wrong {claim}: {response}"
        );
        let mut missing = good.clone();
        missing.as_object_mut().expect("an object").remove(claim);
        let response = handshake_status(&server, &format!("token={}", hs(&missing)), "");
        assert!(
            response.starts_with("HTTP/1.1 401"),
            "no {claim}: {response}"
        );
    }
}

#[test]
fn joins_and_messages_outside_the_token_are_forbidden_and_the_connection_lives() {
    let server = hs_server();
    let mut c = claims("alice", &["team-*", "lobby"]);
    c["publish"] = json!(["team-a"]);
    let (mut alice, welcome) = connect(&server, "room=team-a&room=secret", &hs(&c));
    assert_eq!(welcome["rooms"], json!(["team-a"]), "secret is not joined");
    let refused = alice.wait_for(is_error("forbidden"), secs(5));
    assert!(
        refused["message"].as_str().unwrap_or("").contains("secret"),
        "{refused}"
    );

    // A prefix pattern lets it join any team room; anything else is refused.
    alice.send_json(json!({"type": "join", "room": "team-b"}));
    alice.wait_for(|e| e["type"] == "joined" && e["room"] == "team-b", secs(5));
    alice.send_json(json!({"type": "join", "room": "teams"}));
    alice.wait_for(is_error("forbidden"), secs(5));
    alice.send_text("/join other");
    alice.wait_for(is_error("forbidden"), secs(5));

    // It reads team-b but may send only to team-a.
    alice.send_json(json!({"type": "message", "room": "team-b", "text": "no"}));
    alice.wait_for(is_error("forbidden"), secs(5));
    alice.send_text("plain line to the last joined room, team-b");
    alice.wait_for(is_error("forbidden"), secs(5));
    alice.say("team-a", "yes");
    alice.send_json(json!({"type": "who", "room": "secret"}));
    alice.wait_for(is_error("forbidden"), secs(5));

    // `rooms` lists only what it may read.
    let (mut bob, _) = connect(&server, "room=secret", &hs(&claims("bob", &["secret"])));
    bob.say("secret", "hidden");
    alice.send_json(json!({"type": "rooms"}));
    let rooms = alice.wait_for(|e| e["type"] == "rooms", secs(5));
    let names: Vec<&str> = rooms["rooms"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(
        names.contains(&"team-a") && !names.contains(&"secret"),
        "{names:?}"
    );
}

#[test]
fn a_token_without_rooms_reads_none_not_even_the_lobby() {
    let server = hs_server();
    let (mut client, welcome) = connect(&server, "", &hs(&claims("nobody", &[])));
    assert_eq!(welcome["rooms"], json!([]));
    client.wait_for(is_error("forbidden"), secs(5));
    client.send_text("hello?");
    client.wait_for(is_error("not_member"), secs(5));
}

#[test]
fn replay_shows_only_rooms_the_token_may_read() {
    let server = hs_server();
    let (mut writer, _) = connect(&server, "room=open&room=secret", &hs(&claims("w", &["*"])));
    let first = writer.say("open", "one");
    writer.say("secret", "hidden");
    writer.say("open", "two");
    let since = first["id"].as_u64().expect("an id") - 1;
    let query = format!("room=open&room=secret&since={since}");
    let (mut reader, _) = connect(&server, &query, &hs(&claims("r", &["open"])));
    let two = reader.wait_for(|e| e["type"] == "message" && e["text"] == "two", secs(5));
    assert_eq!(two["room"], "open");
    let all: Vec<Value> = reader.seen.clone();
    assert!(
        all.iter()
            .all(|e| e["room"] != "secret" || e["type"] == "error"),
        "nothing from #secret was replayed: {all:?}"
    );
    assert!(all.iter().any(|e| e["text"] == "one"), "{all:?}");
}

#[test]
fn the_token_name_wins_over_the_query_and_fixed_names_refuse_nick() {
    let server = hs_server();
    let mut c = claims("u-17", &["lobby"]);
    c["name"] = json!("Alice");
    c["fixed_name"] = json!(true);
    let (mut alice, welcome) = connect(&server, "room=lobby&name=Mallory", &hs(&c));
    assert_eq!(welcome["name"], "Alice");
    alice.send_json(json!({"type": "nick", "name": "Eve"}));
    alice.wait_for(is_error("forbidden"), secs(5));
    let said = alice.say("lobby", "hi");
    assert_eq!(said["from"], "Alice");

    // Without fixed_name, nick works; without a name claim, ?name= does.
    let mut c = claims("u-18", &["lobby"]);
    c["name"] = json!("Bob");
    let (mut bob, _) = connect(&server, "room=lobby", &hs(&c));
    bob.send_text("/nick Robert");
    let renamed = bob.wait_for(|e| e["type"] == "welcome", secs(5));
    assert_eq!(renamed["name"], "Robert");
    let (_carol, welcome) = connect(
        &server,
        "room=lobby&name=Carol",
        &hs(&claims("u-19", &["lobby"])),
    );
    assert_eq!(welcome["name"], "Carol");
}

#[test]
fn presence_lists_each_member_s_user() {
    let server = hs_server();
    let mut c = claims("user-42", &["lobby"]);
    c["name"] = json!("Zoe");
    let (mut zoe, _) = connect(&server, "room=lobby", &hs(&c));
    zoe.send_json(json!({"type": "who", "room": "lobby"}));
    let presence = zoe.wait_for(|e| e["type"] == "presence", secs(5));
    assert_eq!(presence["members"][0]["user"], "user-42", "{presence}");
    assert_eq!(presence["members"][0]["name"], "Zoe");

    // Without tokens there is no user field at all.
    let open = TestServer::start();
    let mut guest = open.client("room=lobby");
    guest.send_json(json!({"type": "who"}));
    let presence = guest.wait_for(|e| e["type"] == "presence", secs(5));
    assert!(presence["members"][0].get("user").is_none(), "{presence}");
}

/// Claims for `sub` in the lobby, expiring `in_secs` from now.
fn expiring(sub: &str, in_secs: u64) -> Value {
    let mut c = claims(sub, &["lobby"]);
    c["exp"] = json!(now_secs() + in_secs);
    c
}

/// Waits for the close and checks it is 1008 `token expired`.
fn expect_token_expired(client: &mut Client, within: Duration) {
    match client.wait_for_close(within) {
        Got::Closed(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Policy);
            assert_eq!(frame.reason.as_str(), "token expired");
        }
        other => panic!("expected close 1008 token expired, got {other:?}"),
    }
}

#[test]
fn at_exp_the_connection_closes_1008_token_expired() {
    let server = hs_server();
    let exp = now_secs() + 2;
    let (mut client, _) = connect(&server, "room=lobby", &hs(&expiring("a", 2)));
    expect_token_expired(&mut client, secs(6));
    let now = now_secs();
    // Not before exp (whole seconds), and promptly after it.
    assert!(now >= exp, "closed at {now}, before exp {exp}");
    assert!(now <= exp + 1, "closed at {now}, long after exp {exp}");
}

#[test]
fn a_refresh_moves_the_end_and_may_not_change_the_user() {
    let server = hs_server();
    let first_exp = now_secs() + 2;
    let (mut client, _) = connect(&server, "room=lobby", &hs(&expiring("alice", 2)));

    // Refused refreshes change nothing.
    client.send_json(json!({"type": "refresh", "token": hs(&expiring("mallory", 60))}));
    client.wait_for(is_error("forbidden"), secs(5));
    client.send_json(json!({"type": "refresh", "token": tampered(&hs(&expiring("alice", 60)))}));
    client.wait_for(is_error("unauthorized"), secs(5));

    // A good one, in the text form, is answered with a welcome.
    let second_exp = now_secs() + 4;
    client.send_text(&format!("/token {}", hs(&expiring("alice", 4))));
    client.wait_for(|e| e["type"] == "welcome", secs(5));
    // No close comes at the first exp (the wait ends a second past it)...
    let past_first = Duration::from_secs(first_exp + 1 - now_secs());
    assert!(matches!(client.wait_for_close(past_first), Got::TimedOut));
    client.say("lobby", "past the first exp");
    // ...and it ends at the second.
    expect_token_expired(&mut client, secs(8));
    assert!(now_secs() >= second_exp, "closed before the refreshed exp");
}

#[test]
fn a_refresh_with_fewer_rooms_leaves_the_others() {
    // Its own `left` first, then the `welcome` that lists where it is now:
    // with Redis the `left` comes back from Redis after the refresh, and
    // the welcome waits for it.
    let server = hs_server();
    let (mut client, _) = connect(&server, "room=a&room=b", &hs(&claims("u", &["a", "b"])));
    client.send_json(json!({"type": "refresh", "token": hs(&claims("u", &["a"]))}));
    client.wait_for(|e| e["type"] == "left" && e["room"] == "b", secs(5));
    let welcome = client.wait_for(|e| e["type"] == "welcome", secs(5));
    assert_eq!(welcome["rooms"], json!(["a"]));
    client.send_json(json!({"type": "join", "room": "b"}));
    client.wait_for(is_error("forbidden"), secs(5));
}

#[test]
fn without_jwt_options_nothing_changes() {
    let server = TestServer::start();
    let mut client = server.client("room=lobby&token=ignored");
    client.say("lobby", "hello");
    client.send_text("/token whatever");
    client.wait_for(is_error("bad_request"), secs(5));
}
