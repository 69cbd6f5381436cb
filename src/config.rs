//! The command line and environment, turned into a checked `Config`.
//!
//! `Args` is what clap reads (every option also from `SWITCHBOARD_<OPTION>`);
//! `Config` is what the server runs on: parsed addresses, `Duration`s and
//! limits that have been checked once, here, so nothing downstream re-checks.
//! Tests build a `Config` directly (`Config::for_tests()`), with short
//! intervals, and never touch the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::auth::mint::TokenArgs;
use crate::auth::Verifier;
use crate::origin::PublicHost;
use crate::rooms::{
    Retention, DEFAULT_HISTORY, DEFAULT_JOIN_NOTICES_MAX, DEFAULT_MAX_HISTORY_BYTES,
    DEFAULT_MAX_ROOMS, DEFAULT_ROOM_EXPIRY_SECS,
};

/// switchboard: a real-time messaging hub (WebSocket, Server-Sent Events, REST,
/// gRPC) on OS threads and bounded channels.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Args {
    /// HTTP listener: chat page, SSE, REST API, health, metrics
    #[arg(long, env = "SWITCHBOARD_HTTP", default_value = "127.0.0.1:8080")]
    pub http: String,
    /// WebSocket listener
    #[arg(long, env = "SWITCHBOARD_WS", default_value = "127.0.0.1:8081")]
    pub ws: String,
    /// gRPC listener (needs the `grpc` build feature); off when not given
    #[arg(long, env = "SWITCHBOARD_GRPC")]
    pub grpc: Option<String>,
    /// Events queued per subscriber before it counts as slow and is dropped
    #[arg(long, env = "SWITCHBOARD_SEND_BUFFER", default_value_t = 256)]
    pub send_buffer: usize,
    /// Largest inbound message, in bytes
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_SIZE", default_value_t = 65536)]
    pub max_message_size: usize,
    /// Connections across all transports; past it new ones are refused
    /// [default: 10000, or what the kernel's limits allow if that is less]
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Events kept per room for replay
    #[arg(long, env = "SWITCHBOARD_HISTORY", default_value_t = DEFAULT_HISTORY)]
    pub history: usize,
    /// Rooms that may exist at once; creating one more is refused (REST 503,
    /// an `unavailable` error event)
    #[arg(long, env = "SWITCHBOARD_MAX_ROOMS", default_value_t = DEFAULT_MAX_ROOMS)]
    pub max_rooms: usize,
    /// Memory all rooms' history may hold together, in bytes (256 MiB); past
    /// it the oldest events of the hub are dropped first
    #[arg(
        long,
        env = "SWITCHBOARD_MAX_HISTORY_BYTES",
        default_value_t = DEFAULT_MAX_HISTORY_BYTES
    )]
    pub max_history_bytes: usize,
    /// Seconds a room without members keeps its history after its last use;
    /// then it is forgotten (0: at once)
    #[arg(long, env = "SWITCHBOARD_ROOM_EXPIRY", default_value_t = DEFAULT_ROOM_EXPIRY_SECS)]
    pub room_expiry: u64,
    /// Rooms with more members than this send no joined/left notices (0: no
    /// room does)
    #[arg(long, env = "SWITCHBOARD_JOIN_NOTICES_MAX", default_value_t = DEFAULT_JOIN_NOTICES_MAX)]
    pub join_notices_max: usize,
    /// WebSocket ping / SSE heartbeat period, in seconds
    #[arg(long, env = "SWITCHBOARD_PING_INTERVAL", default_value_t = 30)]
    pub ping_interval: u64,
    /// Browser origin (`https://app.example.com`) allowed to open a WebSocket
    /// or publish, besides the chat page's own (repeatable; `*` allows any)
    #[arg(long, env = "SWITCHBOARD_ALLOWED_ORIGIN", value_delimiter = ',')]
    pub allowed_origin: Vec<String>,
    /// Host name or address (HOST or HOST:PORT) browsers use to reach the chat
    /// page, e.g. through a proxy (repeatable). Without a port: the HTTP port,
    /// or 80/443. Default: only the HTTP listener's own address (and
    /// localhost, on loopback)
    #[arg(long, env = "SWITCHBOARD_PUBLIC_HOST", value_delimiter = ',')]
    pub public_host: Vec<String>,
    /// When set, REST publishing needs `Authorization: Bearer KEY`
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Messages per second one connection may send (0 = no limit)
    #[arg(long, env = "SWITCHBOARD_RATE_LIMIT", default_value_t = 0)]
    pub rate_limit: u32,
    /// Plain HTTP connections (page, REST, health, metrics; not SSE streams,
    /// which count under --max-connections) open at once; past it, 503
    #[arg(long, env = "SWITCHBOARD_MAX_HTTP_CONNECTIONS", default_value_t = 256)]
    pub max_http_connections: usize,
    /// Share rooms, ids and history with every node on this Redis
    /// (redis://HOST:PORT[/DB]); without it, one node in memory
    #[arg(long, env = "SWITCHBOARD_REDIS")]
    pub redis: Option<String>,
    /// This node's name, with --redis [default: the host name and the HTTP port]
    #[arg(long, env = "SWITCHBOARD_NODE_NAME")]
    pub node_name: Option<String>,
    /// With --redis: seconds between this node's heartbeats; a node silent
    /// for three is taken out of presence, its members with `left` notices
    #[arg(long, env = "SWITCHBOARD_HEARTBEAT", default_value_t = 5.0)]
    pub heartbeat: f64,
    /// Require a JWT signed with this HS256 secret from every subscriber
    /// (docs/auth.md); prefer --jwt-secret-file or the env var to keep it
    /// out of `ps`
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// Like --jwt-secret, read from this file (one trailing newline dropped)
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Require a JWT signed with the private half of this PEM public key:
    /// RS256 for an RSA key, ES256 for an EC P-256 key
    #[arg(long, env = "SWITCHBOARD_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// With tokens on, also require this `aud` claim
    #[arg(long, env = "SWITCHBOARD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// With tokens on, also require this `iss` claim
    #[arg(long, env = "SWITCHBOARD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// A tool instead of the server
    #[command(subcommand)]
    pub tool: Option<Tool>,
}

/// What the binary can do besides serving.
#[derive(Debug, clap::Subcommand)]
pub enum Tool {
    /// Print a signed token (HS256), for trying tokens out
    Token(TokenArgs),
}

/// A secret from the command line: its `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `--max-connections` when it is not given.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Which browser origins may open a WebSocket or publish (`origin.rs` has
/// the whole rule).
#[derive(Clone, Debug, PartialEq)]
pub enum Origins {
    /// Only the chat page's own: the HTTP listener's address, localhost on
    /// loopback, and `--public-host`s (the default).
    Page,
    /// Any origin (`--allowed-origin '*'`).
    Any,
    /// These origins (`https://chat.example.com`, compared without case),
    /// besides the page's own.
    List(Vec<String>),
}

/// The server's settings, checked.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the HTTP listener binds.
    pub http_addr: SocketAddr,
    /// Where the WebSocket listener binds.
    pub ws_addr: SocketAddr,
    /// Where the gRPC listener binds, if anywhere.
    pub grpc_addr: Option<SocketAddr>,
    /// Per-subscriber queue length.
    pub send_buffer: usize,
    /// Largest inbound message.
    pub max_message_bytes: usize,
    /// Connection limit across transports.
    pub max_connections: usize,
    /// Whether the user chose `max_connections` (else it is the default, and
    /// the kernel's limits may lower it without a warning).
    pub max_connections_chosen: bool,
    /// Events kept per room.
    pub history: usize,
    /// Rooms that may exist at once.
    pub max_rooms: usize,
    /// Memory all rooms' history may hold together.
    pub max_history_bytes: usize,
    /// How long a room without members keeps its history after its last use.
    pub room_expiry: Duration,
    /// Rooms with more members than this send no joined/left notices.
    pub join_notices_max: usize,
    /// Ping / heartbeat period; a WebSocket peer silent for two is dropped.
    pub ping_interval: Duration,
    /// Browser origins allowed on the WebSocket listener and to publish.
    pub allowed_origins: Origins,
    /// Where browsers reach the chat page, besides the listener's address.
    pub public_hosts: Vec<PublicHost>,
    /// The REST publishing key, if any.
    pub api_key: Option<String>,
    /// Messages per second per connection; `None` for no limit.
    pub rate_limit: Option<u32>,
    /// How long one socket write may block before the peer counts as gone
    /// (Go's chat example calls it `writeWait`). Not on the command line.
    pub write_timeout: Duration,
    /// How long shutdown waits for connection threads before exiting anyway.
    pub shutdown_grace: Duration,
    /// Plain HTTP connections open at once (`--max-http-connections`).
    pub max_http_connections: usize,
    /// Each HTTP request, head and body, and each WebSocket handshake must
    /// arrive within this long of when the server starts waiting for it; an
    /// idle keep-alive connection closes after it too. Not on the command line.
    pub request_timeout: Duration,
    /// `--redis`: the Redis every node shares, if any.
    pub redis: Option<String>,
    /// `--node-name`; `None` for the host name and the HTTP port.
    pub node_name: Option<String>,
    /// `--heartbeat`, with `--redis`.
    pub heartbeat: Duration,
    /// With `--jwt-secret` or `--jwt-public-key`: how tokens are checked.
    pub jwt: Option<Arc<Verifier>>,
}

/// The token verifier the `--jwt-*` options ask for, if any; a key that
/// cannot be read or used is a startup error.
fn jwt_verifier(args: &Args) -> Result<Option<Verifier>, ConfigError> {
    let err = |m: String| ConfigError::Jwt(m);
    let read = |option: &str, path: &PathBuf| {
        std::fs::read(path).map_err(|e| err(format!("--{option} {}: {e}", path.display())))
    };
    let secret = match (&args.jwt_secret, &args.jwt_secret_file) {
        (Some(_), Some(_)) => {
            return Err(err(
                "give --jwt-secret or --jwt-secret-file, not both".into()
            ))
        }
        (Some(secret), None) => Some(secret.0.clone().into_bytes()),
        (None, Some(path)) => {
            let mut bytes = read("jwt-secret-file", path)?;
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
            }
            Some(bytes)
        }
        (None, None) => None,
    };
    let verifier = match (secret, &args.jwt_public_key) {
        (Some(_), Some(_)) => {
            return Err(err(
                "give a JWT secret or --jwt-public-key, not both: the algorithm is the key's"
                    .into(),
            ))
        }
        (Some(secret), None) => {
            Verifier::hs256(&secret).map_err(|e| err(format!("--jwt-secret: {e}")))?
        }
        (None, Some(path)) => Verifier::from_public_key_pem(&read("jwt-public-key", path)?)
            .map_err(|e| err(format!("--jwt-public-key {}: {e}", path.display())))?,
        (None, None) => {
            if args.jwt_audience.is_some() || args.jwt_issuer.is_some() {
                return Err(err(
                    "--jwt-audience and --jwt-issuer need --jwt-secret or --jwt-public-key".into(),
                ));
            }
            return Ok(None);
        }
    };
    let verifier = match args.jwt_audience.as_deref().filter(|a| !a.is_empty()) {
        Some(audience) => verifier.with_audience(audience),
        None => verifier,
    };
    Ok(Some(
        match args.jwt_issuer.as_deref().filter(|i| !i.is_empty()) {
            Some(issuer) => verifier.with_issuer(issuer),
            None => verifier,
        },
    ))
}

/// A setting that cannot work; the process exits with status 2 and this line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An address that does not parse.
    #[error("--{option}: {value:?} is not an address like 127.0.0.1:8080")]
    BadAddress {
        /// The option.
        option: &'static str,
        /// What was given.
        value: String,
    },
    /// A number that must be positive.
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    /// A `--public-host` that is not `HOST` or `HOST:PORT`.
    #[error(
        "--public-host: {0:?} is not HOST or HOST:PORT (a whole origin goes in --allowed-origin)"
    )]
    BadPublicHost(String),
    /// A `--redis` that is not a Redis URL.
    #[error("--redis: {0:?} is not a URL like redis://127.0.0.1:6379 or redis://HOST:PORT/DB")]
    BadRedis(String),
    /// A `--node-name` that is empty or holds spaces or control characters.
    #[error("--node-name: {0:?} must be 1 to 64 characters, without spaces")]
    BadNodeName(String),
    /// A `--heartbeat` out of range.
    #[error("--heartbeat: {0} must be between 0.1 and 3600 seconds")]
    BadHeartbeat(f64),
    /// `--grpc` on a binary built without the feature.
    #[error("--grpc needs a binary built with `--features grpc`")]
    NoGrpc,
    /// A JWT option that cannot work.
    #[error("{0}")]
    Jwt(String),
}

impl Config {
    /// Checks what clap read.
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let addr = |option: &'static str, value: &str| {
            value
                .parse::<SocketAddr>()
                .map_err(|_| ConfigError::BadAddress {
                    option,
                    value: value.to_owned(),
                })
        };
        let grpc_addr = args.grpc.as_deref().map(|a| addr("grpc", a)).transpose()?;
        if grpc_addr.is_some() && !cfg!(feature = "grpc") {
            return Err(ConfigError::NoGrpc);
        }
        for (option, value) in [
            ("send-buffer", args.send_buffer),
            ("max-message-size", args.max_message_size),
            (
                "max-connections",
                args.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            ),
            ("ping-interval", args.ping_interval as usize),
            ("max-http-connections", args.max_http_connections),
            ("max-rooms", args.max_rooms),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(option));
            }
        }
        let allowed_origins = if args.allowed_origin.is_empty() {
            Origins::Page
        } else if args.allowed_origin.iter().any(|o| o == "*") {
            Origins::Any
        } else {
            Origins::List(
                args.allowed_origin
                    .iter()
                    .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                    .collect(),
            )
        };
        if let Some(url) = &args.redis {
            let parses = url.starts_with("redis://") && ::redis::Client::open(url.as_str()).is_ok();
            if !parses {
                return Err(ConfigError::BadRedis(url.clone()));
            }
        }
        if let Some(name) = &args.node_name {
            let fits = (1..=64).contains(&name.chars().count())
                && !name.chars().any(|c| c.is_whitespace() || c.is_control());
            if !fits {
                return Err(ConfigError::BadNodeName(name.clone()));
            }
        }
        let heartbeat = Duration::try_from_secs_f64(args.heartbeat)
            .ok()
            .filter(|h| *h >= Duration::from_millis(100) && *h <= Duration::from_secs(3600))
            .ok_or(ConfigError::BadHeartbeat(args.heartbeat))?;
        let public_hosts = args
            .public_host
            .iter()
            .map(|h| h.trim().parse())
            .collect::<Result<Vec<PublicHost>, ConfigError>>()?;
        let jwt = jwt_verifier(&args)?.map(Arc::new);
        Ok(Config {
            http_addr: addr("http", &args.http)?,
            ws_addr: addr("ws", &args.ws)?,
            grpc_addr,
            send_buffer: args.send_buffer,
            max_message_bytes: args.max_message_size,
            max_connections: args.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            max_connections_chosen: args.max_connections.is_some(),
            history: args.history,
            max_rooms: args.max_rooms,
            max_history_bytes: args.max_history_bytes,
            room_expiry: Duration::from_secs(args.room_expiry),
            join_notices_max: args.join_notices_max,
            ping_interval: Duration::from_secs(args.ping_interval),
            allowed_origins,
            public_hosts,
            api_key: args.api_key.filter(|k| !k.is_empty()),
            rate_limit: (args.rate_limit > 0).then_some(args.rate_limit),
            write_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(3),
            max_http_connections: args.max_http_connections,
            request_timeout: Duration::from_secs(10),
            redis: args.redis,
            node_name: args.node_name,
            heartbeat,
            jwt,
        })
    }

    /// What the hub keeps, and for how long.
    pub fn retention(&self) -> Retention {
        Retention {
            history: self.history,
            max_rooms: self.max_rooms,
            max_history_bytes: self.max_history_bytes,
            room_expiry: self.room_expiry,
            join_notices_max: self.join_notices_max,
        }
    }

    /// Defaults on `127.0.0.1:0` for every listener, for tests and examples.
    pub fn for_tests() -> Config {
        let args = Args::parse_from([
            "switchboard",
            "--http",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
        ]);
        Config::from_args(args).expect("the test defaults are valid")
    }
}
