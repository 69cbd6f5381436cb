//! Fuzzing a running server: cases made from the seed, a few at a time, the
//! server checked between batches.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::arena::{Arena, Kind};
use crate::attacks::named;
use crate::cases;
use crate::gen::Rng;
use crate::server::Server;

/// Cases sent at once.
const WORKERS: usize = 4;
/// Cases between two checks of the server.
const BATCH: usize = 40;
/// Case failures shown per fuzz test (the rest are counted).
const SHOWN: usize = 8;

/// Runs `count` cases, `WORKERS` at a time, in batches of `BATCH`; checks the
/// server after each batch (a batch that killed it is reported as such, and
/// its other failures, which follow from the death, are dropped).
pub fn fuzz<C>(
    arena: &mut Arena,
    label: &str,
    count: usize,
    make: impl Fn(&mut Rng, usize) -> C + Sync,
    port: fn(&Server) -> SocketAddr,
    run: impl Fn(SocketAddr, &C) -> cases::Failures + Sync,
    describe: impl Fn(&C) -> String + Sync,
) {
    let seed = crate::seed();
    let started = Instant::now();
    let mut failed = 0;
    for start in (0..count).step_by(BATCH) {
        let end = (start + BATCH).min(count);
        let addr = port(&arena.server);
        let next = AtomicUsize::new(start);
        let found = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for w in 0..WORKERS {
                let (next, found, make, run, describe) = (&next, &found, &make, &run, &describe);
                named(s, &format!("{label}-{w}"), move || loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= end {
                        break;
                    }
                    let mut rng = Rng::derive(seed, &format!("{label}/{i}"));
                    let case = make(&mut rng, i);
                    let failures = run(addr, &case);
                    if !failures.is_empty() {
                        found.lock().unwrap_or_else(|p| p.into_inner()).push((
                            i,
                            describe(&case),
                            failures,
                        ));
                    }
                });
            }
        });
        let died = arena.server.exited().is_some();
        arena.after(&format!(
            "{label} cases {start}..{end} (BAD_INPUT_SEED={seed:#x})"
        ));
        if died {
            continue;
        }
        let mut found = found.into_inner().unwrap_or_else(|p| p.into_inner());
        found.sort_by_key(|(i, _, _)| *i);
        for (i, description, failures) in found {
            failed += 1;
            if failed > SHOWN {
                continue;
            }
            let core = failures.iter().any(|(k, _)| *k == Kind::Core);
            let what: Vec<String> = failures.into_iter().map(|(_, m)| m).collect();
            let message = format!(
                "{label} case {i}: {}\n    case: {description}",
                what.join("; ")
            );
            if core {
                arena.core(false, || message);
            } else {
                arena.expect(false, || message);
            }
        }
    }
    arena.expect(failed <= SHOWN, || {
        format!("{label}: {} more failing cases not shown", failed - SHOWN)
    });
    arena.note(format!(
        "{label}: {count} cases in {:.1?}, {failed} failed",
        started.elapsed()
    ));
}
