//! Slow means the peer does not read: on a machine whose CPUs are busy
//! (spinning threads this test starts and stops), a burst into one room
//! drops no client that reads, though writers wait their turn for a core.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{secs, Got, TestServer};

/// Threads that spin until dropped, or until `limit` has passed: the test
/// bounds them in time even if it fails half way.
struct BusyCpus {
    stop: Arc<AtomicBool>,
    spinners: Vec<JoinHandle<()>>,
}

impl BusyCpus {
    fn start(limit: Duration) -> BusyCpus {
        let stop = Arc::new(AtomicBool::new(false));
        let cpus = thread::available_parallelism().map_or(2, |n| n.get());
        let spinners = (0..cpus)
            .map(|n| {
                let stop = Arc::clone(&stop);
                thread::Builder::new()
                    .name(format!("spin {n}"))
                    .spawn(move || {
                        let started = Instant::now();
                        while !stop.load(Ordering::Relaxed) && started.elapsed() < limit {
                            std::hint::black_box((0..1000u64).sum::<u64>());
                        }
                    })
                    .expect("a spinning thread")
            })
            .collect();
        BusyCpus { stop, spinners }
    }
}

impl Drop for BusyCpus {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for spinner in self.spinners.drain(..) {
            let _ = spinner.join();
        }
    }
}

#[test]
fn a_burst_on_a_busy_machine_drops_no_client_that_reads() {
    const CLIENTS: usize = 30;
    const EACH: usize = 50;
    let server = TestServer::start(); // --send-buffer 256, as shipped
    let mut clients: Vec<_> = (0..CLIENTS)
        .map(|n| server.client(&format!("room=burst&name=c{n}")))
        .collect();
    let last = format!("c{}", CLIENTS - 1);
    clients[0].wait_for(
        |e| e["type"] == "joined" && e["name"] == last.as_str(),
        secs(10),
    );

    let busy = BusyCpus::start(Duration::from_secs(60));
    let start = Arc::new(Barrier::new(CLIENTS));
    let readers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(n, mut client)| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                for m in 0..EACH {
                    client.send_text(&format!("c{n} says {m:02}: {}", "x".repeat(100)));
                }
                // Then read as fast as it can: every message, or why not.
                let mut messages = 0;
                let deadline = Instant::now() + secs(50);
                while messages < CLIENTS * EACH {
                    match client.next(deadline.saturating_duration_since(Instant::now())) {
                        Got::Text(text) if text.contains("\"type\":\"message\"") => messages += 1,
                        Got::Text(_) => {}
                        other => return Err(format!("c{n} after {messages} messages: {other:?}")),
                    }
                }
                Ok(())
            })
        })
        .collect();
    let outcomes: Vec<_> = readers
        .into_iter()
        .map(|r| r.join().expect("a client thread"))
        .collect();
    drop(busy);
    let failed: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(failed.is_empty(), "clients that read were cut: {failed:?}");
    let metrics = server.server().metrics().render();
    for metric in [
        "switchboard_slow_consumers_dropped_total{transport=\"ws\"} 0",
        "switchboard_queue_ceiling_dropped_total{transport=\"ws\"} 0",
    ] {
        assert!(metrics.contains(metric), "{metric}:\n{metrics}");
    }
}
