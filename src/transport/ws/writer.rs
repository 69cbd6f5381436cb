//! The writer thread: waits on hub events, the reader's replies and the ping
//! clock at once, drains whatever else is queued, and writes it all with one
//! vectored syscall. Event frames come pre-encoded, shared by every member.

use std::io::{self, IoSlice, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{never, Receiver, Select, Sender, TryRecvError};
use log::{debug, trace};
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame};
use tungstenite::Message;

use crate::auth::Expiry;
use crate::pace::Pace;
use crate::protocol::{encode_frame, ClientId, Event, Format};
use crate::queue::{Inbox, Outbound, Queued};
use crate::transport::refuse::CLOSE_GRACE;
use crate::transport::Permit;

use super::reader::Reply;

/// Frames in one batch, and in one `writev`, at most (the kernel's `IOV_MAX`
/// is 1024).
const MAX_BATCH_FRAMES: usize = 256;

/// The writer thread.
pub(super) struct Writer {
    pub(super) id: ClientId,
    pub(super) socket: Arc<TcpStream>,
    /// The connection's queue (for `/echo`, one the hub never sees).
    pub(super) inbox: Inbox,
    pub(super) replies: Receiver<Reply>,
    pub(super) format: Format,
    pub(super) ping_interval: Duration,
    /// When the connection's token runs out (close 1008 `token expired`).
    pub(super) expiry: Option<Arc<Expiry>>,
    /// Its place under `--max-connections`, held while it runs.
    pub(super) _permit: Arc<Permit>,
    pub(super) _done: Sender<()>,
}

/// What one pass of the writer found to send.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) frames: Vec<Piece>,
    /// A close frame ends the batch and the connection.
    pub(super) close: Option<Bytes>,
}

/// One frame of a batch: an event, whose frame it shares with every other
/// member (held by its `Arc`, borrowed for the `writev`), or bytes of our own.
pub(super) enum Piece {
    Event(Arc<Event>),
    Own(Bytes),
}

impl Piece {
    fn bytes(&self, format: Format) -> &[u8] {
        match self {
            Piece::Event(event) => event.ws_frame(format),
            Piece::Own(bytes) => bytes,
        }
    }
}

impl Batch {
    fn add_outbound(&mut self, item: Outbound) {
        match item {
            Outbound::GoingAway => self.close_with(CloseCode::Away, "server shutting down"),
            // Taken first of all under the write lock (`queue::through`).
            Outbound::Unfinished(rest) => self.push(Piece::Own(Bytes::from(rest.bytes))),
            item => item.for_each_event(|event| self.push(Piece::Event(event))),
        }
    }

    fn add_reply(&mut self, reply: Reply) {
        let frame = match reply {
            Reply::Pong(payload) => encode_frame(Frame::pong(payload)),
            Reply::Echo(Message::Text(text)) => {
                encode_frame(Frame::message(text, OpCode::Data(Data::Text), true))
            }
            Reply::Echo(Message::Binary(data)) => {
                encode_frame(Frame::message(data, OpCode::Data(Data::Binary), true))
            }
            Reply::Echo(_) => return,
            Reply::Event(event) => return self.push(Piece::Event(event)),
            Reply::Close(frame) => {
                if self.close.is_none() {
                    self.close = Some(encode_frame(Frame::close(frame)));
                }
                return;
            }
        };
        self.push(Piece::Own(frame));
    }

    /// Adds a frame. The first frame after a quiet spell gets the batch its
    /// full size at once: one allocation, too big for the per-thread malloc
    /// cache, where a batch that grew by doubling would leave its smaller
    /// buffers stranded for good.
    fn push(&mut self, piece: Piece) {
        if self.frames.capacity() == 0 {
            self.frames.reserve_exact(MAX_BATCH_FRAMES);
        }
        self.frames.push(piece);
    }

    /// Hands the batch's memory back (the writer has gone quiet): ten
    /// thousand idle connections would each keep it otherwise.
    fn release(&mut self) {
        self.frames = Vec::new();
    }

    fn close_with(&mut self, code: CloseCode, reason: &'static str) {
        if self.close.is_none() {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            self.close = Some(encode_frame(Frame::close(Some(frame))));
        }
    }

    fn is_full(&self) -> bool {
        self.close.is_some() || self.frames.len() >= MAX_BATCH_FRAMES
    }
}

impl Writer {
    /// Waits on the queues and the ping clock, writes everything queued in one
    /// go, and, after a write, lingers (see `pace`): events that arrive
    /// meanwhile wake nobody and go out together in the next write (or the
    /// hub writes them through itself, `queue::through`). A quiet connection
    /// finds its queues empty after the linger and parks.
    pub(super) fn run(self) {
        let id = self.id;
        self.inbox.writer_is_current_thread();
        let mut events = self.inbox.channel().clone();
        let mut replies = self.replies.clone();
        let mut reader_gone = false;
        let mut next_ping = Instant::now() + self.ping_interval;
        let mut batch = Batch::default();
        let mut pace = Pace::default();
        loop {
            if events.is_empty() {
                batch.release(); // gone quiet, even after a linger
                if replies.is_empty() {
                    pace.going_quiet();
                }
            }
            // Wake for the next ping, or the token's end if that comes first.
            let wake = self
                .expiry
                .as_ref()
                .map_or(next_ping, |e| e.deadline().min(next_ping));
            wait_for_either(&events, &replies, wake);
            // Taken and written under the socket's write lock, so that the
            // hub's own writes cannot come between (`queue::through`).
            let held = self.inbox.hold();
            // The queue first: an `Unfinished` write leads it.
            while !batch.is_full() {
                match events.try_recv() {
                    Ok(item) => {
                        let item = self.inbox.open(item);
                        pace.took(&item);
                        batch.add_outbound(item);
                    }
                    Err(TryRecvError::Empty) => break,
                    // The hub let go (or `/echo`): see `is_too_slow` below.
                    Err(TryRecvError::Disconnected) => {
                        events = never();
                        break;
                    }
                }
            }
            while !batch.is_full() {
                match replies.try_recv() {
                    Ok(reply) => batch.add_reply(reply),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        replies = never();
                        reader_gone = true;
                        break;
                    }
                }
            }
            if Instant::now() >= next_ping {
                batch.push(Piece::Own(encode_frame(Frame::ping(Bytes::new()))));
                next_ping = Instant::now() + self.ping_interval;
            }
            if self.expiry.as_ref().is_some_and(|e| e.is_past()) {
                // Not renewed in time (`auth::Expiry`): what is queued still goes first.
                batch.close_with(CloseCode::Policy, "token expired");
            }
            if self.inbox.is_too_slow() {
                // Queued events are moot now: tell the peer why, and end.
                batch.frames.clear();
                batch.close_with(CloseCode::Policy, "slow consumer");
            }
            if let Some(close) = batch.close.take() {
                batch.push(Piece::Own(close));
                if let Err(e) = write_frames(&self.socket, &batch.frames, self.format, None) {
                    debug!("{id} could not send close: {e}");
                }
                // Half-closed before the lock goes: nothing may follow the
                // close frame, and the hub's writes now fail.
                let _ = self.socket.shutdown(Shutdown::Write);
                drop(held);
                self.finish_after_close(replies);
                return;
            }
            if !batch.frames.is_empty() {
                trace!("{id} writes {} frames", batch.frames.len());
                if let Err(e) =
                    write_frames(&self.socket, &batch.frames, self.format, Some(&self.inbox))
                {
                    debug!("{id} write failed: {e}");
                    let _ = self.socket.shutdown(Shutdown::Both); // wakes the reader
                    return;
                }
                batch.frames.clear();
                drop(held);
                if !reader_gone {
                    pace.after_write();
                }
            }
            if reader_gone {
                // The peer's side ended without a close frame: nothing to say.
                let _ = self.socket.shutdown(Shutdown::Both);
                return;
            }
        }
    }

    /// Our close frame is out and the socket half-closed: give the reader
    /// `CLOSE_GRACE` to see the peer's answer and FIN, then cut whatever is left.
    fn finish_after_close(&self, replies: Receiver<Reply>) {
        let deadline = Instant::now() + CLOSE_GRACE;
        while replies.recv_deadline(deadline).is_ok() {} // until the reader ends, or time is up
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// Waits until the queue or the replies have something (without taking it:
/// the writer takes under the write lock), or until `wake`.
fn wait_for_either(events: &Receiver<Queued>, replies: &Receiver<Reply>, wake: Instant) {
    let mut ready = Select::new();
    ready.recv(events);
    ready.recv(replies);
    let _ = ready.ready_deadline(wake); // a timeout is for the ping, checked after
}

/// Writes every frame, a batch to a `writev`, giving up between two calls once
/// `inbox` (if given: not for the close frame itself) says the hub dropped
/// this connection: a peer that reads a trickle
/// would otherwise keep a dropped connection's writer busy, each call inside
/// the send timeout. (Giving up mid-frame leaves nothing but cutting the socket.)
/// Each call is marked as a write in progress (`Inbox::writing`): one that
/// waits long on the peer is how the hub tells a peer that does not read.
pub(super) fn write_frames(
    socket: &TcpStream,
    frames: &[Piece],
    format: Format,
    inbox: Option<&Inbox>,
) -> io::Result<()> {
    // The slices live on the heap, not the stack: every writer thread keeps
    // the stack pages it has ever touched, and a few KiB of slices would be
    // a page more for each of ten thousand connections. They always take a
    // full batch's room (see `Batch::push`): a vector sized to each batch
    // would be freed in every size up to glibc's per-thread cache limit, and
    // that cache keeps what it is given.
    let mut slices: Vec<IoSlice> = Vec::with_capacity(MAX_BATCH_FRAMES);
    for group in frames.chunks(MAX_BATCH_FRAMES) {
        slices.clear();
        slices.extend(group.iter().map(|f| IoSlice::new(f.bytes(format))));
        let mut remaining = &mut slices[..];
        while !remaining.is_empty() {
            if inbox.is_some_and(|i| i.is_too_slow()) {
                return Err(io::Error::other("dropped as a slow consumer"));
            }
            let writing = inbox.map(Inbox::writing);
            let written = (&*socket).write_vectored(remaining);
            drop(writing);
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut remaining, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
