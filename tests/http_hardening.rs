//! Issue 17: no request can crash or freeze the HTTP side. Each test sends
//! what an attacker sent, over a raw socket, while a healthy client checks
//! that the server still does its job.

mod common;
mod http_support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{handshake_request, secs, TestServer};
use http_support::{get, parse_prometheus, post_json, sample, Sse};
use serde_json::json;

/// A raw HTTP connection, for requests no well-behaved client would send.
struct Raw {
    stream: TcpStream,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(secs(10))).expect("timeout");
        Raw { stream }
    }

    /// Writes `bytes`; a server that already closed is not an error here.
    fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Reads until the end of a response head and returns its status.
    fn status(&mut self) -> Option<u16> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match self.stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&head);
        text.split(' ').nth(1)?.parse().ok()
    }

    /// Whether the server closes the connection within `within` (EOF or a
    /// reset), reading and discarding whatever else it sends first.
    fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut sink = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.stream.set_read_timeout(Some(left)).expect("timeout");
            match self.stream.read(&mut sink) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false
                }
                Err(_) => return true, // reset
            }
        }
    }
}

/// `/healthz` answers 200 within `within`, on a fresh connection.
fn healthy_within(addr: SocketAddr, within: Duration) -> bool {
    let (done, answer) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let _ = done.send(get(addr, "/healthz").status);
    });
    answer.recv_timeout(within) == Ok(200)
}

fn metric(server: &TestServer, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = get(server.http, "/metrics").body;
    sample(&parse_prometheus(&text), name, labels).unwrap_or(0.0)
}

/// Waits until `check` holds, or fails saying what was awaited.
fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A WebSocket member of `room` who must see `text` arrive.
fn assert_ws_still_delivers(server: &TestServer, room: &str) {
    let mut alice = server.client(&format!("room={room}&name=alice"));
    alice.wait_for(|e| e["type"] == "joined", secs(5));
    let reply = post_json(
        server.http,
        &format!("/rooms/{room}/messages"),
        &json!({"text": "still here", "from": "ops"}),
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    alice.wait_for(|e| e["text"] == "still here", secs(5));
}

#[test]
fn issue_17_a_huge_content_length_neither_aborts_nor_kills_a_worker() {
    let server = TestServer::start();
    let mut bob = server.client("room=lobby&name=bob");
    bob.wait_for(|e| e["type"] == "joined", secs(5));
    for length in ["50000000000", "18446744073709551615"] {
        // More times than there used to be workers: each panic took one.
        for _ in 0..6 {
            for (method, path) in [("GET", "/healthz"), ("POST", "/rooms/x/messages")] {
                let mut raw = Raw::connect(server.http);
                raw.send(
                    format!(
                        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
                         Content-Length: {length}\r\n\r\nhello"
                    )
                    .as_bytes(),
                );
                let status = raw.status();
                assert!(
                    status.is_some(),
                    "{method} {path} with {length} got no answer"
                );
                assert!(
                    raw.closed_within(secs(5)),
                    "{method} {path}: a body that is never drained must close the connection"
                );
            }
        }
    }
    assert!(healthy_within(server.http, secs(5)));
    assert_ws_still_delivers(&server, "lobby");
}

#[test]
fn issue_17_slow_posts_hold_only_their_own_connection() {
    let server = TestServer::start_with(|c| c.request_timeout = secs(5));
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut raw = Raw::connect(server.http);
        raw.send(
            b"POST /rooms/x/messages HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
              Content-Length: 5000\r\n\r\n",
        );
        raw.send(&[b'a'; 100]);
        slow.push(raw);
    }
    // While eight bodies are stuck, the rest of HTTP answers at once.
    let started = Instant::now();
    assert!(healthy_within(server.http, secs(3)), "/healthz froze");
    assert_eq!(get(server.http, "/rooms").status, 200);
    let mut sse = Sse::connect(server.http, "/events?room=lobby", &[]);
    assert_eq!(sse.status, 200);
    sse.wait_for_data(|d| d["type"] == "joined", secs(2));
    assert!(started.elapsed() < secs(4), "took {:?}", started.elapsed());
    // And each slow request ends at the request deadline: 408, then closed.
    for raw in &mut slow {
        assert_eq!(raw.status(), Some(408));
        assert!(raw.closed_within(secs(3)));
    }
}

#[test]
fn issue_17_idle_http_connections_are_counted_bounded_and_timed_out() {
    // Long enough a deadline that counting them, on a loaded machine, is
    // over before the first one times out.
    let server = TestServer::start_with(|c| {
        c.request_timeout = secs(6);
        c.max_http_connections = 20;
    });
    let metrics = server.server().metrics();
    let idle: Vec<Raw> = (0..20).map(|_| Raw::connect(server.http)).collect();
    wait_until("20 idle HTTP connections counted", secs(5), || {
        metrics.http_connections() == 20
    });
    // Past the bound: a clear refusal, not a thread.
    let mut over = Raw::connect(server.http);
    over.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(over.status(), Some(503));
    // Each idle socket is closed at the request deadline, and the slots return.
    for mut raw in idle {
        assert!(
            raw.closed_within(secs(12)),
            "an idle connection stayed open"
        );
    }
    wait_until("the slots to come back", secs(5), || {
        metrics.http_connections() == 0
    });
    // Both figures are exported: the scrape's own connection is the one open.
    assert_eq!(metric(&server, "switchboard_http_connections", &[]), 1.0);
    assert!(
        metric(
            &server,
            "switchboard_connections_refused_total",
            &[("reason", "http_limit")]
        ) >= 1.0
    );
}

#[test]
fn issue_17_a_trickle_cannot_stretch_a_request_past_its_deadline() {
    let server = TestServer::start_with(|c| c.request_timeout = secs(1));
    for addr in [server.http, server.ws] {
        let mut raw = Raw::connect(addr);
        let started = Instant::now();
        // One byte of a head every 200 ms: every single read is quick.
        let head = b"GET /healthz HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for &byte in head.iter() {
            if !raw.send(&[byte]) || started.elapsed() > secs(4) {
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
        assert!(
            raw.closed_within(secs(3)),
            "{addr}: the trickle kept its connection"
        );
        assert!(
            started.elapsed() < secs(5),
            "{addr}: closed after {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn issue_17_sse_subscribers_at_the_limit_leave_healthz_and_metrics_reachable() {
    let server = TestServer::start_with(|c| c.max_connections = 3);
    let streams: Vec<Sse> = (0..3)
        .map(|_| {
            let sse = Sse::connect(server.http, "/events?room=lobby", &[]);
            assert_eq!(sse.status, 200);
            sse
        })
        .collect();
    let refused = Sse::connect(server.http, "/events?room=lobby", &[]);
    assert_eq!(
        refused.status, 503,
        "a fourth subscriber is over --max-connections"
    );
    assert_eq!(get(server.http, "/healthz").status, 200);
    assert_eq!(get(server.http, "/metrics").status, 200);
    drop(streams);
}

#[test]
fn issue_17_request_heads_are_bounded() {
    let server = TestServer::start();
    let long_url = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(1 << 20));
    let long_header = format!(
        "GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "b".repeat(100_000)
    );
    let many_headers = format!(
        "GET /healthz HTTP/1.1\r\n{}\r\n",
        (0..10_000)
            .map(|n| format!("X-{n}: v\r\n"))
            .collect::<String>()
    );
    for (what, request, want) in [
        ("a 1 MB URL", long_url, 414),
        ("a 100 KB header", long_header, 431),
        ("10,000 headers", many_headers, 431),
    ] {
        let mut raw = Raw::connect(server.http);
        let writer = raw.stream.try_clone().expect("clone");
        let sending = thread::spawn(move || {
            let _ = (&writer).write_all(request.as_bytes()); // refused midway is fine
        });
        assert_eq!(raw.status(), Some(want), "{what}");
        assert!(raw.closed_within(secs(5)), "{what}: not closed");
        let _ = sending.join();
    }
    // A header line that never ends is cut at the limit, not buffered.
    let mut endless = Raw::connect(server.http);
    endless.send(b"GET /healthz HTTP/1.1\r\nX-Endless: ");
    let mut sent = 0usize;
    while sent < 100 << 20 && endless.send(&[b'z'; 64 * 1024]) {
        sent += 64 * 1024;
    }
    assert!(
        sent < 50 << 20,
        "the server read {sent} bytes of one header line"
    );
    assert!(healthy_within(server.http, secs(5)));
}

#[test]
fn issue_17_a_refused_body_is_not_read_and_the_connection_closes() {
    let server = TestServer::start();
    let mut raw = Raw::connect(server.http);
    raw.send(
        b"POST /rooms/x/messages HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
          Content-Length: 104857600\r\n\r\n",
    );
    let writer = raw.stream.try_clone().expect("clone");
    let sending = thread::spawn(move || {
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0usize;
        while sent < 100 << 20 && (&writer).write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        sent
    });
    assert_eq!(raw.status(), Some(413));
    assert!(raw.closed_within(secs(5)));
    let sent = sending.join().expect("sender");
    assert!(
        sent < 50 << 20,
        "the server took {sent} bytes of a refused body"
    );
    assert!(healthy_within(server.http, secs(5)));
}

#[test]
fn issue_17_a_dropped_sse_stream_is_closed_and_uncounted() {
    let server = TestServer::start_with(|c| c.send_buffer = 8);
    let mut stalled = Raw::connect(server.http);
    stalled
        .stream
        .set_read_timeout(Some(secs(1)))
        .expect("timeout");
    // A small receive buffer: the server's writes back up sooner.
    stalled.send(b"GET /events?room=flood HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(stalled.status(), Some(200));
    let text = "x".repeat(60_000);
    wait_until("the stalled stream to be dropped as slow", secs(20), || {
        post_json(
            server.http,
            "/rooms/flood/messages",
            &json!({"text": text, "from": "flood"}),
        );
        metric(
            &server,
            "switchboard_slow_consumers_dropped_total",
            &[("transport", "sse")],
        ) >= 1.0
    });
    // The server ends the stream: what was sent can be read, then EOF.
    assert!(
        stalled.closed_within(secs(10)),
        "the dropped stream stayed open"
    );
    wait_until(
        "the dropped stream to leave the connection count",
        secs(5),
        || metric(&server, "switchboard_connections", &[("transport", "sse")]) == 0.0,
    );
}

#[test]
fn issue_17_content_length_with_transfer_encoding_is_refused_not_smuggled() {
    let server = TestServer::start();
    let smuggled = "POST /rooms/smuggled/messages HTTP/1.1\r\nHost: x\r\n\
                    Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nowned";
    let attacks = [
        format!(
            "POST /rooms/x/messages HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
             Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /rooms/x/messages HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
             Content-Length: 2\r\nContent-Length: 40\r\n\r\nhi{smuggled}"
        ),
        format!(
            "POST /rooms/x/messages HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
             Content-Length: 2\r\n Transfer-Encoding: chunked\r\n\r\nhi{smuggled}"
        ),
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello{smuggled}"),
    ];
    for attack in attacks {
        let mut raw = Raw::connect(server.http);
        raw.send(attack.as_bytes());
        assert_eq!(raw.status(), Some(400), "{attack:?}");
        assert!(raw.closed_within(secs(5)), "{attack:?}: kept open");
    }
    assert_eq!(
        get(server.http, "/rooms/smuggled").status,
        404,
        "a smuggled POST ran"
    );
    // One Content-Length said twice the same way is fine (RFC 9110 8.6).
    let mut raw = Raw::connect(server.http);
    raw.send(
        b"POST /rooms/x/messages HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
          Content-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
    );
    assert_eq!(raw.status(), Some(202));
}

#[test]
fn issue_17_a_ws_handshake_flood_of_headers_is_refused() {
    let server = TestServer::start();
    let mut raw = Raw::connect(server.ws);
    let extra = format!("X-Pad: {}\r\n", "p".repeat(20_000));
    raw.send(handshake_request("/ws", &extra).as_bytes());
    assert_eq!(raw.status(), Some(431));
}

#[test]
fn issue_17_a_chunked_body_cut_short_is_refused_not_published() {
    let server = TestServer::start();
    for body in ["a\r\nhello", "ffffffffffff\r\nhello"] {
        let mut raw = Raw::connect(server.http);
        raw.send(
            format!(
                "POST /rooms/cut/messages HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{body}"
            )
            .as_bytes(),
        );
        raw.stream
            .shutdown(std::net::Shutdown::Write)
            .expect("half-close");
        assert_eq!(raw.status(), Some(400), "{body:?}");
    }
    assert_eq!(
        get(server.http, "/rooms/cut").status,
        404,
        "a partial body was published"
    );
}

#[test]
fn issue_17_a_request_in_a_version_we_do_not_speak_is_answered_and_closed() {
    let server = TestServer::start();
    for version in ["HTTP/2.0", "HTTP/3.0"] {
        let mut raw = Raw::connect(server.http);
        raw.send(format!("GET /healthz {version}\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(raw.status(), Some(505), "{version}");
        assert!(raw.closed_within(secs(5)), "{version}: kept open");
    }
}

#[test]
fn issue_17_refusals_past_the_http_limit_are_prompt_even_for_silent_peers() {
    let server = TestServer::start_with(|c| c.max_http_connections = 5);
    let _held: Vec<Raw> = (0..5).map(|_| Raw::connect(server.http)).collect();
    wait_until("five held connections", secs(5), || {
        server.server().metrics().http_connections() == 5
    });
    // Forty peers that connect and say nothing, then one that asks.
    let silent: Vec<Raw> = (0..40).map(|_| Raw::connect(server.http)).collect();
    let started = Instant::now();
    let mut asking = Raw::connect(server.http);
    asking.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(asking.status(), Some(503));
    for mut raw in silent {
        assert_eq!(raw.status(), Some(503));
    }
    assert!(
        started.elapsed() < secs(5),
        "refusals took {:?}",
        started.elapsed()
    );
}
