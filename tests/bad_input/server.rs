//! The real `switchboard` binary as a child process: started on port 0,
//! its `listening` lines read, its stderr kept (a thread drains it, so a
//! chatty server never blocks on a full pipe), its resources read from
//! `/proc`, and stopped with SIGTERM by its own PID.
//!
//! A process rather than the library in-process, so an abort (an allocation
//! of 50 GB fails, a double panic) kills only the server, and the suite sees
//! it as an exit status instead of dying with it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Lines of stderr kept for messages; lines that say `panicked` are all kept.
const STDERR_TAIL: usize = 200;

/// A running server.
pub struct Server {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// The HTTP listener.
    pub http: SocketAddr,
    /// The WebSocket listener.
    pub ws: SocketAddr,
    log: Arc<Mutex<Log>>,
    logs: Option<thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

#[derive(Default)]
struct Log {
    tail: std::collections::VecDeque<String>,
    panics: Vec<String>,
}

/// What `/proc` says about the process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// User plus system CPU time, in clock ticks (1/100 s on Linux).
    pub cpu_ticks: u64,
}

impl Server {
    /// Starts the binary with `args` after `--http 127.0.0.1:0 --ws 127.0.0.1:0`.
    pub fn start(args: &[String]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["--http", "127.0.0.1:0", "--ws", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the switchboard binary starts");
        let log = Arc::new(Mutex::new(Log::default()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&log);
        let logs = thread::Builder::new()
            .name("server-stderr".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut log = sink.lock().unwrap_or_else(|p| p.into_inner());
                    if line.contains("panicked") {
                        log.panics.push(line.clone());
                    }
                    log.tail.push_back(line);
                    if log.tail.len() > STDERR_TAIL {
                        log.tail.pop_front();
                    }
                }
            })
            .expect("spawn the stderr reader");
        let logs = Some(logs);
        let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        let mut next = |kind: &str| -> SocketAddr {
            let line = lines
                .next()
                .and_then(Result::ok)
                .unwrap_or_else(|| panic!("the server printed no 'listening {kind}' line"));
            line.strip_prefix(&format!("listening {kind} "))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("expected 'listening {kind} ADDR', got {line:?}"))
        };
        let http = next("http");
        let ws = next("ws");
        // Nothing else comes on stdout; keep it drained anyway.
        thread::Builder::new()
            .name("server-stdout".into())
            .spawn(move || for _ in lines {})
            .expect("spawn the stdout reader");
        Server {
            pid: child.id(),
            child,
            http,
            ws,
            log,
            logs,
            status: None,
        }
    }

    /// How the process ended, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
            if self.status.is_some() {
                // The pipe is at its end: wait for the last lines to be read.
                if let Some(logs) = self.logs.take() {
                    let _ = logs.join();
                }
            }
        }
        self.status
    }

    /// Every stderr line that said `panicked`, so far.
    pub fn panics(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .panics
            .clone()
    }

    /// The last lines of stderr, for failure messages.
    pub fn stderr_tail(&self, lines: usize) -> String {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let skip = log.tail.len().saturating_sub(lines);
        log.tail
            .iter()
            .skip(skip)
            .map(|l| format!("\n      | {l}"))
            .collect()
    }

    /// RSS, threads, fds and CPU time now (`None` once the process is gone).
    pub fn sample(&self) -> Option<Sample> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .ok()?
            .count() as u64;
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let after_name = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Some(Sample {
            rss_kib: field("VmRSS:"),
            threads: field("Threads:"),
            fds,
            cpu_ticks: ticks(14) + ticks(15),
        })
    }

    /// Sends SIGTERM and waits up to `within` for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Result<ExitStatus, String> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .map_err(|e| format!("kill: {e}"))?;
        if !sent.success() {
            return Err(format!("kill -TERM {} failed", self.pid));
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!("no exit within {within:?} of SIGTERM (killed)"));
            }
            thread::sleep(Duration::from_millis(20)); // polling the exit, with a deadline
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill(); // SIGKILL to this child's PID only
            let _ = self.child.wait();
        }
    }
}

/// "signal 6 (SIGABRT)", "exit status 1", ...
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(6)) => "signal 6 (SIGABRT)".into(),
        (None, Some(9)) => "signal 9 (SIGKILL)".into(),
        (None, Some(11)) => "signal 11 (SIGSEGV)".into(),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "an unknown status".into(),
    }
}
