//! The token on a WebSocket handshake (with `--jwt-*` only): read again from
//! the request head — `Authorization: Bearer`, else `?token=` (browsers
//! cannot set headers on a WebSocket) — and checked (`auth`). A token that
//! is missing or bad refuses the handshake with `401`.
//!
//! Runs on the connection's reader thread, out of line and only when tokens
//! are on, and the signature check itself on a short-lived thread of its
//! own (`ws-auth c7`): every stack page a reader touches stays with the
//! connection for its whole life (`scripts/stacks.sh`), and verifying (JSON,
//! base64, the signature's arithmetic) touched two more pages of every
//! reader's stack (16 KiB instead of 8, measured with 300 idle HS256
//! connections). The extra thread is paid per handshake, only with tokens on.

use std::net::TcpStream;
use std::sync::Arc;

use log::debug;

use crate::auth::{self, Access, Session, TokenError, Verifier};
use crate::os::threads::{spawn_named, READER_STACK_BYTES};
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

/// The verifying thread's stack: more than four readers' on purpose. glibc
/// keeps the stacks of ended threads and hands one to a new thread that asks
/// for up to four times less, touched pages and all: a reader or writer
/// started after a verifier would inherit the pages this thread touched.
/// Only the virtual size is large; a verify touches some 16 KiB of it.
const VERIFIER_STACK_BYTES: usize = 4 * READER_STACK_BYTES + 64 * 1024;

/// The most header lines looked at (the handshake already allowed no more).
const MAX_HEADERS: usize = 64;

/// With tokens on, checks the token of an accepted `/ws` handshake:
/// `Ok(Some(..))` for a good one; `Err(())` once a bad or missing one has
/// been answered with `401`. `Ok(None)` with tokens off, or on `/echo`.
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
    match check(id, &accepted.head[..accepted.head_len], verifier) {
        Ok(signed) => Ok(Some(signed)),
        Err(refusal) => {
            debug!(
                "{id} ws handshake refused: {} {}",
                refusal.status, refusal.message
            );
            refuse(socket, shared, &refusal);
            Err(())
        }
    }
}

/// Reads the token from a request head (the handshake parsed it already)
/// and checks it.
fn check(id: ClientId, head: &[u8], verifier: &Arc<Verifier>) -> Result<Box<Signed>, Refusal> {
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
    let Some(token) = auth::presented(from_query.as_deref(), authorization) else {
        return Err(refused(TokenError::Missing));
    };
    let verifying = {
        let (verifier, token) = (Arc::clone(verifier), token.to_owned());
        spawn_named(format!("ws-auth {id}"), VERIFIER_STACK_BYTES, move || {
            verifier.verify(&token)
        })
    };
    let Ok(verifying) = verifying else {
        let busy = "the server cannot take more connections";
        return Err(Refusal::new(503, "Service Unavailable", "threads", busy));
    };
    // A panic while verifying (a bug, on a peer's input) refuses the token.
    let verified = verifying
        .join()
        .unwrap_or_else(|_| Err(TokenError::Malformed("the token could not be read".into())));
    match verified {
        Ok(grants) => Ok(Box::new(Signed {
            session: Session::new(&grants),
            access: Access::Token(Arc::new(grants)),
        })),
        Err(e) => Err(refused(e)),
    }
}

fn refused(e: TokenError) -> Refusal {
    Refusal::new(401, "Unauthorized", "token", e.to_string())
}
