//! Presence across nodes, with node processes of their own (one is killed
//! with SIGKILL) on a real `redis-server`: `who`, `rooms`, `GET /rooms` and
//! `GET /rooms/{room}` list the members of every node with their `node`,
//! and a node that dies without a goodbye leaves presence, with `left`
//! notices for its members, within three heartbeats; one stopped with
//! SIGTERM leaves at once; a `nick` shows on every node.

mod common;
mod http_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::redis_support::RedisServer;
use common::{secs, Client};
use http_support::get;
use serde_json::{json, Value};

/// A switchboard process on Redis, stopped by its PID when dropped.
struct Node {
    child: Child,
    http: SocketAddr,
    ws: SocketAddr,
}

impl Node {
    fn start(redis: &RedisServer, name: &str, heartbeat: &str) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["--http", "127.0.0.1:0", "--ws", "127.0.0.1:0"])
            .args(["--redis", &redis.url(), "--node-name", name])
            .args(["--heartbeat", heartbeat])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the switchboard binary starts");
        let stdout = child.stdout.take().expect("its stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = |kind: &str| -> SocketAddr {
            let line = lines.next().expect("a listening line").expect("utf-8");
            line.strip_prefix(&format!("listening {kind} "))
                .unwrap_or_else(|| panic!("expected 'listening {kind} ADDR', got {line:?}"))
                .parse()
                .expect("an address")
        };
        let (http, ws) = (addr("http"), addr("ws"));
        let node = Node { child, http, ws };
        let deadline = Instant::now() + secs(10);
        while get(node.http, "/healthz").status != 200 {
            assert!(Instant::now() < deadline, "{name} reaches redis");
            thread::sleep(Duration::from_millis(20));
        }
        node
    }

    fn client(&self, query: &str) -> Client {
        let mut client = Client::connect(&format!("ws://{}/ws?{query}", self.ws));
        client.wait_for(|e| e["type"] == "welcome", secs(5));
        client
    }

    /// SIGTERM, by its PID, as an operator stops it; waits (10 s at most)
    /// for it to exit, and returns whether it exited 0.
    fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let deadline = Instant::now() + secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("its status") {
                return status.success();
            }
            assert!(Instant::now() < deadline, "the node exits after SIGTERM");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, by its PID: no goodbye to anyone.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `GET /rooms/{room}`'s members as (name, node), sorted.
fn members(node: &Node, room: &str) -> Vec<(String, String)> {
    let detail = get(node.http, &format!("/rooms/{room}")).json();
    let mut members: Vec<(String, String)> = detail["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap().into(),
                        m["node"].as_str().unwrap().into(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    members.sort();
    members
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn presence_lists_every_nodes_members_and_a_killed_node_leaves_within_three_heartbeats() {
    const HEARTBEAT: f64 = 1.0;
    let redis = RedisServer::start();
    let a = Node::start(&redis, "a", "1");
    let b = Node::start(&redis, "b", "1");
    let mut c = Node::start(&redis, "c", "1");
    let mut alice = a.client("room=lobby&name=alice");
    let _bob = b.client("room=lobby&name=bob");
    let _carol = c.client("room=lobby&room=dev&name=carol");
    let everyone = pairs(&[("alice", "a"), ("bob", "b"), ("carol", "c")]);
    wait_until("every node lists every member", || {
        [&a, &b, &c].iter().all(|n| members(n, "lobby") == everyone)
    });

    // `who` and `rooms` on a WebSocket, `GET /rooms` over REST.
    alice.send_json(json!({"type": "who", "room": "lobby"}));
    let who = alice.wait_for(|e| e["type"] == "presence", secs(5));
    let mut listed: Vec<(String, String)> = who["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().into(),
                m["node"].as_str().unwrap().into(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(listed, everyone, "{who}");
    alice.send_json(json!({"type": "rooms"}));
    let rooms = alice.wait_for(|e| e["type"] == "rooms", secs(5));
    assert_eq!(
        rooms["rooms"],
        json!([{"name": "dev", "members": 1}, {"name": "lobby", "members": 3}])
    );
    let listed = get(b.http, "/rooms").json();
    let counts: Vec<(&str, u64)> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["members"].as_u64().unwrap()))
        .collect();
    assert_eq!(counts, [("dev", 1), ("lobby", 3)]);

    // Node C dies without a goodbye: its member leaves, with a `left`.
    let killed = Instant::now();
    c.kill();
    let left = alice.wait_for(|e| e["type"] == "left" && e["name"] == "carol", secs(10));
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs_f64(3.0 * HEARTBEAT),
        "left after {took:?}, more than three heartbeats"
    );
    assert!(
        left["id"].as_u64().is_some(),
        "a room event with an id: {left}"
    );
    let two = pairs(&[("alice", "a"), ("bob", "b")]);
    wait_until("node c's member is gone everywhere", || {
        members(&a, "lobby") == two && members(&b, "lobby") == two
    });
    // Nobody left in dev; it lives on as history, as a room in memory does.
    assert_eq!(get(a.http, "/rooms/dev").json()["members"], json!([]));
    let _: Value = alice.say("lobby", "still here");
}

#[test]
fn presence_comes_back_when_redis_restarts_empty() {
    let mut redis = RedisServer::start();
    let a = Node::start(&redis, "a", "1");
    let b = Node::start(&redis, "b", "1");
    let _alice = a.client("room=lobby&name=alice");
    let _bob = b.client("room=lobby&name=bob");
    let both = pairs(&[("alice", "a"), ("bob", "b")]);
    wait_until("both nodes list both members", || {
        members(&a, "lobby") == both && members(&b, "lobby") == both
    });
    redis.kill();
    redis.restart(); // empty: every presence hash is gone
    for node in [&a, &b] {
        wait_until("back on redis", || get(node.http, "/healthz").status == 200);
    }
    wait_until("each node announced its members again", || {
        members(&a, "lobby") == both && members(&b, "lobby") == both
    });
    assert_eq!(redis.command("HLEN switchboard:presence:lobby"), ":2\r\n");
}

#[test]
fn a_node_stopped_with_sigterm_leaves_presence_at_once_with_left_notices() {
    // Heartbeats a minute apart: reaping would take minutes, so a `left`
    // within seconds is the stopping node's own goodbye.
    let redis = RedisServer::start();
    let a = Node::start(&redis, "a", "60");
    let mut b = Node::start(&redis, "b", "60");
    let mut alice = a.client("room=lobby&name=alice");
    let _bob = b.client("room=lobby&room=dev&name=bob");
    let both = pairs(&[("alice", "a"), ("bob", "b")]);
    wait_until("both nodes list both members", || {
        members(&a, "lobby") == both && members(&b, "lobby") == both
    });

    let stopped = Instant::now();
    assert!(b.terminate(), "node b exits 0 on SIGTERM");
    let left = alice.wait_for(|e| e["type"] == "left" && e["name"] == "bob", secs(5));
    assert!(
        left["id"].as_u64().is_some(),
        "a room event with an id: {left}"
    );
    assert!(
        stopped.elapsed() < secs(10),
        "left {:?} after the stop",
        stopped.elapsed()
    );
    assert_eq!(members(&a, "lobby"), pairs(&[("alice", "a")]));
    assert_eq!(get(a.http, "/rooms/dev").json()["members"], json!([]));
    // One `left` for bob in lobby's history, not one now and one reaped.
    let history = get(a.http, "/rooms/lobby/messages").json();
    let lefts = history
        .as_array()
        .expect("a list")
        .iter()
        .filter(|e| e["type"] == "left" && e["name"] == "bob")
        .count();
    assert_eq!(lefts, 1, "{history}");
}

#[test]
fn a_nick_changes_the_name_every_node_shows() {
    let redis = RedisServer::start();
    let a = Node::start(&redis, "a", "1");
    let b = Node::start(&redis, "b", "1");
    let mut alice = a.client("room=lobby&room=dev&name=alice");
    let mut bob = b.client("room=lobby&name=bob");
    wait_until("b lists alice", || {
        members(&b, "lobby") == pairs(&[("alice", "a"), ("bob", "b")])
    });

    alice.send_json(json!({"type": "nick", "name": "alicia"}));
    alice.wait_for(|e| e["type"] == "welcome" && e["name"] == "alicia", secs(5));
    wait_until("b shows the new name in both rooms", || {
        members(&b, "lobby") == pairs(&[("alicia", "a"), ("bob", "b")])
            && members(&b, "dev") == pairs(&[("alicia", "a")])
    });
    bob.send_json(json!({"type": "who", "room": "lobby"}));
    let who = bob.wait_for(|e| e["type"] == "presence", secs(5));
    let names: Vec<&str> = who["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(
        names.contains(&"alicia") && !names.contains(&"alice"),
        "{who}"
    );

    // A node that starts later reads the new name from Redis' hashes.
    let c = Node::start(&redis, "c", "1");
    wait_until("c shows the new name", || {
        members(&c, "lobby") == pairs(&[("alicia", "a"), ("bob", "b")])
    });
}
