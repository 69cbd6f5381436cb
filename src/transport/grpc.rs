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
//! - a slow client: the hub marks its `Hangup` too slow and closes its queue;
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

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, select, Receiver, Select, Sender, TryRecvError};
use log::{debug, error, info, warn};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch, Notify};
use tokio_stream::Stream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request as GrpcRequest, Response, Status, Streaming};

use crate::hub::{Command, HubHandle, PublishError, Subscriber};
use crate::os::threads::{spawn_named, READER_STACK_BYTES, WRITER_STACK_BYTES};
use crate::protocol::{Body, ClientId, Event, ParseError, Request, Transport};
use crate::queue::{Hangup, Outbound};
use crate::room::{Name, RoomName};
use crate::subscription::{Subscription, SubscriptionBuilder};
use crate::transport::{Permit, Shared};

use proto::chat_request::Action;
use proto::switchboard_server::{Switchboard, SwitchboardServer};

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
        let name = name.unwrap_or_else(|| Name::guest(id.0));
        debug!("{id} {} grpc subscribe {rooms:?}", show(peer));
        let (stream, subscriber, mut doorbell) = self.subscription(id, name, permit);
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
        let permit = self.permit()?;
        let id = self.shared.ids.next();
        debug!("{id} {} grpc chat open", show(peer));
        let (mut stream, subscriber, mut doorbell) =
            self.subscription(id, Name::guest(id.0), permit);
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
    ) -> (EventStream, Subscriber, Doorbell) {
        let (to_client, events) = crossbeam_channel::unbounded();
        let hangup = Hangup::new(None, self.shared.config.send_buffer); // the stream notices a closed queue by itself
        let bell = Arc::new(Notify::new());
        let (to_doorbell, drained) = bounded(1);
        let (gone_guard, gone) = bounded(0);
        let doorbell = Doorbell {
            id,
            events: events.clone(),
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
            events,
            backlog: VecDeque::new(),
            hangup: Arc::clone(&hangup),
            waiting: Box::pin(Arc::clone(&bell).notified_owned()),
            bell,
            drained: to_doorbell,
            abort: None,
            last_id: 0,
            finished: false,
            _gone: gone_guard,
        };
        let subscriber = Subscriber {
            id,
            name,
            transport: Transport::Grpc,
            events: to_client,
            hangup,
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

/// The response stream of `Subscribe` and `Chat`: one hub subscriber's queue,
/// read without blocking, with the doorbell thread waking it when it is empty.
pub struct EventStream {
    id: ClientId,
    events: Receiver<Outbound>,
    /// Events taken from the queue but not yet sent: a replay or a run
    /// arrives as one item.
    backlog: VecDeque<Arc<Event>>,
    hangup: Arc<Hangup>,
    bell: Arc<Notify>,
    /// The bell, as a future registered to wake this stream.
    waiting: Pin<Box<tokio::sync::futures::OwnedNotified>>,
    /// "I found the queue empty": the doorbell may look again. Capacity one.
    drained: Sender<()>,
    /// `Chat` only: the reader's verdict on a bad request.
    abort: Option<oneshot::Receiver<Status>>,
    /// The last room event sent, for the slow consumer's resume hint.
    last_id: u64,
    finished: bool,
    /// Never sent on: dropping the stream (tonic does when the client goes)
    /// disconnects it, and the doorbell leaves the hub.
    _gone: Sender<()>,
}

impl EventStream {
    fn send(&mut self, event: &Event) -> Poll<Option<Result<proto::Event, Status>>> {
        if let Some(id) = event.id() {
            self.last_id = id;
        }
        Poll::Ready(Some(Ok(to_proto(event))))
    }

    fn end(&mut self, status: Option<Status>) -> Poll<Option<Result<proto::Event, Status>>> {
        self.finished = true;
        Poll::Ready(status.map(Err))
    }

    fn too_slow(&mut self) -> Poll<Option<Result<proto::Event, Status>>> {
        debug!("{} grpc stream ends: slow consumer", self.id);
        let message = format!(
            "slow consumer: more than {} events were waiting; subscribe again with since={}",
            self.events.capacity().unwrap_or(0),
            self.last_id
        );
        self.end(Some(Status::resource_exhausted(message)))
    }
}

impl Stream for EventStream {
    type Item = Result<proto::Event, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(abort) = &mut this.abort {
            match Pin::new(abort).poll(cx) {
                Poll::Ready(Ok(status)) => return this.end(Some(status)),
                Poll::Ready(Err(_)) => this.abort = None, // the reader ended without a complaint
                Poll::Pending => {}
            }
        }
        loop {
            // Checked before every event: once the hub gave up on this client,
            // what is still queued is not worth sending.
            if this.hangup.is_too_slow() {
                return this.too_slow();
            }
            if let Some(event) = this.backlog.pop_front() {
                return this.send(&event);
            }
            match this.events.try_recv() {
                Ok(item) => {
                    this.hangup.took(&item);
                    match item {
                        Outbound::Event(event) => return this.send(&event),
                        Outbound::GoingAway => {
                            debug!("{} grpc stream ends: server shutting down", this.id);
                            return this.end(None);
                        }
                        _ => item.for_each_event(|event| this.backlog.push_back(event)),
                    }
                }
                Err(TryRecvError::Disconnected) if this.hangup.is_too_slow() => {
                    return this.too_slow()
                }
                Err(TryRecvError::Disconnected) => {
                    debug!("{} grpc stream ends: left the hub", this.id);
                    return this.end(None);
                }
                Err(TryRecvError::Empty) => {
                    let _ = this.drained.try_send(()); // full: the doorbell has not looked yet
                    match this.waiting.as_mut().poll(cx) {
                        // Rung after we looked (or a stale ring): look again.
                        Poll::Ready(()) => {
                            this.waiting = Box::pin(Arc::clone(&this.bell).notified_owned());
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }
        }
    }
}

/// The doorbell thread (`grpc c12`): wakes the stream when its queue has
/// something, and takes the subscriber out of the hub when the stream goes.
struct Doorbell {
    id: ClientId,
    events: Receiver<Outbound>,
    bell: Arc<Notify>,
    drained: Receiver<()>,
    gone: Receiver<()>,
    hub: HubHandle,
    /// `Subscribe`: the doorbell joins the hub (there is no reader).
    connect: Option<Command>,
    /// `Chat`: dropped when the doorbell ends, so the reader stops too.
    stop_reader: Option<oneshot::Sender<()>>,
    _permit: Permit,
    _done: Sender<()>,
}

impl Doorbell {
    fn run(mut self) {
        if let Some(connect) = self.connect.take() {
            self.hub.wait_to_join(); // while a crowd lags: see `admission`
            let _ = self.hub.send(connect); // a stopped hub drops the queue: the stream ends
        }
        loop {
            // Wait, without taking anything, until the queue has an event or is closed.
            let mut ready = Select::new();
            let queue = ready.recv(&self.events);
            ready.recv(&self.gone);
            if ready.ready() != queue {
                break; // the stream is gone: the client cancelled or the RPC ended
            }
            self.bell.notify_one();
            // One ring until the stream has emptied the queue: no spinning on a
            // queue the client is slow to drain.
            select! {
                recv(self.drained) -> _ => {}
                recv(self.gone) -> _ => break,
            }
        }
        debug!("{} grpc stream closed", self.id);
        let _ = self.hub.send(Command::Disconnect { id: self.id }); // a stopped hub has forgotten us
        drop(self.stop_reader.take());
    }
}

/// The reader thread of a `Chat` (`grpc-r c13`): each `ChatRequest` becomes
/// a `Command`, in order.
struct ChatReader {
    id: ClientId,
    inbound: Streaming<proto::ChatRequest>,
    runtime: Handle,
    /// Fires (its sender drops) when the doorbell ends.
    stop: oneshot::Receiver<()>,
    stopping: watch::Receiver<()>,
    hub: HubHandle,
    abort: Option<oneshot::Sender<Status>>,
    max_message_bytes: usize,
    connect: Option<Command>,
    _done: Sender<()>,
}

impl ChatReader {
    fn run(mut self) {
        let id = self.id;
        if let Some(connect) = self.connect.take() {
            self.hub.wait_to_join(); // while a crowd lags: see `admission`
            let _ = self.hub.send(connect);
        }
        loop {
            let (inbound, stop, stopping) = (&mut self.inbound, &mut self.stop, &mut self.stopping);
            let next = self.runtime.block_on(async {
                tokio::select! {
                    biased;
                    _ = stop => None,
                    _ = stopping.changed() => None,
                    next = inbound.message() => Some(next),
                }
            });
            let request = match next {
                None => break,
                Some(Ok(Some(request))) => request,
                Some(Ok(None)) => {
                    debug!("{id} grpc chat: the client closed its side");
                    break;
                }
                Some(Err(status)) => {
                    debug!("{id} grpc chat read ended: {}", status.message());
                    break;
                }
            };
            match chat_request(request, self.max_message_bytes) {
                Ok(request) => {
                    if self
                        .hub
                        .send(Command::Request { from: id, request })
                        .is_err()
                    {
                        break; // shutting down
                    }
                }
                Err(status) => {
                    debug!("{id} grpc chat: bad request: {}", status.message());
                    if let Some(abort) = self.abort.take() {
                        let _ = abort.send(status); // the stream may be gone already
                    }
                    break;
                }
            }
        }
        let _ = self.hub.send(Command::Disconnect { id }); // a stopped hub has forgotten us
    }
}

/// The thread of one `Publish` (`grpc-p c14`): each message goes to the hub
/// and waits for its id, so a flooding publisher is slowed by the hub's
/// bounded command queue like any other.
struct Publisher {
    id: ClientId,
    inbound: Streaming<proto::PublishRequest>,
    runtime: Handle,
    stopping: watch::Receiver<()>,
    hub: HubHandle,
    max_message_bytes: usize,
    _permit: Permit,
    _done: Sender<()>,
}

impl Publisher {
    fn run(mut self) -> Result<proto::PublishSummary, Status> {
        let id = self.id;
        let from_id: Arc<str> = PUBLISH_FROM_ID.into();
        let mut summary = proto::PublishSummary::default();
        loop {
            let (inbound, stopping) = (&mut self.inbound, &mut self.stopping);
            let next = self.runtime.block_on(async {
                tokio::select! {
                    biased;
                    _ = stopping.changed() => None,
                    next = inbound.message() => Some(next),
                }
            });
            let message = match next {
                None => {
                    return Err(Status::unavailable(format!(
                        "the server is shutting down; {} accepted, last id {}",
                        summary.accepted, summary.last_id
                    )))
                }
                Some(Ok(None)) => {
                    debug!("{id} grpc publish done: {} accepted", summary.accepted);
                    return Ok(summary);
                }
                Some(Ok(Some(message))) => message,
                Some(Err(status)) => return Err(status), // the client went away: nobody reads this
            };
            let (room, from, text) =
                publish_request(message, self.max_message_bytes).map_err(|e| {
                    let n = summary.accepted + 1;
                    Status::invalid_argument(format!(
                        "message {n}: {}; {} accepted before it",
                        e.message(),
                        summary.accepted
                    ))
                })?;
            match self.hub.publish(room, from, Arc::clone(&from_id), text) {
                Ok(event_id) => {
                    summary.accepted += 1;
                    summary.last_id = event_id;
                }
                Err(PublishError::Refused(refused)) => {
                    return Err(Status::unavailable(format!(
                        "message {}: {refused}; {} accepted before it, last id {}",
                        summary.accepted + 1,
                        summary.accepted,
                        summary.last_id
                    )))
                }
                Err(PublishError::Stopped(_)) => {
                    return Err(Status::unavailable(format!(
                        "the server is shutting down; {} accepted, last id {}",
                        summary.accepted, summary.last_id
                    )))
                }
            }
        }
    }
}

/// One event in the flat proto shape (see the module doc for the mapping).
pub fn to_proto(event: &Event) -> proto::Event {
    let mut out = proto::Event {
        r#type: event.kind().to_owned(),
        ..Default::default()
    };
    match event.body() {
        Body::Message {
            room,
            id,
            from,
            from_id,
            text,
            ts,
        } => {
            out.room = room.to_string();
            out.id = *id;
            out.from = from.to_string();
            out.from_id = from_id.to_string();
            out.text = text.clone();
            out.ts = *ts as i64;
        }
        Body::Joined {
            room,
            id,
            name,
            from_id,
            ts,
        }
        | Body::Left {
            room,
            id,
            name,
            from_id,
            ts,
        } => {
            out.room = room.to_string();
            out.id = *id;
            out.from = name.to_string();
            out.from_id = from_id.to_string();
            out.ts = *ts as i64;
        }
        Body::Welcome { id, name, rooms } => {
            let rooms: Vec<&str> = rooms.iter().map(RoomName::as_str).collect();
            out.room = rooms.join(",");
            out.from = name.to_string();
            out.from_id = id.to_string();
        }
        Body::Presence { room, .. } => {
            out.room = room.to_string();
            out.text = event.text_line();
        }
        Body::Error { code, message } => out.text = format!("{code}: {message}"),
        Body::Rooms { .. } | Body::Help { .. } => out.text = event.text_line(),
    }
    out
}

/// Checks one `ChatRequest`.
fn chat_request(request: proto::ChatRequest, max_message_bytes: usize) -> Result<Request, Status> {
    match request.action {
        None => Err(Status::invalid_argument(
            "a ChatRequest needs one of join, leave, send or nick",
        )),
        Some(Action::Join(room)) => Ok(Request::Join(room_name(&room)?)),
        Some(Action::Leave(room)) => Ok(Request::Leave(room_name(&room)?)),
        Some(Action::Nick(name)) => Ok(Request::Nick(display_name(&name)?)),
        Some(Action::Send(send)) => {
            // An empty room means the room joined last, as a WebSocket message without one.
            let room = match send.room.as_str() {
                "" => None,
                raw => Some(room_name(raw)?),
            };
            let text = message_text(send.text, max_message_bytes)?;
            Ok(Request::Say { room, text })
        }
    }
}

/// Checks one `PublishRequest`.
fn publish_request(
    request: proto::PublishRequest,
    max_message_bytes: usize,
) -> Result<(RoomName, Name, String), Status> {
    let room = room_name(&request.room)?;
    let from = match request.from.as_str() {
        "" => Name::parse(PUBLISH_DEFAULT_NAME).expect("the default publisher name is valid"),
        raw => display_name(raw)?,
    };
    let text = message_text(request.text, max_message_bytes)?;
    Ok((room, from, text))
}

fn room_name(raw: &str) -> Result<RoomName, Status> {
    RoomName::parse(raw).map_err(|e| invalid(e, raw))
}

fn display_name(raw: &str) -> Result<Name, Status> {
    Name::parse(raw).map_err(|e| invalid(e, raw))
}

fn message_text(text: String, max_message_bytes: usize) -> Result<String, Status> {
    if text.trim().is_empty() {
        return Err(Status::invalid_argument("message text is empty"));
    }
    if text.len() > max_message_bytes {
        let e = ParseError::TooLarge {
            len: text.len(),
            limit: max_message_bytes,
        };
        return Err(Status::invalid_argument(e.to_string()));
    }
    Ok(text)
}

/// `INVALID_ARGUMENT` saying what is wrong and what was sent (cut short: a
/// status message travels in an HTTP/2 header).
fn invalid(e: ParseError, raw: &str) -> Status {
    const SHOWN_CHARS: usize = 40;
    let shown: String = raw.chars().take(SHOWN_CHARS).collect();
    let more = if raw.chars().count() > SHOWN_CHARS {
        "…"
    } else {
        ""
    };
    Status::invalid_argument(format!("{e} (got {shown:?}{more})"))
}

fn show(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "-".to_owned(), |p| p.to_string())
}
