//! The way in: a `Chat`'s reader thread turns each `ChatRequest` into a hub
//! `Command`, and a `Publish`'s reader thread publishes each
//! `PublishRequest`, both blocking on their peer on a thread of their own so
//! the runtime never does.

use std::sync::Arc;

use crossbeam_channel::Sender;
use log::debug;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};
use tonic::{Status, Streaming};

use crate::auth::{Access, Session, Verifier};
use crate::hub::{Command, HubHandle, PublishError};
use crate::protocol::{ClientId, Request};
use crate::transport::Permit;

use super::convert::{chat_request, publish_request};
use super::{proto, PUBLISH_FROM_ID};

/// The reader thread of a `Chat` (`grpc-r c13`): each `ChatRequest` becomes
/// a `Command`, in order.
pub(super) struct ChatReader {
    pub(super) id: ClientId,
    pub(super) inbound: Streaming<proto::ChatRequest>,
    pub(super) runtime: Handle,
    /// Fires (its sender drops) when the doorbell ends.
    pub(super) stop: oneshot::Receiver<()>,
    pub(super) stopping: watch::Receiver<()>,
    pub(super) hub: HubHandle,
    pub(super) abort: Option<oneshot::Sender<Status>>,
    pub(super) max_message_bytes: usize,
    /// With tokens on: its token's user and end, moved by `refresh`.
    pub(super) session: Option<(Session, Arc<Verifier>)>,
    pub(super) connect: Option<Command>,
    pub(super) _done: Sender<()>,
}

impl ChatReader {
    pub(super) fn run(mut self) {
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
                Ok(Request::Refresh(token)) if self.session.is_some() => {
                    let (session, verifier) = self.session.as_ref().expect("checked");
                    let verdict = session.refresh(verifier, &token);
                    if self.hub.send(Command::Regrant { id, verdict }).is_err() {
                        break; // shutting down
                    }
                }
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
pub(super) struct Publisher {
    pub(super) id: ClientId,
    pub(super) inbound: Streaming<proto::PublishRequest>,
    pub(super) runtime: Handle,
    pub(super) stopping: watch::Receiver<()>,
    pub(super) hub: HubHandle,
    pub(super) max_message_bytes: usize,
    /// What its token allows (`Access::Open` with tokens off).
    pub(super) access: Access,
    pub(super) _permit: Permit,
    pub(super) _done: Sender<()>,
}

impl Publisher {
    pub(super) fn run(mut self) -> Result<proto::PublishSummary, Status> {
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
            // A token's own name wins, as on every transport.
            let from = self.access.name(Some(from)).expect("a name was given");
            if !self.access.may_publish(&room) {
                return Err(Status::permission_denied(format!(
                    "message {}: your token does not let you send to #{room}; {} accepted before it",
                    summary.accepted + 1,
                    summary.accepted
                )));
            }
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
