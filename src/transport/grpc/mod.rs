//! The gRPC front (feature `grpc`): `Subscribe`, `Publish` and `Chat` from
//! `proto/switchboard.proto`, served by tonic on `--grpc`, on the same hub as
//! every other transport. The only `async` code in switchboard lives here.
//!
//! ```text
//!                 tokio runtime ([grpc] + [grpc-rt]): HTTP/2, tonic, encoding
//!                 ─────────────────────────────────────────────────────────────
//! Subscribe c12:  EventStream ──try_recv── queue (--send-buffer events) <── [hub]
//!                     ^ bell (Notify)          | ready?
//!                     └──────────────── [grpc c12]  rings; sends Connect / Disconnect
//! Chat c13:       the same, plus [grpc-r c13]: reads ChatRequests ──Command──> [hub]
//! Publish c14:    [grpc-p c14]: reads PublishRequests ──Command::Publish──> [hub]
//! ```
//!
//! Why it looks like this. The hub speaks blocking crossbeam channels and the
//! rule "never block the hub"; tonic speaks futures and the rule "never block
//! the runtime". Each side keeps its rule by giving every wait to a thread that
//! is allowed to block:
//!
//! - **Out (events).** A stream's `EventStream` *is* the hub subscriber: it
//!   takes events straight from the subscriber's queue with
//!   `try_recv`, so `--send-buffer` is the only buffer and the slow-consumer
//!   rule is exactly the WebSocket one (queue full → the hub drops the client
//!   → the stream ends with `RESOURCE_EXHAUSTED`). When the queue is empty the
//!   stream sleeps on a `tokio::sync::Notify`, the bell. A small doorbell
//!   thread per stream (`grpc c12`) blocks on the queue with crossbeam's
//!   `Select::ready` (which waits without taking anything), rings the bell,
//!   and waits for the stream to say it drained the queue before it looks
//!   again. The doorbell never touches an event and never waits on the
//!   client, so a client that stops reading costs one sleeping thread, not a
//!   blocked one, and HTTP/2 flow control is what fills the queue.
//! - **In (requests).** Reading a client stream is a wait on the peer, and
//!   telling the hub is a wait on back-pressure; both happen on a reader
//!   thread per stream (`grpc-r c13`, `grpc-p c14`) that drives the
//!   `Streaming::message` future with `Handle::block_on`, then sends the
//!   `Command` like a WebSocket reader does. The runtime never blocks.
//!
//! Ending, whoever starts it:
//! - the client cancels: tonic drops the `EventStream`; the doorbell sees its
//!   `gone` channel disconnect and sends `Disconnect` (the `left` notices go out);
//! - the client half-closes a `Chat` (its request stream ends): the reader sends
//!   `Disconnect`, the hub closes the queue, and the stream ends `OK` once the
//!   events already queued are sent — Go's `RouteChat` returns at `io.EOF` too;
//! - a bad request (bad room, empty text, bad name): `INVALID_ARGUMENT` with a
//!   clear message; in `Chat` the reader aborts the stream through a oneshot;
//! - a `Publish` to a new room past `--max-rooms`: `UNAVAILABLE`, saying how
//!   many were accepted before it (`Subscribe` and `Chat` get an `error`
//!   event with code `unavailable` instead, and go on);
//! - a slow client: the hub marks its queue too slow and closes it;
//!   the stream ends with `RESOURCE_EXHAUSTED` and the id to resume from;
//! - shutdown: the hub queues `GoingAway` (the stream ends `OK`), the `stopping`
//!   watch channel's sender is dropped (readers stop waiting for their peers;
//!   an unfinished `Publish` gets `UNAVAILABLE`), tonic drains its connections
//!   for up to the grace period, and the runtime stops.
//!
//! Every stream, `Publish` included, takes a `--max-connections` permit;
//! `Subscribe` and `Chat` streams are hub subscribers, so the hub counts them
//! in `switchboard_connections{transport="grpc"}`.
//!
//! Each event maps to the one flat proto `Event`: `from` is the sender
//! (`message`) or the member (`joined`, `left`) or the client's own name
//! (`welcome`, whose `from_id` is its connection id and whose `room` lists
//! its rooms, comma-separated); an `error` event's `text` is `code: message`,
//! as in text mode.
//!
//! Files: this one serves the three calls and starts each stream's threads;
//! `stream` is the way out (the `EventStream` and its doorbell thread),
//! `readers` the way in (a `Chat`'s and a `Publish`'s reader threads), and
//! `convert` maps between the proto messages and the hub's.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::bounded;
use log::{debug, error, info, warn};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch, Notify};
use tonic::transport::server::TcpIncoming;
use tonic::{Request as GrpcRequest, Response, Status, Streaming};

use crate::auth::{self, Access, Expiry, Session, TokenError};
use crate::hub::{Command, Subscriber};
use crate::os::threads::{spawn_named, READER_STACK_BYTES, WRITER_STACK_BYTES};
use crate::protocol::{ClientId, Transport};
use crate::queue::{self, OnSlow};
use crate::room::Name;
use crate::subscription::{Subscription, SubscriptionBuilder};
use crate::transport::{Permit, Shared};

use proto::switchboard_server::{Switchboard, SwitchboardServer};

mod convert;
mod readers;
mod stream;

pub use convert::to_proto;
use convert::{invalid, show};
use readers::{ChatReader, Publisher};
use stream::{Doorbell, EventStream};

/// The messages, server and client generated from `proto/switchboard.proto`
/// by `build.rs` (package `switchboard.v1`). Tests and embedders use the
/// client: `proto::switchboard_client::SwitchboardClient`.
#[allow(missing_docs)] // generated code; the .proto file is its documentation
#[allow(clippy::all, clippy::pedantic)] // generated code
pub mod proto {
    tonic::include_proto!("switchboard.v1");
}

/// The `from_id` of messages published with `Publish`.
const PUBLISH_FROM_ID: &str = "grpc";
/// The sender's name when a `PublishRequest` leaves `from` empty.
const PUBLISH_DEFAULT_NAME: &str = "grpc";
/// Room and sender fields on top of the text, for tonic's decoding limit.
const ENVELOPE_BYTES: usize = 1024;
/// The one thread that runs the runtime's accept loop polls tonic's server
/// futures, which are not sized for the small stacks of connection threads.
const RUNTIME_STACK_BYTES: usize = 2 * 1024 * 1024;
/// How long the runtime may take to stop once its connections are drained or cut.
const RUNTIME_STOP: std::time::Duration = std::time::Duration::from_secs(1);

/// Starts the gRPC front on `listener` (already bound, so `Server::start`
/// knows the address and a taken port fails at once). The returned thread
/// (`grpc`) owns the tokio runtime and ends after the server shuts down.
pub fn spawn(listener: std::net::TcpListener, shared: Shared) -> io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?; // tokio requires it of a listener it adopts
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // One worker: it only moves HTTP/2 frames; every wait is on a stream's own thread.
        .worker_threads(1)
        .max_blocking_threads(1)
        .thread_name("grpc-rt")
        .enable_all()
        .build()?;
    spawn_named("grpc".into(), RUNTIME_STACK_BYTES, move || {
        serve(runtime, listener, shared)
    })
}

/// The `grpc` thread: serve until shutdown, drain, stop the runtime.
fn serve(runtime: tokio::runtime::Runtime, listener: std::net::TcpListener, shared: Shared) {
    let addr = listener.local_addr().ok();
    // Dropping `stop_readers` is the broadcast, as with the server's own shutdown channel.
    let (stop_readers, stopping) = watch::channel(());
    let grace = shared.config.shutdown_grace;
    let front = Front {
        shared: shared.clone(),
        runtime: runtime.handle().clone(),
        stopping,
    };
    let max_request_bytes = shared.config.max_message_bytes + ENVELOPE_BYTES;
    let service = SwitchboardServer::new(front).max_decoding_message_size(max_request_bytes);
    let ping = shared.config.ping_interval;
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => return error!("grpc listener on {addr:?} failed: {e}"),
        };
        info!("listening: grpc {}", show(addr));
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let (begin_drain, drain) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            // A peer that stops answering HTTP/2 pings is dropped, like a silent WebSocket.
            .http2_keepalive_interval(Some(ping))
            .http2_keepalive_timeout(Some(ping))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = drain.await; // fired or dropped: either way, drain
            });
        tokio::pin!(server);
        let shutdown = shared.shutdown.clone();
        // The server's shutdown channel is a crossbeam one: wait for it where blocking is allowed.
        let signal = tokio::task::spawn_blocking(move || {
            let _ = shutdown.recv(); // nothing is ever sent: this returns when it disconnects
        });
        tokio::select! {
            result = &mut server => {
                if let Err(e) = result {
                    error!("grpc server on {addr:?} failed: {e}");
                }
                return;
            }
            _ = signal => {}
        }
        drop(stop_readers);
        let _ = begin_drain.send(());
        if tokio::time::timeout(grace, server).await.is_err() {
            warn!("grpc: connections still open after {grace:?}; cutting them");
        }
    });
    runtime.shutdown_timeout(RUNTIME_STOP);
    info!("grpc front stopped");
}

/// The service tonic calls; one per server, shared by every stream.
struct Front {
    shared: Shared,
    runtime: Handle,
    /// Disconnects (never changes) when the server shuts down.
    stopping: watch::Receiver<()>,
}

#[tonic::async_trait]
impl Switchboard for Front {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: GrpcRequest<proto::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let peer = request.remote_addr();
        let access = self.admit(&request)?;
        let wanted = request.into_inner();
        let mut subscription = SubscriptionBuilder::default();
        for raw in &wanted.rooms {
            subscription.room(raw).map_err(|e| invalid(e, raw))?;
        }
        if !wanted.name.is_empty() {
            // An empty name asks for the default `guest-<n>`.
            subscription
                .name(&wanted.name)
                .map_err(|e| invalid(e, &wanted.name))?;
        }
        // proto3 cannot tell 0 from unset; ids start at 1, so 0 means "live only".
        if wanted.since > 0 {
            subscription.since_id(wanted.since);
        }
        let Subscription { rooms, name, since } = subscription.finish();
        let permit = self.permit()?;
        let id = self.shared.ids.next();
        let name = access.name(name).unwrap_or_else(|| Name::guest(id.0));
        debug!("{id} {} grpc subscribe {rooms:?}", show(peer));
        let expiry = match &access {
            Access::Token(grants) => Some(Session::new(grants).expiry),
            Access::Open => None,
        };
        let (stream, subscriber, mut doorbell) =
            self.subscription(id, name, permit, access, expiry);
        // No reader thread here: the doorbell joins the hub.
        doorbell.connect = Some(Command::Connect {
            subscriber,
            rooms,
            since,
        });
        self.start(format!("grpc {id}"), WRITER_STACK_BYTES, move || {
            doorbell.run()
        })?;
        Ok(Response::new(stream))
    }

    async fn publish(
        &self,
        request: GrpcRequest<Streaming<proto::PublishRequest>>,
    ) -> Result<Response<proto::PublishSummary>, Status> {
        let peer = request.remote_addr();
        let access = self.admit(&request)?;
        let permit = self.permit()?;
        let id = self.shared.ids.next();
        debug!("{id} {} grpc publish open", show(peer));
        let (answer, summary) = oneshot::channel();
        let publisher = Publisher {
            id,
            inbound: request.into_inner(),
            runtime: self.runtime.clone(),
            stopping: self.stopping.clone(),
            hub: self.shared.hub.clone(),
            max_message_bytes: self.shared.config.max_message_bytes,
            access,
            _permit: permit,
            _done: self.shared.done.clone(),
        };
        self.start(format!("grpc-p {id}"), READER_STACK_BYTES, move || {
            let _ = answer.send(publisher.run()); // the client may have gone; nobody to tell
        })?;
        match summary.await {
            Ok(result) => result.map(Response::new),
            Err(_) => Err(Status::internal(
                "the publishing thread ended without an answer",
            )),
        }
    }

    type ChatStream = EventStream;

    async fn chat(
        &self,
        request: GrpcRequest<Streaming<proto::ChatRequest>>,
    ) -> Result<Response<EventStream>, Status> {
        let peer = request.remote_addr();
        let access = self.admit(&request)?;
        let permit = self.permit()?;
        let id = self.shared.ids.next();
        debug!("{id} {} grpc chat open", show(peer));
        let name = access.name(None).unwrap_or_else(|| Name::guest(id.0));
        // The reader's refreshes move the end the stream watches.
        let session = match (&access, &self.shared.config.jwt) {
            (Access::Token(grants), Some(verifier)) => {
                Some((Session::new(grants), Arc::clone(verifier)))
            }
            _ => None,
        };
        let expiry = session.as_ref().map(|(s, _)| Arc::clone(&s.expiry));
        let (mut stream, subscriber, mut doorbell) =
            self.subscription(id, name, permit, access, expiry);
        let (abort, aborted) = oneshot::channel();
        stream.abort = Some(aborted);
        let (stop_reader, reader_stop) = oneshot::channel();
        doorbell.stop_reader = Some(stop_reader);
        let reader = ChatReader {
            id,
            inbound: request.into_inner(),
            runtime: self.runtime.clone(),
            stop: reader_stop,
            stopping: self.stopping.clone(),
            hub: self.shared.hub.clone(),
            abort: Some(abort),
            max_message_bytes: self.shared.config.max_message_bytes,
            session,
            // The reader joins the hub, so its Join requests cannot overtake the Connect.
            connect: Some(Command::Connect {
                subscriber,
                rooms: Vec::new(),
                since: None,
            }),
            _done: self.shared.done.clone(),
        };
        self.start(format!("grpc {id}"), WRITER_STACK_BYTES, move || {
            doorbell.run()
        })?;
        self.start(format!("grpc-r {id}"), READER_STACK_BYTES, move || {
            reader.run()
        })?;
        Ok(Response::new(stream))
    }
}

impl Front {
    /// With tokens on, the token in the `authorization` metadata
    /// (`Bearer TOKEN`), checked; `UNAUTHENTICATED` without a good one.
    fn admit<T>(&self, request: &GrpcRequest<T>) -> Result<Access, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let token = auth::presented(None, authorization);
        auth::admit(self.shared.config.jwt.as_ref(), token).map_err(|e| match e {
            TokenError::Unavailable => Status::unavailable(e.to_string()),
            e => {
                self.shared.metrics.refused("token");
                Status::unauthenticated(e.to_string())
            }
        })
    }

    /// A place under `--max-connections`, or `UNAVAILABLE` (the gRPC face of the
    /// WebSocket listener's 503).
    fn permit(&self) -> Result<Permit, Status> {
        if self.shared.shutting_down() {
            return Err(Status::unavailable("the server is shutting down"));
        }
        self.shared.limit.try_acquire().ok_or_else(|| {
            self.shared.metrics.refused("limit");
            let max = self.shared.config.max_connections;
            warn!("grpc stream refused: at --max-connections ({max})");
            Status::unavailable(format!("the server is at --max-connections ({max})"))
        })
    }

    /// A new subscriber: its queue, the stream that reads it, and the doorbell
    /// that wakes the stream (who sends `Connect` is the caller's choice).
    fn subscription(
        &self,
        id: ClientId,
        name: Name,
        permit: Permit,
        access: Access,
        expiry: Option<Arc<Expiry>>,
    ) -> (EventStream, Subscriber, Doorbell) {
        // The stream notices a closed queue by itself; its writes are not
        // watched, so a full queue is a slow consumer (see `queue`).
        let (queue, inbox) = queue::bounded(self.shared.config.send_buffer, OnSlow::Nothing);
        let bell = Arc::new(Notify::new());
        let (to_doorbell, drained) = bounded(1);
        let (gone_guard, gone) = bounded(0);
        let doorbell = Doorbell {
            id,
            events: inbox.channel().clone(),
            bell: Arc::clone(&bell),
            drained,
            gone,
            hub: self.shared.hub.clone(),
            connect: None,
            stop_reader: None,
            _permit: permit,
            _done: self.shared.done.clone(),
        };
        let stream = EventStream {
            id,
            inbox,
            backlog: VecDeque::new(),
            waiting: Box::pin(Arc::clone(&bell).notified_owned()),
            bell,
            drained: to_doorbell,
            abort: None,
            last_id: 0,
            finished: false,
            expires: expiry.map(|expiry| {
                let at = tokio::time::Instant::from_std(expiry.deadline());
                (expiry, Box::pin(tokio::time::sleep_until(at)))
            }),
            _gone: gone_guard,
        };
        let subscriber = Subscriber {
            id,
            name,
            transport: Transport::Grpc,
            queue,
            access,
        };
        (stream, subscriber, doorbell)
    }

    /// Spawns one of a stream's threads; failing to is a refused stream.
    fn start(
        &self,
        name: String,
        stack_bytes: usize,
        body: impl FnOnce() + Send + 'static,
    ) -> Result<(), Status> {
        spawn_named(name.clone(), stack_bytes, body)
            .map(drop)
            .map_err(|e| {
                self.shared.metrics.refused("threads");
                warn!("{name} refused: cannot start a thread: {e}");
                Status::unavailable("the server cannot take more streams now")
            })
    }
}
