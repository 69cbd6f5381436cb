//! The way out of a `Subscribe` or `Chat` stream: `EventStream` takes
//! events from the subscriber's queue without blocking the runtime, and the
//! doorbell thread wakes it when the queue has something (see the module
//! doc of `grpc` for why it takes a thread).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crossbeam_channel::{select, Receiver, Select, Sender, TryRecvError};
use log::debug;
use tokio::sync::{oneshot, Notify};
use tokio_stream::Stream;
use tonic::Status;

use crate::auth::Expiry;
use crate::hub::{Command, HubHandle};
use crate::protocol::{ClientId, Event};
use crate::queue::{Inbox, Outbound, Queued};
use crate::transport::Permit;

use super::convert::to_proto;
use super::proto;

/// The response stream of `Subscribe` and `Chat`: one hub subscriber's queue,
/// read without blocking, with the doorbell thread waking it when it is empty.
pub struct EventStream {
    pub(super) id: ClientId,
    pub(super) inbox: Inbox,
    /// Events taken from the queue but not yet sent: a replay or a run
    /// arrives as one item.
    pub(super) backlog: VecDeque<Arc<Event>>,
    pub(super) bell: Arc<Notify>,
    /// The bell, as a future registered to wake this stream.
    pub(super) waiting: Pin<Box<tokio::sync::futures::OwnedNotified>>,
    /// "I found the queue empty": the doorbell may look again. Capacity one.
    pub(super) drained: Sender<()>,
    /// `Chat` only: the reader's verdict on a bad request.
    pub(super) abort: Option<oneshot::Receiver<Status>>,
    /// The last room event sent, for the slow consumer's resume hint.
    pub(super) last_id: u64,
    pub(super) finished: bool,
    /// With a token: ends the stream `UNAUTHENTICATED` when it runs out,
    /// unless a `Chat`'s refresh moved the end (the timer is then re-armed).
    pub(super) expires: Option<(Arc<Expiry>, Pin<Box<tokio::time::Sleep>>)>,
    /// Never sent on: dropping the stream (tonic does when the client goes)
    /// disconnects it, and the doorbell leaves the hub.
    pub(super) _gone: Sender<()>,
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
            self.inbox.bound(),
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
        if let Some((expiry, timer)) = &mut this.expires {
            while timer.as_mut().poll(cx).is_ready() {
                if expiry.is_past() {
                    debug!("{} grpc stream ends: token expired", this.id);
                    return this.end(Some(Status::unauthenticated("token expired")));
                }
                let at = tokio::time::Instant::from_std(expiry.deadline());
                timer.as_mut().reset(at); // refreshed meanwhile
            }
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
            if this.inbox.is_too_slow() {
                return this.too_slow();
            }
            if let Some(event) = this.backlog.pop_front() {
                return this.send(&event);
            }
            match this.inbox.try_recv() {
                Ok(item) => match item {
                    Outbound::Event(event) => return this.send(&event),
                    Outbound::GoingAway => {
                        debug!("{} grpc stream ends: server shutting down", this.id);
                        return this.end(None);
                    }
                    _ => item.for_each_event(|event| this.backlog.push_back(event)),
                },
                Err(TryRecvError::Disconnected) if this.inbox.is_too_slow() => {
                    return this.too_slow()
                }
                Err(TryRecvError::Disconnected) => {
                    // A `Chat` reader that found a bad request sends its
                    // verdict, then leaves the hub: the verdict may have come
                    // since it was looked for above, and it must win.
                    if let Some(Ok(status)) = this.abort.as_mut().map(|a| a.try_recv()) {
                        return this.end(Some(status));
                    }
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
pub(super) struct Doorbell {
    pub(super) id: ClientId,
    /// The stream's queue, only ever waited on (`Select::ready`), never read.
    pub(super) events: Receiver<Queued>,
    pub(super) bell: Arc<Notify>,
    pub(super) drained: Receiver<()>,
    pub(super) gone: Receiver<()>,
    pub(super) hub: HubHandle,
    /// `Subscribe`: the doorbell joins the hub (there is no reader).
    pub(super) connect: Option<Command>,
    /// `Chat`: dropped when the doorbell ends, so the reader stops too.
    pub(super) stop_reader: Option<oneshot::Sender<()>>,
    pub(super) _permit: Permit,
    pub(super) _done: Sender<()>,
}

impl Doorbell {
    pub(super) fn run(mut self) {
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
