//! A real `redis-server` for one test: on a free port, in a temporary
//! directory of its own, stopped by its PID when dropped.
//!
//! `RedisServer::start()` keeps nothing on disk (`--save ''`);
//! `RedisServer::persistent()` writes every change to an append-only file
//! before answering, so a restart (`kill` then `restart`) finds its data
//! again. Every wait has a deadline: the server must answer `PING` within
//! ten seconds of its start.

#![allow(dead_code)] // each test file uses a different part of it

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A redis-server this test started.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    persistent: bool,
    child: Option<Child>,
}

static STARTED: AtomicUsize = AtomicUsize::new(0);

impl RedisServer {
    /// Nothing on disk.
    pub fn start() -> RedisServer {
        RedisServer::launch(false)
    }

    /// Every write in an append-only file, synced before Redis answers.
    pub fn persistent() -> RedisServer {
        RedisServer::launch(true)
    }

    fn launch(persistent: bool) -> RedisServer {
        let n = STARTED.fetch_add(1, Ordering::SeqCst);
        // `common` holds a copy of this module too: the clock tells them apart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "switchboard-redis-{}-{n}-{nanos}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory for redis");
        let mut server = RedisServer {
            port: 0,
            dir,
            persistent,
            child: None,
        };
        // A free port can be taken between our check and redis' bind: try again.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start (is it installed? scripts/test.sh installs it)");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts redis-server on `self.port`; whether it answered PING in time.
    fn spawn(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", ""]);
        if self.persistent {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.answers_ping() {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None; // it exited: the port was taken
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut socket) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = socket.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        socket.write_all(b"PING\r\n").is_ok()
            && socket.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// SIGKILL: Redis dies at once, without a goodbye to anyone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL, to our own child by its PID
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (with its data, if
    /// `persistent`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        assert!(self.spawn(), "redis-server restarts on port {}", self.port);
    }

    /// Runs one command on it (RESP inline), returns the raw reply.
    pub fn command(&self, line: &str) -> String {
        let mut socket = TcpStream::connect(("127.0.0.1", self.port)).expect("redis answers");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a timeout");
        socket
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("sent");
        let mut reply = vec![0u8; 4096];
        let n = socket.read(&mut reply).expect("a reply");
        String::from_utf8_lossy(&reply[..n]).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}
