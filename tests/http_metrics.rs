//! `GET /metrics`, parsed as Prometheus text, moving with real connections.

mod common;
mod http_support;

use std::time::{Duration, Instant};

use common::{secs, TestServer};
use http_support::{get, parse_prometheus, post_json, request, sample, Sse};
use serde_json::json;

type Samples = Vec<http_support::Sample>;

fn scrape(server: &TestServer) -> Samples {
    let resp = get(server.http, "/metrics");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse_prometheus(&resp.body)
}

fn connections(samples: &Samples, transport: &str) -> Option<f64> {
    sample(
        samples,
        "switchboard_connections",
        &[("transport", transport)],
    )
}

/// Scrapes until `want` holds; panics with the last scrape after `timeout`.
fn eventually(server: &TestServer, what: &str, want: impl Fn(&Samples) -> bool, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let samples = scrape(server);
        if want(&samples) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never held; last scrape: {samples:?}"
        );
        std::thread::sleep(Duration::from_millis(20)); // polling an endpoint, with a deadline
    }
}

/// Scrapes until `switchboard_events_out_total` is `count`, and returns that
/// scrape: the hub counts a room's deliveries when its loop over the members
/// ends, and a reader may see its event before that.
fn events_out_at(server: &TestServer, count: f64) -> Samples {
    let out = |s: &Samples| sample(s, "switchboard_events_out_total", &[]);
    eventually(
        server,
        &format!("{count} events out"),
        |s| out(s) == Some(count),
        secs(5),
    );
    scrape(server)
}

#[test]
fn every_series_exists_at_zero_from_the_start() {
    let server = TestServer::start();
    let samples = scrape(&server);
    for transport in ["ws", "sse", "grpc"] {
        assert_eq!(
            connections(&samples, transport),
            Some(0.0),
            "{transport} connections"
        );
        assert_eq!(
            sample(
                &samples,
                "switchboard_slow_consumers_dropped_total",
                &[("transport", transport)]
            ),
            Some(0.0),
            "{transport} slow consumers"
        );
    }
    for name in [
        "switchboard_events_in_total",
        "switchboard_events_out_total",
        "switchboard_events_written_through_total",
        "switchboard_rooms",
        "switchboard_rooms_refused_total",
        "switchboard_rooms_expired_total",
        "switchboard_history_events",
        "switchboard_history_bytes",
        "switchboard_history_evicted_total",
        "switchboard_members_lagging",
        "switchboard_join_waits_total",
    ] {
        assert_eq!(sample(&samples, name, &[]), Some(0.0), "{name}");
    }
    assert_eq!(
        sample(
            &samples,
            "switchboard_connections_refused_total",
            &[("reason", "limit")]
        ),
        Some(0.0)
    );
}

#[test]
fn connection_gauges_move_with_real_connections() {
    let server = TestServer::start_with(|c| c.ping_interval = Duration::from_millis(500));
    let ws = server.client("room=a");
    eventually(
        &server,
        "ws = 1",
        |s| connections(s, "ws") == Some(1.0),
        secs(5),
    );
    let mut sse = Sse::connect(server.http, "/events?room=a", &[]);
    sse.wait_for_data(|d| d["type"] == "joined", secs(5));
    let samples = scrape(&server);
    assert_eq!(
        (connections(&samples, "ws"), connections(&samples, "sse")),
        (Some(1.0), Some(1.0))
    );
    assert_eq!(sample(&samples, "switchboard_rooms", &[]), Some(1.0));

    drop(ws);
    eventually(
        &server,
        "ws back to 0",
        |s| connections(s, "ws") == Some(0.0),
        secs(5),
    );
    drop(sse);
    // An SSE peer that left is noticed at its next heartbeat.
    eventually(
        &server,
        "sse back to 0",
        |s| connections(s, "sse") == Some(0.0),
        secs(5),
    );
}

#[test]
fn events_and_refusals_are_counted() {
    let server = TestServer::start_with(|c| c.max_connections = 1);
    let mut sse = Sse::connect(server.http, "/events?room=a", &[]);
    sse.wait_for_data(|d| d["type"] == "joined", secs(5));
    let before = events_out_at(&server, 1.0); // its own joined
    for n in 0..3 {
        assert_eq!(
            post_json(
                server.http,
                "/rooms/a/messages",
                &json!({"text": format!("m{n}")})
            )
            .status,
            202
        );
    }
    let refused = request(server.http, "GET", "/events?room=a", &[], b"");
    assert_eq!(refused.status, 503);

    let after = events_out_at(&server, 4.0);
    let grew = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels).expect(name) - sample(&before, name, labels).expect(name)
    };
    assert_eq!(grew("switchboard_events_in_total", &[]), 3.0);
    assert_eq!(
        grew("switchboard_events_out_total", &[]),
        3.0,
        "one member reached per message"
    );
    assert_eq!(
        grew(
            "switchboard_connections_refused_total",
            &[("reason", "limit")]
        ),
        1.0
    );
    // The node's own history (on Redis, history is Redis' and this stays 0).
    if !common::on_redis() {
        assert!(sample(&after, "switchboard_history_events", &[]).expect("history") >= 4.0);
    }
}

#[test]
fn openmetrics_is_served_to_scrapers_that_ask_for_it() {
    let server = TestServer::start();
    let accept = (
        "Accept",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    );
    let resp = request(server.http, "GET", "/metrics", &[accept], b"");
    assert_eq!(resp.status, 200);
    assert!(resp
        .header("Content-Type")
        .is_some_and(|t| t.starts_with("application/openmetrics-text")));
    assert!(
        resp.body.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    parse_prometheus(&resp.body);
}

#[test]
fn events_the_hub_writes_to_a_socket_itself_are_counted() {
    let server = TestServer::start();
    let mut reader = server.client("room=a&name=reader");
    reader.wait_for(|e| e["type"] == "joined", secs(5));
    let mut stream = Sse::connect(server.http, "/events?room=a&name=stream", &[]);
    stream.wait_seated("stream", &["a"], secs(5));
    // The joined notices: reader's own (1) and stream's, to both (2).
    let before = events_out_at(&server, 3.0);
    for n in 0..3 {
        let text = format!("m{n}");
        let resp = post_json(server.http, "/rooms/a/messages", &json!({ "text": text }));
        assert_eq!(resp.status, 202);
        // One at a time, each read: nothing is queued when the next comes.
        reader.wait_for(|e| e["text"] == text, secs(5));
        stream.wait_for_data(|d| d["text"] == text, secs(5));
    }
    let after = events_out_at(&server, 9.0);
    let grew = |name: &str| {
        sample(&after, name, &[]).expect(name) - sample(&before, name, &[]).expect(name)
    };
    assert_eq!(grew("switchboard_events_out_total"), 6.0);
    let through = grew("switchboard_events_written_through_total");
    assert!(
        (2.0..=6.0).contains(&through),
        "readers that keep up get their events from the hub itself: {through}"
    );
}
