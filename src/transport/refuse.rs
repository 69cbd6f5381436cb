//! Turning a connection away without spending a thread of its own on it.
//!
//! ```text
//! [ws-accept]   --TcpStream + why--> [ws-refuse]    503 at once, then linger
//! [http-accept] --TcpStream + why--> [http-refuse]  until the peer closes
//! ```
//!
//! Past a connection limit, or when the OS cannot start a thread, the accept
//! loop hands the socket to its listener's one refuser thread through a small
//! bounded queue. The refuser writes `503` at once (it fits in the socket's
//! send buffer: no waiting on the peer), half-closes, and keeps the socket in
//! a bounded list while it lingers, checking it without blocking, so that
//! closing does not reset the connection before the peer has read the answer.
//! A peer that sends nothing costs the refuser nothing, and hundreds linger
//! at once. When the queue or the list is full the socket is simply closed,
//! so a flood costs neither threads nor memory. `spawn_connection` keeps a
//! socket whose thread could not start, so it too gets its `503` instead of a
//! silent close.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

use crate::os::threads::{spawn_named, WRITER_STACK_BYTES};

/// Refused connections waiting for their 503 before they are simply closed.
const REFUSE_QUEUE: usize = 64;
/// Refused connections lingering at once; past it, a refused one is closed
/// as soon as its 503 is written.
const LINGERING: usize = 1024;
/// How long a refused connection lingers for its peer to close.
const REFUSE_LINGER: Duration = Duration::from_secs(1);
/// How often the refuser looks at the lingering connections.
const LINGER_CHECK: Duration = Duration::from_millis(50);
/// How long to wait for the peer's side of a close before cutting.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// The most a closing connection reads and throws away while it lingers.
const LINGER_BUDGET_BYTES: usize = 64 * 1024;

/// The way to a listener's refuser thread.
#[derive(Clone)]
pub struct Refuser(Sender<(TcpStream, &'static str)>);

impl Refuser {
    /// Starts the refuser thread `name`; it holds a clone of `done`, so
    /// shutdown waits for the refusals under way.
    pub fn spawn(name: &str, done: Sender<()>) -> io::Result<Refuser> {
        let (to_refuser, refused) = bounded::<(TcpStream, &'static str)>(REFUSE_QUEUE);
        spawn_named(name.to_owned(), WRITER_STACK_BYTES, move || {
            let _done = done;
            refuse_all(&refused);
        })?;
        Ok(Refuser(to_refuser))
    }

    /// Answers `stream` with a 503 saying `why`, or, when the refuser is
    /// behind, just closes it.
    pub fn refuse(&self, stream: TcpStream, why: &'static str) {
        let _ = self.0.try_send((stream, why)); // full: dropping the stream closes it
    }
}

/// Starts a connection's thread, which gets `stream`. If the OS cannot start
/// one, the error comes back with the stream, so the caller can still refuse
/// it properly.
pub fn spawn_connection<F>(
    name: String,
    stack_bytes: usize,
    stream: TcpStream,
    serve: F,
) -> Result<(), (io::Error, Option<TcpStream>)>
where
    F: FnOnce(TcpStream) + Send + 'static,
{
    // The thread takes the stream out; a spawn that fails leaves it here.
    let handoff = Arc::new(Mutex::new(Some(stream)));
    let theirs = Arc::clone(&handoff);
    let spawned = spawn_named(name, stack_bytes, move || {
        let stream = theirs.lock().unwrap_or_else(PoisonError::into_inner).take();
        drop(theirs);
        if let Some(stream) = stream {
            serve(stream);
        }
    });
    match spawned {
        Ok(_) => Ok(()),
        Err(e) => Err((
            e,
            handoff
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        )),
    }
}

/// Writes a small plain-text HTTP response that ends the connection.
pub fn respond(socket: &TcpStream, status: u16, reason: &str, extra: &[&str], body: &str) {
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len() + 1
    );
    for line in extra {
        response.push_str(line);
        response.push_str("\r\n");
    }
    response.push_str("\r\n");
    response.push_str(body);
    response.push('\n');
    let _ = (&*socket).write_all(response.as_bytes()); // the peer may be gone already
}

/// Half-closes, reads what the peer still sends for at most `grace` (so
/// closing does not reset the connection and lose the response), then closes.
pub fn linger_then_close(socket: &TcpStream, grace: Duration) {
    let _ = socket.shutdown(Shutdown::Write);
    let _ = socket.set_read_timeout(Some(grace));
    let mut sink = [0u8; 1024];
    let mut budget = LINGER_BUDGET_BYTES;
    while let Ok(n @ 1..) = (&*socket).read(&mut sink) {
        budget -= n.min(budget);
        if budget == 0 {
            break;
        }
    }
}

/// The refuser thread: answers each refused connection as it comes, and
/// between arrivals closes the lingering ones whose peer has closed or whose
/// time is up.
fn refuse_all(refused: &Receiver<(TcpStream, &'static str)>) {
    let mut lingering: Vec<(TcpStream, Instant)> = Vec::new();
    loop {
        let wait = if lingering.is_empty() {
            Duration::MAX
        } else {
            LINGER_CHECK
        };
        match refused.recv_timeout(wait) {
            Ok((stream, why)) => {
                if answer(&stream, why) && lingering.len() < LINGERING {
                    lingering.push((stream, Instant::now() + REFUSE_LINGER));
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break, // the accept loop has ended
        }
        let now = Instant::now();
        lingering.retain(|(stream, until)| now < *until && !peer_closed(stream));
    }
}

/// Writes the 503 without waiting on the peer and half-closes; whether the
/// connection should linger.
fn answer(stream: &TcpStream, why: &str) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    respond(stream, 503, "Service Unavailable", &["Retry-After: 5"], why);
    stream.shutdown(Shutdown::Write).is_ok()
}

/// Reads (and drops) what a lingering peer sent; whether it has closed, or
/// sends so much that it is not worth waiting for.
fn peer_closed(stream: &TcpStream) -> bool {
    let mut sink = [0u8; 1024];
    let mut budget = LINGER_BUDGET_BYTES;
    loop {
        match (&*stream).read(&mut sink) {
            Ok(0) => return true,
            Ok(n) if n >= budget => return true,
            Ok(n) => budget -= n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}
