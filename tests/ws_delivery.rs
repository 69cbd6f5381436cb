//! Delivery guarantees under load: replay with no gap and no duplicate while
//! others publish, a slow reader dropped without hurting anyone, and many
//! publishers at once seen in one order by everyone.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{secs, Client, Got, TestServer};
use crossbeam_channel::bounded;
use serde_json::json;

#[test]
fn since_replays_exactly_the_missed_events_then_goes_live_while_a_publisher_runs() {
    // History large enough that nothing missed is evicted before the replay.
    let server = TestServer::start_with(|c| c.history = 100_000);
    let mut watcher = server.client("room=lobby&name=watcher");
    let url = server.ws_url("/ws?room=lobby&name=publisher");
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut publisher = Client::connect(&url);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 3000 {
                publisher.send_json(
                    json!({"type": "message", "room": "lobby", "text": format!("m{n}")}),
                );
                n += 1;
                if n % 50 == 0 {
                    thread::sleep(Duration::from_millis(2)); // a steady stream, not one burst
                }
            }
            n
        })
    };
    // Let some messages through, note the last id, and reconnect from it while
    // the publisher keeps going.
    let first = watcher.wait_for(|e| e["type"] == "message" && e["text"] == "m100", secs(10));
    let since = first["id"].as_u64().expect("an id");
    drop(watcher);
    let mut late = server.client(&format!("room=lobby&name=late&since={since}"));
    let (mut ids, mut texts) = (Vec::new(), Vec::new());
    while ids.len() < 1000 {
        let event = late.wait_for(|e| e["type"] == "message", secs(10));
        ids.push(event["id"].as_u64().expect("an id"));
        texts.push(event["text"].as_str().expect("text").to_owned());
    }
    stop.store(true, Ordering::Relaxed);
    let sent = publisher.join().expect("publisher thread");
    assert!(sent > 1000, "the publisher kept publishing ({sent})");

    // The publisher is the only one talking, so its texts count: after m100,
    // exactly m101, m102, ... with nothing skipped or repeated, replay and
    // live alike, and ids strictly increasing.
    for (n, pair) in ids.windows(2).enumerate() {
        assert!(pair[0] < pair[1], "ids in order, no duplicate: {pair:?}");
        assert_eq!(texts[n + 1], format!("m{}", 101 + n + 1));
    }
    assert_eq!(texts[0], "m101", "replay starts right after since");
}

#[test]
fn a_reader_that_never_reads_is_dropped_while_a_healthy_one_gets_every_message_in_order() {
    let server = TestServer::start_with(|c| {
        c.send_buffer = 64;
        c.write_timeout = secs(1);
    });
    let mut healthy = server.client("room=flood&name=healthy");
    let mut stalled = server.client("room=flood&name=stalled");
    let stalled_id = stalled.wait_for(|e| e["type"] == "joined", secs(5))["from_id"].clone();
    let mut publisher = server.client("room=flood&name=publisher");

    // The healthy reader reports progress; the publisher keeps at most 48
    // messages ahead of it, so only the stalled reader can fall behind.
    let (progress, progress_rx) = bounded::<u64>(1024);
    let total = 3000u64;
    let reader = thread::spawn(move || {
        let mut next = 0u64;
        let mut left_seen = None;
        while next < total {
            let event =
                healthy.wait_for(|e| e["type"] == "message" || e["type"] == "left", secs(20));
            if event["type"] == "left" {
                left_seen = Some(event["from_id"].clone());
                continue;
            }
            let text = event["text"].as_str().expect("text");
            assert_eq!(
                text,
                format!("{next:05} {}", "x".repeat(2000)).as_str(),
                "every message, in order"
            );
            next += 1;
            let _ = progress.send(next);
        }
        left_seen
    });
    let started = Instant::now();
    let mut acknowledged = 0u64;
    for n in 0..total {
        while n >= acknowledged + 48 {
            acknowledged = progress_rx
                .recv_timeout(secs(20))
                .expect("healthy reader keeps up");
        }
        publisher.send_text(&format!("{n:05} {}", "x".repeat(2000)));
        publisher.discard_pending();
    }
    let left = reader.join().expect("the healthy reader got every message");
    assert_eq!(
        left,
        Some(stalled_id),
        "the stalled reader's departure was announced"
    );

    // The stalled client is told (close 1008) or cut, within a bounded time.
    stalled.seen.clear();
    match stalled.wait_for_close(secs(20)) {
        Got::Closed(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1008);
            assert_eq!(frame.reason.as_str(), "slow consumer");
        }
        Got::Dropped(_) | Got::Closed(None) => {} // cut before the close frame fit
        Got::TimedOut => panic!("the stalled reader was never dropped"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(started.elapsed() < secs(60));
}

#[test]
fn fifty_clients_sending_a_hundred_messages_each_all_see_every_message_once_in_one_order() {
    const CLIENTS: usize = 50;
    const EACH: usize = 100;
    let server = TestServer::start_with(|c| c.send_buffer = 8192);
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|n| server.client(&format!("room=burst&name=p{n}")))
        .collect();
    // Everyone is in before anyone speaks: the last joiner's notice reached the first.
    let last = format!("p{}", CLIENTS - 1);
    clients[0].wait_for(
        |e| e["type"] == "joined" && e["name"] == last.as_str(),
        secs(10),
    );

    let start = Arc::new(std::sync::Barrier::new(CLIENTS));
    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(n, mut client)| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                for m in 0..EACH {
                    client.send_text(&format!("{n}:{m}"));
                }
                let mut order = Vec::with_capacity(CLIENTS * EACH);
                while order.len() < CLIENTS * EACH {
                    let event = client.wait_for(|e| e["type"] == "message", secs(30));
                    order.push(event["text"].as_str().expect("text").to_owned());
                }
                order
            })
        })
        .collect();
    let orders: Vec<Vec<String>> = threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect();
    let unique: HashSet<&String> = orders[0].iter().collect();
    assert_eq!(unique.len(), CLIENTS * EACH, "every message exactly once");
    for (n, order) in orders.iter().enumerate() {
        assert_eq!(order, &orders[0], "client {n} saw a different order");
    }
    // Each sender's own messages keep their order.
    for n in 0..CLIENTS {
        let own: Vec<&String> = orders[0]
            .iter()
            .filter(|t| t.starts_with(&format!("{n}:")))
            .collect();
        let expected: Vec<String> = (0..EACH).map(|m| format!("{n}:{m}")).collect();
        assert_eq!(own, expected.iter().collect::<Vec<_>>());
    }
}
