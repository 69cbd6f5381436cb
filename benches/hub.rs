//! The hub without sockets: how many events a second the hub thread fans out
//! to N in-memory subscribers, so a change to the core is measured on its own.
//!
//!     cargo bench --bench hub
//!
//! Each iteration publishes one message to a room of N members (request/reply
//! through the hub, like REST publishing) while a drainer thread per member
//! empties its queue, as writer threads would.

#![allow(missing_docs)] // criterion_group! and criterion_main! generate undocumented functions

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam_channel::bounded;
use switchboard::hub::{Command, Hub, Subscriber};
use switchboard::metrics::Metrics;
use switchboard::protocol::{ClientId, Transport};
use switchboard::queue::{self, OnSlow};
use switchboard::room::{Name, RoomName};
use switchboard::rooms::Retention;

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub_fan_out");
    for members in [1usize, 100, 1000] {
        let (stop, shutdown) = bounded::<()>(0);
        let (hub, hub_thread) = Hub::spawn(
            Retention::default(),
            4096,
            Arc::new(Metrics::new()),
            shutdown,
        )
        .expect("hub");
        let room = RoomName::parse("bench").expect("valid");
        let mut drainers = Vec::new();
        for n in 0..members {
            let (queue, inbox) = queue::bounded(4096, OnSlow::Nothing);
            let subscriber = Subscriber {
                id: ClientId(n as u64 + 1),
                name: Name::guest(n as u64 + 1),
                transport: Transport::Ws,
                queue,
                access: switchboard::auth::Access::Open, // tokens off
            };
            let connect = Command::Connect {
                subscriber,
                rooms: vec![room.clone()],
                since: None,
            };
            hub.send(connect).expect("hub runs");
            drainers.push(thread::spawn(move || {
                inbox.iter().for_each(drop);
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
        // Connects the hub had not applied yet wait in its command queue,
        // each with a queue's sender, until the handle goes too.
        drop(hub);
        for drainer in drainers {
            drainer.join().expect("drainer ends");
        }
    }
    group.finish();
}

/// Publishing round-robin into many rooms without members, each at its
/// `--history` cap: what keeping history costs the hub per publish, with no
/// fan-out. Publishes go in batches, all queued before the first reply is
/// read, and the figure is the CPU time of the hub thread alone per batch
/// (from `/proc`), so other load on the machine does not count.
fn history(c: &mut Criterion) {
    const BATCH: usize = 1000;
    let mut group = c.benchmark_group("hub_history");
    for rooms in [1usize, 1000, 10_000] {
        let (stop, shutdown) = bounded::<()>(0);
        let (hub, hub_thread) =
            Hub::spawn(history_of(16), 4096, Arc::new(Metrics::new()), shutdown).expect("hub");
        let hub_task = task_named("hub");
        let names: Vec<RoomName> = (0..rooms)
            .map(|n| RoomName::parse(&format!("room-{n}")).expect("valid"))
            .collect();
        let from = Name::parse("bench").expect("valid");
        let (reply, replies) = bounded(BATCH);
        let mut next = 0;
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_with_input(BenchmarkId::from_parameter(rooms), &rooms, |b, _| {
            b.iter_custom(|batches| {
                let started = cpu_time(&hub_task);
                for _ in 0..batches {
                    for _ in 0..BATCH {
                        next = (next + 1) % names.len();
                        let publish = Command::Publish {
                            room: names[next].clone(),
                            from: from.clone(),
                            from_id: "bench".into(),
                            text: "x".repeat(64),
                            reply: reply.clone(),
                        };
                        hub.send(publish).expect("hub runs");
                    }
                    for _ in 0..BATCH {
                        replies.recv().expect("hub runs").expect("published");
                    }
                }
                cpu_time(&hub_task) - started
            })
        });
        drop(stop);
        hub_thread.join().expect("hub ends");
    }
    group.finish();
}

/// The `/proc` directory of this process's thread called `name`, once it
/// has named itself (a thread takes its name as it starts).
fn task_named(name: &str) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tasks = fs::read_dir("/proc/self/task").expect("Linux /proc");
        let found = tasks
            .filter_map(Result::ok)
            .map(|task| task.path())
            .find(|task| {
                fs::read_to_string(task.join("comm")).is_ok_and(|comm| comm.trim() == name)
            });
        match found {
            Some(task) => return task,
            None if Instant::now() < deadline => thread::yield_now(),
            None => panic!("no thread called {name}"),
        }
    }
}

/// The CPU time a thread has used so far (`schedstat`'s first field, in ns).
fn cpu_time(task: &Path) -> Duration {
    let stat = fs::read_to_string(task.join("schedstat")).expect("schedstat");
    let nanos = stat.split_whitespace().next().and_then(|n| n.parse().ok());
    Duration::from_nanos(nanos.expect("schedstat starts with the CPU time in ns"))
}

/// The default ceilings, with `events` kept per room.
fn history_of(events: usize) -> Retention {
    Retention {
        history: events,
        ..Retention::default()
    }
}

criterion_group!(benches, fan_out, history);
criterion_main!(benches);
