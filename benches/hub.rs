//! The hub without sockets: how many events a second the hub thread fans out
//! to N in-memory subscribers, so a change to the core is measured on its own.
//!
//!     cargo bench --bench hub
//!
//! Each iteration publishes one message to a room of N members (request/reply
//! through the hub, like REST publishing) while a drainer thread per member
//! empties its queue, as writer threads would.

#![allow(missing_docs)] // criterion_group! and criterion_main! generate undocumented functions

use std::sync::Arc;
use std::thread;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam_channel::{bounded, unbounded};
use switchboard::hub::{Command, Hangup, Hub, Subscriber};
use switchboard::metrics::Metrics;
use switchboard::protocol::{ClientId, Transport};
use switchboard::room::{Name, RoomName};

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub_fan_out");
    for members in [1usize, 100, 1000] {
        let (stop, shutdown) = bounded::<()>(0);
        let (hub, hub_thread) =
            Hub::spawn(1000, 4096, Arc::new(Metrics::new()), shutdown).expect("hub");
        let room = RoomName::parse("bench").expect("valid");
        let mut drainers = Vec::new();
        for n in 0..members {
            let (to_client, events) = unbounded();
            let hangup = Hangup::new(None, 4096);
            let subscriber = Subscriber {
                id: ClientId(n as u64 + 1),
                name: Name::guest(n as u64 + 1),
                transport: Transport::Ws,
                events: to_client,
                hangup: Arc::clone(&hangup),
            };
            let connect = Command::Connect {
                subscriber,
                rooms: vec![room.clone()],
                since: None,
            };
            hub.send(connect).expect("hub runs");
            drainers.push(thread::spawn(move || {
                events.iter().for_each(|item| hangup.took(&item));
            }));
        }
        group.throughput(Throughput::Elements(members as u64));
        group.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
            b.iter(|| {
                let from = Name::parse("bench").expect("valid");
                hub.publish(room.clone(), from, "bench".into(), "x".repeat(64))
                    .expect("hub runs")
            })
        });
        drop(stop);
        hub_thread.join().expect("hub ends");
        for drainer in drainers {
            drainer.join().expect("drainer ends");
        }
    }
    group.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);
