//! The token on a WebSocket handshake (with `--jwt-*` only): read again from
//! the request head — `Authorization: Bearer`, else `?token=` (browsers
//! cannot set headers on a WebSocket) — and checked (`auth`). A token that
//! is missing or bad refuses the handshake with `401`.
//!
//! Runs on the connection's reader thread, out of line and only when tokens
//! are on (the signature check itself on a thread of its own: `auth::aside`):
//! every stack page a reader touches stays with the connection for its whole
//! life (`scripts/stacks.sh`), so with tokens off the handshake's frames are
//! what they were, and with tokens on the reader's stack is not deepened.

use std::net::TcpStream;
use std::sync::Arc;

use log::debug;

use crate::auth::{self, Access, Session, TokenError};
use crate::protocol::ClientId;
use crate::transport::Shared;

use super::handshake::{Accepted, Refusal, Route};
use super::refuse;

/// A handshake's verified token: what it allows, and the session whose end
/// the writer watches and a refresh moves.
pub(super) struct Signed {
    pub(super) access: Access,
    pub(super) session: Session,
}

/// The most header lines looked at (the handshake already allowed no more).
const MAX_HEADERS: usize = 64;

/// With tokens on, checks the token of an accepted `/ws` handshake:
/// `Ok(Some(..))` for a good one; `Err(())` once a bad or missing one has
/// been answered (`401`, or `503` if no thread could check it). `Ok(None)`
/// with tokens off, or on `/echo`.
///
/// Each step is out of line and returns before the next, so that the
/// verifying thread is started from a shallow frame: starting a thread is
/// deep, and the reader's stack keeps what it touches.
#[inline(never)]
pub(super) fn authorize(
    socket: &TcpStream,
    id: ClientId,
    accepted: &Accepted,
    shared: &Shared,
) -> Result<Option<Box<Signed>>, ()> {
    let Some(verifier) = &shared.config.jwt else {
        return Ok(None);
    };
    if !matches!(accepted.route, Route::Chat { .. }) {
        return Ok(None);
    }
    let verified = match presented(&accepted.head[..accepted.head_len]) {
        Some(token) => auth::verify_aside(verifier, &token),
        None => Err(TokenError::Missing),
    };
    match verified {
        Ok(grants) => Ok(Some(Box::new(Signed {
            session: Session::new(&grants),
            access: Access::Token(Arc::new(grants)),
        }))),
        Err(e) => {
            refuse_token(socket, id, shared, e);
            Err(())
        }
    }
}

/// The token a request head carries (the handshake parsed it already):
/// `Authorization: Bearer`, else `?token=`.
#[inline(never)]
fn presented(head: &[u8]) -> Option<String> {
    let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let _ = request.parse(head);
    let authorization = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("authorization"))
        .and_then(|h| std::str::from_utf8(h.value).ok());
    let query = request
        .path
        .and_then(|target| target.split_once('?'))
        .map_or("", |(_, query)| query);
    let from_query = form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned());
    auth::presented(from_query.as_deref(), authorization).map(str::to_owned)
}

/// Answers a refused token: `401` with the reason, or `503` when no thread
/// could be started to check it.
#[inline(never)]
fn refuse_token(socket: &TcpStream, id: ClientId, shared: &Shared, e: TokenError) {
    let refusal = match e {
        TokenError::Unavailable => {
            let busy = "the server cannot take more connections";
            Refusal::new(503, "Service Unavailable", "threads", busy)
        }
        e => Refusal::new(401, "Unauthorized", "token", e.to_string()),
    };
    debug!(
        "{id} ws handshake refused: {} {}",
        refusal.status, refusal.message
    );
    refuse(socket, shared, &refusal);
}
