//! Signed tokens on the gRPC front: `authorization` metadata on each call,
//! `UNAUTHENTICATED` without a good one, `forbidden` error events inside a
//! stream, `PERMISSION_DENIED` for a `Publish` outside the token, and the
//! stream's end at `exp` unless a `Chat` refresh moved it. Real server, a real
//! tonic client, tokens signed here (`auth_support`).

#![cfg(feature = "grpc")]

mod auth_support;
mod common;

use std::time::{Duration, Instant};

use auth_support::*;
use common::{secs, TestServer};
use serde_json::{json, Value};
use switchboard::auth::mint::now_secs;
use switchboard::transport::grpc::proto::chat_request::Action;
use switchboard::transport::grpc::proto::switchboard_client::SwitchboardClient;
use switchboard::transport::grpc::proto::{self, ChatRequest, PublishRequest, SubscribeRequest};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

fn server() -> TestServer {
    TestServer::start_with(|config| {
        config.grpc_addr = Some("127.0.0.1:0".parse().expect("an address"));
        hs256_server(config);
    })
}

struct Grpc {
    runtime: Runtime,
    client: SwitchboardClient<Channel>,
}

/// `message` with `authorization: Bearer token`, if a token is given.
fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("ASCII metadata");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

impl Grpc {
    fn connect(server: &TestServer) -> Grpc {
        let addr = server.server().grpc_addr.expect("the gRPC front is on");
        let runtime = Runtime::new().expect("a tokio runtime for the test client");
        let client = runtime
            .block_on(SwitchboardClient::connect(format!("http://{addr}")))
            .expect("connect to the gRPC front");
        Grpc { runtime, client }
    }

    fn subscribe(&self, rooms: &[&str], token: Option<&str>) -> Result<Events, Status> {
        let request = SubscribeRequest {
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            name: String::new(),
            since: 0,
        };
        let mut client = self.client.clone();
        let stream = self
            .runtime
            .block_on(client.subscribe(with_token(request, token)))?
            .into_inner();
        Ok(Events::new(self, stream))
    }

    fn publish(&self, room: &str, token: Option<&str>) -> Result<proto::PublishSummary, Status> {
        let message = PublishRequest {
            room: room.into(),
            text: "hello".into(),
            from: String::new(),
        };
        let mut client = self.client.clone();
        let outbound = tokio_stream::iter(vec![message]);
        self.runtime
            .block_on(client.publish(with_token(outbound, token)))
            .map(|r| r.into_inner())
    }

    fn chat(&self, token: Option<&str>) -> Result<(mpsc::Sender<ChatRequest>, Events), Status> {
        let (requests, outbound) = mpsc::channel(64);
        let mut client = self.client.clone();
        let request = with_token(ReceiverStream::new(outbound), token);
        let stream = self.runtime.block_on(client.chat(request))?.into_inner();
        Ok((requests, Events::new(self, stream)))
    }
}

fn send(chat: &mpsc::Sender<ChatRequest>, action: Action) {
    chat.try_send(ChatRequest {
        action: Some(action),
    })
    .expect("room in the request queue");
}

#[derive(Debug)]
enum Next {
    Event(proto::Event),
    End,
    Failed(Status),
    TimedOut,
}

struct Events {
    runtime: tokio::runtime::Handle,
    stream: Streaming<proto::Event>,
    seen: Vec<proto::Event>,
}

impl Events {
    fn new(grpc: &Grpc, stream: Streaming<proto::Event>) -> Events {
        Events {
            runtime: grpc.runtime.handle().clone(),
            stream,
            seen: Vec::new(),
        }
    }

    fn next(&mut self, timeout: Duration) -> Next {
        let next = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, self.stream.message()).await });
        match next {
            Err(_) => Next::TimedOut,
            Ok(Ok(Some(event))) => Next::Event(event),
            Ok(Ok(None)) => Next::End,
            Ok(Err(status)) => Next::Failed(status),
        }
    }

    fn wait_for(
        &mut self,
        want: impl Fn(&proto::Event) -> bool,
        timeout: Duration,
    ) -> proto::Event {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next(deadline.saturating_duration_since(Instant::now())) {
                Next::Event(event) if want(&event) => return event,
                Next::Event(event) => self.seen.push(event),
                other => panic!(
                    "awaited event did not come: got {other:?}; seen: {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Reads until the stream ends, or `TimedOut`.
    fn wait_for_end(&mut self, timeout: Duration) -> Next {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next(deadline.saturating_duration_since(Instant::now())) {
                Next::Event(event) => self.seen.push(event),
                other => return other,
            }
        }
    }
}

fn forbidden(event: &proto::Event) -> bool {
    event.r#type == "error" && event.text.starts_with("forbidden")
}

fn expiring(sub: &str, rooms: &[&str], in_secs: u64) -> Value {
    let mut c = claims(sub, rooms);
    c["exp"] = json!(now_secs() + in_secs);
    c
}

#[test]
fn every_call_needs_a_good_token_in_the_metadata() {
    let server = server();
    let grpc = Grpc::connect(&server);
    let status = grpc.subscribe(&["lobby"], None).err().expect("refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    for (what, token) in bad_hs256_tokens() {
        let status = grpc
            .subscribe(&["lobby"], Some(&token))
            .err()
            .expect("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }
    let status = grpc.publish("lobby", None).expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = grpc.chat(None).err().expect("refused");
    assert_eq!(status.code(), Code::Unauthenticated);

    let token = hs(&claims("alice", &["lobby"]));
    let mut events = grpc
        .subscribe(&["lobby"], Some(&token))
        .expect("subscribed");
    events.wait_for(|e| e.r#type == "joined" && e.room == "lobby", secs(5));
    assert_eq!(
        grpc.publish("lobby", Some(&token))
            .expect("published")
            .accepted,
        1
    );
}

#[test]
fn audience_and_issuer_are_checked_when_configured() {
    let server = TestServer::start_with(|config| {
        config.grpc_addr = Some("127.0.0.1:0".parse().expect("an address"));
        aud_iss_server(config);
    });
    let grpc = Grpc::connect(&server);
    let (good, bad) = aud_iss_tokens("alice", &["lobby"]);
    for (what, token) in &bad {
        let status = grpc
            .subscribe(&["lobby"], Some(token))
            .err()
            .expect("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }
    let mut events = grpc.subscribe(&["lobby"], Some(&good)).expect("subscribed");
    events.wait_for(|e| e.r#type == "joined", secs(5));
}

#[test]
fn rooms_outside_the_token_are_forbidden_inside_the_stream() {
    let server = server();
    let grpc = Grpc::connect(&server);
    let mut c = claims("alice", &["team-*"]);
    c["publish"] = json!(["team-a"]);
    c["name"] = json!("Alice");
    let token = hs(&c);
    let mut events = grpc
        .subscribe(&["team-a", "secret"], Some(&token))
        .expect("subscribed");
    events.wait_for(forbidden, secs(5));

    let (chat, mut events) = grpc.chat(Some(&token)).expect("chat");
    let welcome = events.wait_for(|e| e.r#type == "welcome", secs(5));
    assert_eq!(welcome.from, "Alice", "the token's name: {welcome:?}");
    send(&chat, Action::Join("secret".into()));
    events.wait_for(forbidden, secs(5));
    send(&chat, Action::Join("team-b".into()));
    events.wait_for(|e| e.r#type == "joined" && e.room == "team-b", secs(5));
    let say = |room: &str| {
        send(
            &chat,
            Action::Send(proto::Send {
                room: room.into(),
                text: format!("to {room}"),
            }),
        )
    };
    say("team-b");
    events.wait_for(forbidden, secs(5));
    send(&chat, Action::Join("team-a".into()));
    say("team-a");
    events.wait_for(|e| e.r#type == "message" && e.room == "team-a", secs(5));

    let status = grpc
        .publish("team-b", Some(&token))
        .expect_err("outside publish");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // Inside it, the token's name is the sender's.
    grpc.publish("team-a", Some(&token)).expect("published");
    let published = events.wait_for(|e| e.r#type == "message" && e.from_id == "grpc", secs(5));
    assert_eq!(published.from, "Alice");
}

#[test]
fn a_stream_ends_unauthenticated_at_exp() {
    let server = server();
    let grpc = Grpc::connect(&server);
    let exp = now_secs() + 2;
    let token = hs(&expiring("alice", &["lobby"], 2));
    let mut events = grpc
        .subscribe(&["lobby"], Some(&token))
        .expect("subscribed");
    match events.wait_for_end(secs(6)) {
        Next::Failed(status) => {
            assert_eq!(status.code(), Code::Unauthenticated);
            assert_eq!(status.message(), "token expired");
        }
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
    let now = now_secs();
    assert!((exp..=exp + 1).contains(&now), "ended at {now}, exp {exp}");
}

#[test]
fn a_chat_refresh_moves_the_end() {
    let server = server();
    let grpc = Grpc::connect(&server);
    let first_exp = now_secs() + 2;
    let token = hs(&expiring("alice", &["lobby"], 2));
    let (chat, mut events) = grpc.chat(Some(&token)).expect("chat");
    events.wait_for(|e| e.r#type == "welcome", secs(5));
    send(
        &chat,
        Action::Refresh(hs(&expiring("mallory", &["lobby"], 60))),
    );
    events.wait_for(forbidden, secs(5));
    let second_exp = now_secs() + 4;
    send(
        &chat,
        Action::Refresh(hs(&expiring("alice", &["lobby"], 4))),
    );
    events.wait_for(|e| e.r#type == "welcome", secs(5));
    let past_first = Duration::from_secs(first_exp + 1 - now_secs());
    assert!(matches!(events.wait_for_end(past_first), Next::TimedOut));
    match events.wait_for_end(secs(6)) {
        Next::Failed(status) => assert_eq!(status.code(), Code::Unauthenticated),
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
    assert!(now_secs() >= second_exp, "ended before the refreshed exp");
}
