//! switchboard: a real-time messaging hub on OS threads and bounded channels.
//!
//! Every thread and channel, before any code:
//!
//! ```text
//! [ws-accept] -spawn-> [ws-r c7]  --Command--------------->+
//!                      [ws-w c7]  <--Outbound--------------+
//! [http]      -spawn-> [sse c9]   <--Outbound--------------+   [hub]
//!                      REST       --Command + reply tx---->+   owns clients and
//! [grpc]      -spawn-> [grpc c12] <--Command / Outbound--->+   each room's members
//!                                                              | sequence, history:
//!                                                              | now, or Answer later
//!                                                          [engine] ids + history (memory:
//!                                                              on the hub thread; --redis:
//!                                                              [redis-cmd] + [redis-sub])
//! Command: one bounded channel; full = the sender waits (back-pressure on publishers).
//! Outbound: one bounded queue per client (--send-buffer events); full while it does not read = dropped.
//!   (Nothing queued, and a WebSocket or SSE socket with room: the hub writes to it itself, never waiting.)
//! Answer: an engine that works elsewhere answers on a channel the hub selects on; never waited for.
//! ```
//!
//! One thread, the hub, owns all shared state; every other thread talks to it
//! through channels. Ids and history sit behind the engine, which the hub
//! calls and which never makes it wait: in memory by default, on the hub's
//! own thread. A WebSocket costs two small threads (reader and writer),
//! an SSE stream or a plain HTTP connection one; an event fanned out to a
//! thousand members is encoded once and shared as an `Arc<Event>`.
//!
//! Reading order for newcomers:
//! 1. [`protocol`]: what comes in (`Request`) and goes out (`Event`), and how
//!    each is written on the wire; [`subscription`]: what a subscriber asks
//!    for as it connects, parsed once for every transport.
//! 2. [`queue`]: each subscriber's queue, bounded in events
//!    (`queue::bounded`) — what goes in it (`Outbound`), who is dropped
//!    as a slow consumer (`Queue::offer`), and when the hub writes to a
//!    member's socket itself instead (`queue::through`).
//! 3. [`room`]: names checked once at the edge; a room is members + history;
//!    [`rooms`]: every room, within `--max-rooms`, `--max-history-bytes`
//!    and `--room-expiry`.
//! 4. [`hub`]: the broadcaster thread — rounds and runs, fan-out, slow
//!    consumers, replay; and [`admission`]: new members wait while a crowd
//!    of old ones lags.
//! 5. [`engine`]: ids and history behind one small boundary — the hub asks,
//!    the engine answers now or later on a channel; [`engine::MemoryEngine`]
//!    is the default, [`engine::RedisEngine`] (`--redis`) makes several
//!    nodes one hub, and the module doc says how an engine plugs in.
//! 6. [`transport::ws`]: a reader and a writer thread per WebSocket;
//!    [`pace`]: when writers linger so one wake-up carries many events.
//! 7. [`http`]: a thread per HTTP connection, bounded and timed
//!    ([`http::listener`]); [`transport::sse`]: that thread becomes the SSE
//!    stream; REST as request/reply with the hub; [`origin`]: which browser
//!    pages may open a WebSocket or publish; [`transport::refuse`]: turning
//!    connections away without a thread each; [`auth`]: what a signed token
//!    lets a subscriber do, checked at every transport's handshake and asked
//!    by the hub before each join and message.
//! 8. [`server`] and [`shutdown`]: starting everything, and ending it by
//!    dropping a channel.
//! 9. `transport::grpc` (feature `grpc`): the one place with an async
//!    runtime, bridged to the same hub.
//! 10. [`os`]: threads, memory, CPU load and a write that never waits,
//!     as the kernel sees them; the only `unsafe`.

pub mod admission;
pub mod auth;
pub mod config;
pub mod engine;
pub mod http;
pub mod hub;
pub mod log_every;
pub mod metrics;
pub mod origin;
pub mod os;
pub mod pace;
pub mod protocol;
pub mod queue;
pub mod room;
pub mod rooms;
pub mod server;
pub mod shutdown;
pub mod subscription;
pub mod transport;

pub use config::Config;
pub use server::Server;
