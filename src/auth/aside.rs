//! Verifying on a short-lived thread of its own (`auth`), never on the
//! caller's: a connection's thread keeps every stack page it ever touched
//! for the life of the connection, and a signature check (JSON, base64, the
//! arithmetic) touched two more pages of every WebSocket reader's stack (16
//! KiB instead of 8, measured with 300 idle HS256 connections: docs/auth.md).
//! The caller waits for the answer; a panic while verifying (a bug, on a
//! peer's input) refuses the token instead of taking the caller down.

use std::sync::Arc;

use crate::os::threads::{spawn_named, READER_STACK_BYTES};

use super::grants::Grants;
use super::verify::{TokenError, Verifier};

/// The verifying thread's stack: more than four readers' on purpose. glibc
/// keeps the stacks of ended threads and hands one to a new thread that asks
/// for up to four times less, touched pages and all: a reader or writer
/// started after a verifier would inherit the pages it touched. Only the
/// virtual size is large; a verify touches a few pages of it
/// (`docs/auth.md` has the figure).
const VERIFIER_STACK_BYTES: usize = 4 * READER_STACK_BYTES + 64 * 1024;

/// `verifier.verify(token)`, on a thread of its own.
pub fn verify_aside(verifier: &Arc<Verifier>, token: &str) -> Result<Grants, TokenError> {
    let (verifier, token) = (Arc::clone(verifier), token.to_owned());
    let verifying = spawn_named("auth".into(), VERIFIER_STACK_BYTES, move || {
        verifier.verify(&token)
    })
    .map_err(|_| TokenError::Unavailable)?;
    verifying
        .join()
        .unwrap_or_else(|_| Err(TokenError::Malformed("the token could not be read".into())))
}
