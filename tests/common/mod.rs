//! Test harness: a real server on 127.0.0.1 port 0, and clients that wait on
//! conditions with deadlines, never on the clock.
//!
//! `TestServer::start()` runs the server in this process through the library;
//! dropping it shuts the server down and fails the test if that hangs or if
//! any server thread panicked.
//!
//! With `SWITCHBOARD_TEST_REDIS=1` in the environment, every server the suite
//! starts on the default engine runs on Redis instead (`--redis`), one
//! `redis-server` of its own each: the whole suite, run both ways, shows that
//! one node on Redis behaves as the in-memory one (docs/redis.md says where
//! the two differ on purpose).

#![allow(dead_code)] // each test file uses a different part of the harness

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchboard::engine::Engine;

#[path = "../redis_support/mod.rs"]
pub mod redis_support;
use switchboard::{Config, Server};
use tungstenite::protocol::CloseFrame;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Panics seen on server threads (named `hub`, `ws-…`, `http`, `sse …`, …).
static SERVER_PANICS: AtomicUsize = AtomicUsize::new(0);

fn watch_server_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            let server_thread = [
                "hub", "ws-", "http", "sse", "grpc", "signals", "rest", "engine",
            ]
            .iter()
            .any(|prefix| name.starts_with(prefix));
            if server_thread {
                SERVER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

/// Whether the suite runs every default server on Redis
/// (`SWITCHBOARD_TEST_REDIS=1`).
pub fn on_redis() -> bool {
    std::env::var_os("SWITCHBOARD_TEST_REDIS").is_some_and(|v| v == "1")
}

/// For a test of what the in-memory engine does on purpose differently
/// (docs/redis.md, "Where one node on Redis differs"): on Redis it says
/// so on stderr, past the test harness' capture, and returns `true`, and
/// the test returns. Never a silent skip.
pub fn memory_engine_only(test: &str, reason: &str) -> bool {
    if !on_redis() {
        return false;
    }
    let line = format!("skipped on Redis: {test}: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    true
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A server started for one test.
pub struct TestServer {
    server: Option<Server>,
    /// With `SWITCHBOARD_TEST_REDIS`: the server's own Redis (dropped after it).
    redis: Option<redis_support::RedisServer>,
    pub ws: SocketAddr,
    pub http: SocketAddr,
    panics_at_start: usize,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(|_| {})
    }

    pub fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::launch(adjust, None)
    }

    /// A server whose ids and history live in `engine`.
    pub fn start_on(engine: Box<dyn Engine>, adjust: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::launch(adjust, Some(engine))
    }

    fn launch(adjust: impl FnOnce(&mut Config), engine: Option<Box<dyn Engine>>) -> TestServer {
        watch_server_panics();
        let _ = env_logger::builder().is_test(true).try_init();
        let mut config = Config::for_tests();
        config.write_timeout = secs(2);
        adjust(&mut config);
        let on_redis = engine.is_none() && config.redis.is_none() && on_redis();
        let redis = on_redis.then(redis_support::RedisServer::start);
        if let Some(redis) = &redis {
            config.redis = Some(redis.url());
        }
        let server = match engine {
            Some(engine) => Server::start_with_engine(config, engine),
            None => Server::start(config),
        };
        let server = server.expect("server starts on port 0");
        if redis.is_some() {
            let deadline = Instant::now() + secs(10);
            let metrics = server.metrics();
            while !metrics.redis().is_some_and(|r| r.is_up()) {
                assert!(Instant::now() < deadline, "the engine reaches its redis");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        TestServer {
            ws: server.ws_addr,
            http: server.http_addr,
            server: Some(server),
            redis,
            panics_at_start: SERVER_PANICS.load(Ordering::SeqCst),
        }
    }

    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.ws, path_and_query)
    }

    /// Connects to `/ws?{query}` and returns the client after its welcome.
    pub fn client(&self, query: &str) -> Client {
        let mut client = Client::connect(&self.ws_url(&format!("/ws?{query}")));
        client.wait_for(|e| e["type"] == "welcome", secs(5));
        client
    }

    /// Stops the server now and returns how the shutdown went.
    pub fn stop(&mut self) -> switchboard::server::ShutdownReport {
        self.server.take().expect("stopped once").shutdown()
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let report = server.shutdown();
            if !std::thread::panicking() {
                assert!(report.took < secs(10), "shutdown took {:?}", report.took);
            }
        }
        if !std::thread::panicking() {
            assert_eq!(
                SERVER_PANICS.load(Ordering::SeqCst),
                self.panics_at_start,
                "a server thread panicked (see stderr)"
            );
        }
    }
}

/// A WebSocket client with a read timeout, so every wait has a deadline.
pub struct Client {
    pub ws: WebSocket<MaybeTlsStream<TcpStream>>,
    /// Events read while waiting for something else, in order.
    pub seen: Vec<Value>,
}

/// What a read produced.
#[derive(Debug)]
pub enum Got {
    Text(String),
    Binary(Vec<u8>),
    Closed(Option<CloseFrame>),
    /// The socket ended without a close frame (reset or EOF).
    Dropped(String),
    TimedOut,
}

impl Client {
    pub fn connect(url: &str) -> Client {
        let (ws, _response) =
            tungstenite::connect(url).unwrap_or_else(|e| panic!("connect {url}: {e}"));
        set_timeout(&ws, Some(Duration::from_millis(200)));
        Client {
            ws,
            seen: Vec::new(),
        }
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .expect("send a text frame");
    }

    pub fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string());
    }

    /// The next frame, or `TimedOut` after `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Got {
        let deadline = Instant::now() + timeout;
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => return Got::Text(t.to_string()),
                Ok(Message::Binary(b)) => return Got::Binary(b.to_vec()),
                Ok(Message::Close(frame)) => return Got::Closed(frame),
                Ok(_) => continue, // pings and pongs
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return Got::TimedOut;
                    }
                }
                Err(tungstenite::Error::ConnectionClosed) => return Got::Closed(None),
                Err(e) => return Got::Dropped(e.to_string()),
            }
        }
    }

    /// The next JSON event within `timeout`; panics on anything else.
    pub fn event(&mut self, timeout: Duration) -> Value {
        match self.next(timeout) {
            Got::Text(text) => {
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
            }
            other => panic!(
                "expected an event, got {other:?}; seen before: {:?}",
                self.seen
            ),
        }
    }

    /// Reads events until one matches `want`; panics after `timeout`, saying
    /// what came instead.
    pub fn wait_for(&mut self, want: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Got::Text(text) => {
                    let event: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
                    if want(&event) {
                        return event;
                    }
                    self.seen.push(event);
                }
                other => panic!(
                    "awaited event did not come: got {other:?}; seen instead: {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Reads text lines (format=text) until one matches.
    pub fn wait_for_line(&mut self, want: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next(deadline.saturating_duration_since(Instant::now())) {
                Got::Text(line) if want(&line) => return line,
                Got::Text(line) => self.seen.push(Value::String(line)),
                other => panic!(
                    "awaited line did not come: got {other:?}; seen: {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Waits for the connection to end; returns the close frame if one came.
    pub fn wait_for_close(&mut self, timeout: Duration) -> Got {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next(deadline.saturating_duration_since(Instant::now())) {
                Got::Text(_) | Got::Binary(_) => continue,
                other => return other,
            }
        }
    }

    /// Reads and discards whatever has already arrived, without waiting (for a
    /// publisher that must keep reading its own echoes to stay a healthy reader).
    pub fn discard_pending(&mut self) {
        set_timeout(&self.ws, Some(Duration::from_micros(100)));
        while self.ws.read().is_ok() {}
        set_timeout(&self.ws, Some(Duration::from_millis(200)));
    }

    /// Sends a message and waits for it to come back (proof it went through).
    pub fn say(&mut self, room: &str, text: &str) -> Value {
        self.send_json(serde_json::json!({"type": "message", "room": room, "text": text}));
        self.wait_for(|e| e["type"] == "message" && e["text"] == text, secs(5))
    }
}

pub fn set_timeout(ws: &WebSocket<MaybeTlsStream<TcpStream>>, timeout: Option<Duration>) {
    if let MaybeTlsStream::Plain(stream) = ws.get_ref() {
        stream
            .set_read_timeout(timeout)
            .expect("set a read timeout");
    }
}

/// Sends a raw HTTP request and returns the whole response as text.
pub fn raw_http(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(secs(5))).expect("timeout");
    stream.write_all(request.as_bytes()).expect("write request");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

/// A valid WebSocket handshake request for `path`, with extra header lines.
pub fn handshake_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}
