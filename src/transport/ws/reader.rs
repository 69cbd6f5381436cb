//! The reader thread: reads frames with tungstenite's `WebSocketContext`,
//! turns chat lines into hub commands, and hands everything the protocol owes
//! the peer (pong, close, errors, echoes) to the writer as a `Reply`: the
//! reader never writes to the socket.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::Sender;
use log::{debug, trace};
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::WebSocketContext;
use tungstenite::Message;

use crate::auth::Session;
use crate::hub::Command;
use crate::protocol::{parse_line, ClientId, Event, ParseError, Request};
use crate::transport::refuse::CLOSE_GRACE;
use crate::transport::Shared;

/// What the reader asks the writer to send.
pub(super) enum Reply {
    /// Answer a ping.
    Pong(Bytes),
    /// Send a frame back as it came (`/echo`).
    Echo(Message),
    /// Tell the peer something went wrong (an `error` event).
    Event(Arc<Event>),
    /// Send a close frame (a reply to the peer's, or ours on failure) and end.
    Close(Option<CloseFrame>),
}

/// How the read loop ended.
pub(super) enum Ending {
    /// The peer sent a close frame.
    PeerClosed(Option<CloseFrame>),
    /// The peer broke the protocol, or sent too much: fail the connection.
    Fail(CloseCode, &'static str),
    /// The socket ended or failed; there is nobody left to tell.
    Gone(String),
}

/// The reader thread.
pub(super) struct Reader {
    pub(super) id: ClientId,
    pub(super) socket: Arc<TcpStream>,
    pub(super) context: WebSocketContext,
    pub(super) replies: Sender<Reply>,
    /// Set for `/ws`, where text is parsed and sent to the hub.
    pub(super) chat: Option<Shared>,
    pub(super) rate: Option<RateLimit>,
    pub(super) max_message_bytes: usize,
    /// With tokens on: the token's user, and when the connection ends unless
    /// a refresh moves it (the writer watches its expiry).
    pub(super) session: Option<Session>,
}

impl Reader {
    #[inline(never)] // its frame is not `open`'s (see `serve`)
                     // `self: Box<Self>`: taken by value, the reader was copied out of its
                     // box onto `serve`'s frame, which sits under the read loop for the life
                     // of the connection (0x1c8 bytes of it, in the release build).
    pub(super) fn run(mut self: Box<Self>) {
        let ending = loop {
            let message = self.next_message();
            let reply = match message {
                Ok(Message::Text(text)) => match &self.chat {
                    None => Reply::Echo(Message::Text(text)),
                    Some(_) => match self.chat_line(text.as_str()) {
                        Some(reply) => reply,
                        None => continue,
                    },
                },
                Ok(Message::Binary(data)) => match &self.chat {
                    None => Reply::Echo(Message::Binary(data)),
                    Some(_) => Reply::Event(Arc::new(
                        ParseError::Unsupported(
                            "binary frames are not supported on /ws; send text",
                        )
                        .to_event(),
                    )),
                },
                Ok(Message::Ping(payload)) => Reply::Pong(payload),
                Ok(Message::Pong(_)) | Ok(Message::Frame(_)) => continue,
                Ok(Message::Close(frame)) => break Ending::PeerClosed(frame),
                Err(e) => break self.classify(e),
            };
            if self.replies.send(reply).is_err() {
                break Ending::Gone("writer ended".into()); // it hit a write error
            }
        };
        let id = self.id;
        match ending {
            Ending::PeerClosed(frame) => {
                trace!("{id} peer closed: {frame:?}");
                let _ = self.replies.send(Reply::Close(frame));
                self.drain();
            }
            Ending::Fail(code, reason) => {
                debug!("{id} failing the connection: {code} {reason}");
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ = self.replies.send(Reply::Close(Some(frame)));
                self.drain();
            }
            Ending::Gone(why) => debug!("{id} connection ended: {why}"),
        }
        drop(self.replies); // the writer sees the reader is gone
        if let Some(shared) = &self.chat {
            let _ = shared.hub.send(Command::Disconnect { id }); // a stopped hub has forgotten us anyway
        }
        debug!("{id} ws closed");
    }

    /// The next message from the peer. Out of line on purpose: inlined, the
    /// protocol's read widened `run`'s frame, which sits under every idle
    /// connection for its whole life (`scripts/stacks.sh` caught it).
    #[inline(never)]
    fn next_message(&mut self) -> Result<Message, WsError> {
        self.context.read(&mut ReadHalf(&self.socket))
    }

    /// Handles one line of chat; returns a reply for the peer, if any.
    /// Not inlined: parsing needs stack that a connection that never talks
    /// should not touch (see `serve`).
    #[inline(never)]
    fn chat_line(&mut self, line: &str) -> Option<Reply> {
        let shared = self.chat.as_ref().expect("chat_line runs on /ws only");
        if let Some(rate) = &mut self.rate {
            if !rate.allow() {
                let refusal = ParseError::RateLimited {
                    per_second: rate.per_second,
                };
                return Some(Reply::Event(Arc::new(refusal.to_event())));
            }
        }
        match parse_line(line) {
            Ok(Request::Refresh(token)) if self.session.is_some() => {
                self.refresh(&token);
                None
            }
            Ok(request) => {
                trace!("{} asks {request:?}", self.id);
                let command = Command::Request {
                    from: self.id,
                    request,
                };
                // Blocks while the hub is busy: back-pressure on a flooding peer.
                let _ = shared.hub.send(command);
                None
            }
            Err(refusal) => Some(Reply::Event(Arc::new(refusal.to_event()))),
        }
    }

    /// A fresh token (`Session::refresh`); the hub tells the peer how it went.
    #[inline(never)]
    fn refresh(&self, token: &str) {
        let shared = self.chat.as_ref().expect("refresh runs on /ws only");
        let (Some(session), Some(verifier)) = (&self.session, &shared.config.jwt) else {
            return; // tokens are off: `chat_line` passes the request to the hub
        };
        let verdict = session.refresh(verifier, token);
        debug!(
            "{} token refresh: {}",
            self.id,
            if verdict.is_ok() {
                "accepted"
            } else {
                "refused"
            }
        );
        let _ = shared.hub.send(Command::Regrant {
            id: self.id,
            verdict,
        }); // a stopped hub has forgotten us anyway
    }

    fn classify(&mut self, error: WsError) -> Ending {
        match error {
            WsError::ConnectionClosed | WsError::AlreadyClosed => Ending::Gone("closed".into()),
            WsError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ending::Gone("silent for two ping intervals".into())
            }
            WsError::Io(e) => Ending::Gone(e.to_string()),
            WsError::Utf8(_) => Ending::Fail(CloseCode::Invalid, "invalid UTF-8"),
            WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                let too_large = ParseError::TooLarge {
                    len: size,
                    limit: max_size.min(self.max_message_bytes),
                };
                let _ = self
                    .replies
                    .send(Reply::Event(Arc::new(too_large.to_event())));
                Ending::Fail(CloseCode::Size, "message too large")
            }
            WsError::Capacity(_) => Ending::Fail(CloseCode::Size, "message too large"),
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                Ending::Gone("closed without a close frame".into())
            }
            WsError::Protocol(_) => Ending::Fail(CloseCode::Protocol, "protocol error"),
            other => Ending::Gone(other.to_string()),
        }
    }

    /// After a close frame has been queued: read until the peer closes its
    /// side, so the socket closes without a reset. Bounded in time and bytes.
    #[inline(never)] // its 4 KiB sink is stack only a closing connection touches
    fn drain(&self) {
        let _ = self.socket.set_read_timeout(Some(CLOSE_GRACE));
        let mut sink = [0u8; 4096];
        let mut budget = 1 << 20;
        while let Ok(n @ 1..) = (&*self.socket).read(&mut sink) {
            budget -= n.min(budget);
            if budget == 0 {
                break;
            }
        }
    }
}

/// The reader's view of the socket: reads come from it; writes are swallowed,
/// because tungstenite's automatic pong and close replies must go out through
/// the writer thread instead. The reader sends them there as `Reply`s.
pub(super) struct ReadHalf<'a>(&'a TcpStream);

impl Read for ReadHalf<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for ReadHalf<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A token bucket: `per_second` tokens a second, at most `per_second` saved.
pub(super) struct RateLimit {
    pub(super) per_second: u32,
    pub(super) tokens: f64,
    pub(super) last: Instant,
}

impl RateLimit {
    pub(super) fn new(per_second: u32) -> RateLimit {
        RateLimit {
            per_second,
            tokens: f64::from(per_second),
            last: Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * f64::from(self.per_second);
        self.tokens = (self.tokens + refill).min(f64::from(self.per_second));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
