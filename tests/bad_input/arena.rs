//! An arena: a server process, the healthy watchers, and the list of what
//! went wrong, kept across attacks.
//!
//! After each attack the arena looks at the server: if it died, that is
//! written down with its exit status and last log lines, and a fresh server
//! (and fresh watchers) take its place, so one crash does not hide what the
//! remaining attacks would have found. New `panicked` lines on stderr are
//! pinned on the attack that caused them. At the end: every healthy message
//! arrived in order, `/healthz` answers, SIGTERM ends the process with
//! status 0, and nothing panicked.

use std::time::{Duration, Instant};

use crate::server::{describe, Server};
use crate::watch::{Seen, Watch};
use crate::wire;

/// Failures are of two kinds.
#[derive(Debug, PartialEq)]
pub enum Kind {
    /// The core of the suite: a crash, a panic, a healthy client that lost a
    /// message, a server that no longer answers or will not stop.
    Core,
    /// An answer the issue (or RFC) defines that did not come.
    Expected,
}

/// A server under attack.
pub struct Arena {
    name: &'static str,
    seed: u64,
    args: Vec<String>,
    /// The server now.
    pub server: Server,
    watch: Option<Watch>,
    failures: Vec<(Kind, String)>,
    notes: Vec<String>,
    panics_seen: usize,
    healthy_sent: u64,
    started: Instant,
}

impl Arena {
    /// Starts a server with `args` and the watchers; `name` and `seed` go
    /// into the failure message.
    pub fn open(name: &'static str, seed: u64, args: &[&str]) -> Arena {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let server = Server::start(&args);
        let watch = Watch::start(server.ws, server.http).expect("the healthy clients connect");
        Arena {
            name,
            seed,
            args,
            server,
            watch: Some(watch),
            failures: Vec::new(),
            notes: Vec::new(),
            panics_seen: 0,
            healthy_sent: 0,
            started: Instant::now(),
        }
    }

    /// Records a core failure unless `ok`.
    pub fn core(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failures.push((Kind::Core, what()));
        }
    }

    /// Records an unmet expectation unless `ok`.
    pub fn expect(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failures.push((Kind::Expected, what()));
        }
    }

    /// A line for the summary printed at the end (pass or fail).
    pub fn note(&mut self, line: String) {
        self.notes.push(line);
    }

    /// Checks the server after an attack named `label`: died (restart it),
    /// panicked, or stopped answering `/healthz` within 5 s.
    pub fn after(&mut self, label: &str) {
        if self.died(label) {
            return;
        }
        let panics = self.server.panics();
        if panics.len() > self.panics_seen {
            let new = panics[self.panics_seen..].join("\n      | ");
            self.panics_seen = panics.len();
            self.failures.push((
                Kind::Core,
                format!("{label}: a server thread panicked:\n      | {new}"),
            ));
        }
        if let Err(e) = wire::get(self.server.http, "/healthz", Duration::from_secs(5)) {
            // A dying server refuses connections before its exit status is in.
            let deadline = Instant::now() + Duration::from_secs(2);
            while self.server.exited().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20)); // waiting for the exit, with a deadline
            }
            if self.died(label) {
                return;
            }
            // A frozen server is as good as dead for the attacks still to
            // come: replace it too, or each of them would wait out its
            // timeouts against it.
            let tail = self.server.stderr_tail(8);
            self.failures.push((
                Kind::Core,
                format!("{label}: /healthz did not answer afterwards ({e}); a fresh server takes over; its last words:{tail}"),
            ));
            self.restart();
        }
    }

    /// If the server has exited, writes down how (with its last log lines)
    /// and starts a fresh one.
    fn died(&mut self, label: &str) -> bool {
        let Some(status) = self.server.exited() else {
            return false;
        };
        let tail = self.server.stderr_tail(8);
        self.failures.push((
            Kind::Core,
            format!(
                "{label}: the server died ({}); its last words:{tail}",
                describe(status)
            ),
        ));
        self.restart();
        true
    }

    /// Replaces a dead server with a fresh one (the old watchers' losses are
    /// the crash's, already written down).
    fn restart(&mut self) {
        if let Some(watch) = self.watch.take() {
            let seen = watch.finish();
            self.healthy_sent += seen.sent;
            self.smuggled(seen.smuggled);
        }
        // Dropping the old one kills it (by its PID) if it is still running.
        self.server = Server::start(&self.args);
        self.panics_seen = 0;
        self.watch = Some(
            Watch::start(self.server.ws, self.server.http).expect("the healthy clients connect"),
        );
    }

    /// The healthy subscriber is still receiving: `n` more messages arrive
    /// within 5 s.
    pub fn still_delivering(&mut self, label: &str) {
        let ok = self
            .watch
            .as_ref()
            .is_some_and(|w| w.wait_for_more(5, Duration::from_secs(5)));
        self.core(ok, || {
            format!("{label}: the healthy subscriber stopped receiving")
        });
    }

    fn smuggled(&mut self, messages: Vec<String>) {
        for message in messages {
            self.failures.push((Kind::Expected, message));
        }
    }

    /// The final checks; panics with every failure, or prints the summary.
    pub fn close(mut self) {
        let Seen {
            sent,
            received,
            problems,
            probes,
            smuggled,
        } = self.watch.take().expect("watching").finish();
        self.smuggled(smuggled);
        for problem in problems {
            self.failures.push((Kind::Core, problem));
        }
        self.healthy_sent += sent;
        let stalls = probes.stalls.len();
        if stalls > 0 {
            let list = probes
                .stalls
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ");
            self.failures.push((
                Kind::Expected,
                format!("HTTP froze (issue 17 findings 3-5): {stalls} of {} /healthz probes took over 3 s or failed: {list}", probes.count),
            ));
        }
        self.after("at the end");
        match self.server.terminate(Duration::from_secs(10)) {
            Ok(status) if status.success() => {}
            Ok(status) => self.failures.push((
                Kind::Core,
                format!(
                    "SIGTERM: the server exited with {}{}",
                    describe(status),
                    self.server.stderr_tail(8)
                ),
            )),
            Err(e) => self.failures.push((Kind::Core, format!("SIGTERM: {e}"))),
        }
        let panics = self.server.panics();
        if panics.len() > self.panics_seen {
            self.failures.push((
                Kind::Core,
                format!(
                    "a server thread panicked:\n      | {}",
                    panics[self.panics_seen..].join("\n      | ")
                ),
            ));
        }
        if probes.refused > 0 {
            self.notes.push(format!(
                "{} /healthz probes were refused with 503",
                probes.refused
            ));
        }
        let took = self.started.elapsed();
        println!(
            "{}: {:.1} s, seed {:#x}; healthy messages {received} of {sent} in the last server ({} over all); /healthz probes {} (worst {:.0?})",
            self.name,
            took.as_secs_f32(),
            self.seed,
            self.healthy_sent,
            probes.count,
            probes.worst
        );
        for note in &self.notes {
            println!("  {note}");
        }
        if self.failures.is_empty() {
            return;
        }
        let mut message = format!(
            "{}: {} failure(s). Rerun with BAD_INPUT_SEED={:#x} cargo test --test bad_input {}\n",
            self.name,
            self.failures.len(),
            self.seed,
            self.name
        );
        for (kind, title) in [
            (Kind::Core, "core: the server must survive and serve"),
            (Kind::Expected, "expected answers (issue 17, RFC 6455/9112)"),
        ] {
            let of_kind: Vec<&String> = self
                .failures
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, m)| m)
                .collect();
            if !of_kind.is_empty() {
                message.push_str(&format!("\n== {title}\n"));
                for m in of_kind {
                    message.push_str(&format!("  - {m}\n"));
                }
            }
        }
        panic!("{message}");
    }
}
