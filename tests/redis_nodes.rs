//! Several nodes on one Redis (`--redis`), with real clients on real sockets
//! and a real `redis-server` per test (`redis_support`): events cross nodes
//! and transports, every member sees the same order, `since` replays from
//! any node and survives every node's restart.

mod common;
mod http_support;

use std::thread;
use std::time::{Duration, Instant};

use common::redis_support::RedisServer;
use common::{secs, Client, Got, TestServer};
use http_support::{get, post_json, Sse};
use serde_json::{json, Value};

/// A node on `redis`, named `name`, once it has subscribed.
fn node(redis: &RedisServer, name: &str) -> TestServer {
    let server = TestServer::start_with(|config| {
        config.redis = Some(redis.url());
        config.node_name = Some(name.into());
        config.send_buffer = 8192; // nobody here is slow
        config.rate_limit = None;
        #[cfg(feature = "grpc")]
        {
            config.grpc_addr = Some("127.0.0.1:0".parse().expect("an address"));
        }
    });
    wait_healthy(&server, 200);
    server
}

/// Waits until `/healthz` answers `status`.
fn wait_healthy(server: &TestServer, status: u16) {
    let deadline = Instant::now() + secs(10);
    loop {
        let health = get(server.http, "/healthz");
        if health.status == status {
            return;
        }
        assert!(Instant::now() < deadline, "healthz stayed {health:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A member's messages: (id, text), in the order they came.
type Seen = Vec<(u64, String)>;

/// Reads `client` until it has `count` messages (after those in `seen`).
fn messages(client: &mut Client, mut seen: Seen, count: usize, who: &str) -> Seen {
    let deadline = Instant::now() + secs(60);
    while seen.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let Got::Text(text) = client.next(left) else {
            panic!("{who}: {} of {count} came", seen.len());
        };
        let event: Value = serde_json::from_str(&text).expect("JSON");
        assert_ne!(event["type"], "error", "{who}: {event}");
        if event["type"] == "message" {
            seen.push(message(&event));
        }
    }
    seen
}

fn message(event: &Value) -> (u64, String) {
    (
        event["id"].as_u64().expect("an id"),
        event["text"].as_str().expect("a text").to_owned(),
    )
}

/// The messages already read while waiting for something else.
fn drained(client: &mut Client) -> Seen {
    client
        .seen
        .drain(..)
        .filter(|e| e["type"] == "message")
        .map(|e| message(&e))
        .collect()
}

fn assert_in_id_order_once(seen: &Seen, who: &str) {
    for pair in seen.windows(2) {
        assert!(pair[0].0 < pair[1].0, "{who}: out of order: {pair:?}");
    }
}

#[test]
fn a_message_on_one_node_reaches_every_transport_on_every_node() {
    let redis = RedisServer::start();
    let (a, b, c) = (node(&redis, "a"), node(&redis, "b"), node(&redis, "c"));
    let mut ws_b = b.client("room=lobby&name=bob");
    ws_b.wait_for(|e| e["type"] == "joined" && e["name"] == "bob", secs(10));
    let mut sse_b = Sse::connect(b.http, "/events?room=lobby&name=sse", &[]);
    assert_eq!(sse_b.status, 200);
    sse_b.wait_seated("sse", &["lobby"], secs(10));
    let mut ws_c = c.client("room=lobby&name=carol");
    ws_c.wait_for(|e| e["type"] == "joined" && e["name"] == "carol", secs(10));
    #[cfg(feature = "grpc")]
    let mut grpc_c = grpc::Subscriber::connect(&c, "lobby");
    let mut ws_a = a.client("room=lobby&name=alice");
    // alice's own `joined`, from node A, reaches node B: both are subscribed.
    ws_b.wait_for(|e| e["type"] == "joined" && e["name"] == "alice", secs(10));

    let said = ws_a.say("lobby", "hello from A");
    let id = said["id"].as_u64().expect("an id");
    let on_b = ws_b.wait_for(|e| e["text"] == "hello from A", secs(10));
    let on_sse = sse_b.wait_for_data(|d| d["text"] == "hello from A", secs(10));
    let on_c = ws_c.wait_for(|e| e["text"] == "hello from A", secs(10));
    for got in [&on_b, &on_sse, &on_c] {
        assert_eq!(got["id"].as_u64(), Some(id), "one id everywhere: {got}");
        assert_eq!(got["from"], "alice");
    }
    #[cfg(feature = "grpc")]
    assert_eq!(grpc_c.wait_for_text("hello from A"), id);

    let resp = post_json(
        c.http,
        "/rooms/lobby/messages",
        &json!({"text": "rest on C"}),
    );
    assert_eq!(resp.status, 202, "{resp:?}");
    let rest_id = resp.json()["id"].as_u64().expect("an id");
    assert!(rest_id > id, "ids increase across the hub");
    let on_a = ws_a.wait_for(|e| e["text"] == "rest on C", secs(10));
    assert_eq!(on_a["id"].as_u64(), Some(rest_id));
}

#[test]
fn three_nodes_ten_publishers_each_every_member_gets_all_3000_once_in_the_same_order() {
    const PUBLISHERS: usize = 10;
    const EACH: usize = 100;
    const ALL: usize = 3 * PUBLISHERS * EACH;
    let redis = RedisServer::start();
    let nodes: Vec<TestServer> = ["a", "b", "c"].iter().map(|n| node(&redis, n)).collect();
    // A listener and an SSE stream on each node, besides the publishers.
    let mut listeners: Vec<Client> = nodes
        .iter()
        .map(|n| n.client("room=load&name=listener"))
        .collect();
    let mut streams: Vec<Sse> = nodes
        .iter()
        .enumerate()
        .map(|(n, node)| {
            let name = format!("stream-{n}");
            let mut stream =
                Sse::connect(node.http, &format!("/events?room=load&name={name}"), &[]);
            stream.wait_seated(&name, &["load"], secs(10));
            stream
        })
        .collect();
    let mut publishers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for p in 0..PUBLISHERS {
            let name = format!("pub-{n}-{p}");
            let client = node.client(&format!("room=load&name={name}"));
            publishers.push((name, client));
        }
    }
    // Everyone is seated once every publisher's `joined` reached every node.
    for listener in &mut listeners {
        let joined = |e: &Value| {
            e["type"] == "joined" && e["name"].as_str().is_some_and(|n| n.starts_with("pub-"))
        };
        while listener.seen.iter().filter(|e| joined(e)).count() < 3 * PUBLISHERS {
            let event = listener.event(secs(10));
            listener.seen.push(event);
        }
        listener.seen.clear();
    }
    let threads: Vec<_> = publishers
        .into_iter()
        .map(|(name, mut client)| {
            thread::spawn(move || {
                for m in 0..EACH {
                    let text = format!("{name}-{m}");
                    client.send_json(json!({"type": "message", "room": "load", "text": text}));
                }
                let seen = drained(&mut client);
                messages(&mut client, seen, ALL, &name)
            })
        })
        .collect();
    let mut orders: Vec<(String, Seen)> = Vec::new();
    for (n, listener) in listeners.iter_mut().enumerate() {
        let seen = drained(listener);
        orders.push((
            format!("listener on {n}"),
            messages(listener, seen, ALL, "listener"),
        ));
    }
    for (n, stream) in streams.iter_mut().enumerate() {
        let mut seen = Vec::new();
        while seen.len() < ALL {
            let data = stream.wait_for_data(|d| d["type"] == "message", secs(60));
            seen.push(message(&data));
        }
        orders.push((format!("SSE on {n}"), seen));
    }
    for (n, thread) in threads.into_iter().enumerate() {
        orders.push((format!("publisher {n}"), thread.join().expect("publisher")));
    }
    let (_, reference) = &orders[0];
    assert_in_id_order_once(reference, "reference");
    let mut texts: Vec<&String> = reference.iter().map(|(_, t)| t).collect();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), ALL, "all {ALL}, each once");
    for (who, seen) in &orders {
        assert_eq!(seen, reference, "{who}: the same events in the same order");
    }
}

#[test]
fn since_replays_from_another_node_while_publishing_goes_on_and_after_every_node_restarted() {
    const COUNT: usize = 300;
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut watcher = a.client("room=r&name=watcher");
    let mut publisher = a.client("room=r&name=pub");
    let flood = thread::spawn(move || {
        for n in 0..COUNT {
            let text = format!("m{n}");
            publisher.send_json(json!({"type": "message", "room": "r", "text": text}));
        }
        publisher
    });
    let first = watcher.wait_for(|e| e["text"] == "m100", secs(30));
    let since = first["id"].as_u64().expect("an id");
    // On node B, while node A still publishes.
    let mut late = b.client(&format!("room=r&name=late&since={since}"));
    let mut reference = drained(&mut watcher);
    reference.push((since, "m100".into()));
    let reference = messages(&mut watcher, reference, COUNT, "watcher");
    let after: Seen = reference
        .iter()
        .filter(|(id, _)| *id > since)
        .cloned()
        .collect();
    let replayed = messages(&mut late, Vec::new(), after.len(), "late");
    assert_eq!(replayed, after, "backlog then live: no gap, no duplicate");
    let _publisher = flood.join().expect("publisher");

    // Every node restarts: history is in Redis, not in them.
    drop((watcher, late, _publisher));
    drop((a, b));
    let (a, c) = (node(&redis, "a2"), node(&redis, "c"));
    let mut again = c.client(&format!("room=r&name=again&since={since}"));
    let replayed = messages(&mut again, Vec::new(), after.len(), "after the restart");
    assert_eq!(
        replayed, after,
        "the same replay after every node restarted"
    );
    let history = get(
        a.http,
        &format!("/rooms/r/messages?since={since}&limit=1000"),
    )
    .json();
    let texts: Vec<&str> = history
        .as_array()
        .expect("an array")
        .iter()
        .filter(|e| e["type"] == "message")
        .filter_map(|e| e["text"].as_str())
        .collect();
    let expected: Vec<&str> = after.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, expected, "REST history from another new node");
}

/// A gRPC subscriber, with a runtime of its own (feature `grpc`).
#[cfg(feature = "grpc")]
mod grpc {
    use std::time::Instant;

    use super::common::{secs, TestServer};
    use switchboard::transport::grpc::proto::switchboard_client::SwitchboardClient;
    use switchboard::transport::grpc::proto::{Event, SubscribeRequest};
    use tokio::runtime::Runtime;
    use tonic::Streaming;

    pub struct Subscriber {
        runtime: Runtime,
        stream: Streaming<Event>,
    }

    impl Subscriber {
        pub fn connect(server: &TestServer, room: &str) -> Subscriber {
            let addr = server.server().grpc_addr.expect("the gRPC front is on");
            let runtime = Runtime::new().expect("a runtime for the test client");
            let request = SubscribeRequest {
                rooms: vec![room.into()],
                name: "grpc".into(),
                since: 0,
            };
            let stream = runtime.block_on(async {
                let mut client = SwitchboardClient::connect(format!("http://{addr}"))
                    .await
                    .expect("connect");
                client
                    .subscribe(request)
                    .await
                    .expect("subscribe")
                    .into_inner()
            });
            let mut subscriber = Subscriber { runtime, stream };
            // Seated once its own `joined` is back: owed all that follows.
            subscriber.wait_for(|e| e.r#type == "joined" && e.from == "grpc");
            subscriber
        }

        /// Waits for a message with `text`; returns its id.
        pub fn wait_for_text(&mut self, text: &str) -> u64 {
            self.wait_for(|e| e.text == text).id
        }

        /// Waits for an event that matches.
        fn wait_for(&mut self, want: impl Fn(&Event) -> bool) -> Event {
            let deadline = Instant::now() + secs(10);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let next = self
                    .runtime
                    .block_on(async { tokio::time::timeout(left, self.stream.message()).await });
                match next {
                    Ok(Ok(Some(event))) if want(&event) => return event,
                    Ok(Ok(Some(_))) => continue,
                    other => panic!("gRPC: the awaited event did not come: {other:?}"),
                }
            }
        }
    }
}

#[test]
fn join_notices_max_counts_members_on_every_node_and_presence_stays_exact() {
    let redis = RedisServer::start();
    let small = |name: &str| {
        let server = TestServer::start_with(|config| {
            config.redis = Some(redis.url());
            config.node_name = Some(name.into());
            config.join_notices_max = 2;
        });
        wait_healthy(&server, 200);
        server
    };
    let (a, b) = (small("a"), small("b"));
    let names = |server: &TestServer| {
        let detail = get(server.http, "/rooms/big").json();
        let mut names: Vec<String> = detail["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|m| m["name"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let mut bob = b.client("room=big&name=bob");
    bob.wait_for(|e| e["type"] == "joined" && e["name"] == "bob", secs(10));
    let _alice = a.client("room=big&name=alice");
    bob.wait_for(|e| e["type"] == "joined" && e["name"] == "alice", secs(10));
    let deadline = Instant::now() + secs(10);
    while names(&a) != ["alice", "bob"] {
        assert!(Instant::now() < deadline, "{:?}", names(&a));
        thread::sleep(Duration::from_millis(20));
    }
    // A third member, on node A: two are on the room already, across nodes,
    // so its join is not announced; presence lists it everywhere all the same.
    let carol = a.client("room=big&name=carol");
    let deadline = Instant::now() + secs(10);
    while names(&b) != ["alice", "bob", "carol"] {
        assert!(Instant::now() < deadline, "{:?}", names(&b));
        thread::sleep(Duration::from_millis(20));
    }
    bob.say("big", "after carol");
    assert!(
        !bob.seen.iter().any(|e| e["name"] == "carol"),
        "no notice past --join-notices-max: {:?}",
        bob.seen
    );
    drop(carol);
    let deadline = Instant::now() + secs(10);
    while names(&b) != ["alice", "bob"] {
        assert!(Instant::now() < deadline, "{:?}", names(&b));
        thread::sleep(Duration::from_millis(20));
    }
}
