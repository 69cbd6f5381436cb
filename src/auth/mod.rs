//! Signed tokens: who a subscriber is and which rooms it may read and write.
//!
//! With `--jwt-secret` (HS256) or `--jwt-public-key` (RS256 / ES256) every
//! subscriber presents a JWT, and this module is the one place that reads it:
//! [`verify`] checks the signature and the standard claims with the
//! configured algorithm (never the token's own choice), [`claims`] is what a
//! token may say, and [`grants`] turns that into an [`Access`] that answers
//! `may_read(room)`, `may_publish(room)` and the subscriber's name.
//!
//! Runs on whichever thread meets the token: a connection's reader at the
//! handshake (or on a refresh), an HTTP worker for REST; the hub only asks the
//! `Access` a transport attached to the subscriber. Without either option every
//! subscriber gets `Access::Open` and nothing changes.
//!
//! [`mint`] makes tokens for `switchboard token`, for trying it out.

pub mod aside;
pub mod claims;
pub mod expiry;
pub mod grants;
pub mod mint;
pub mod verify;

pub use aside::verify_aside;
pub use claims::{Claims, RoomPattern};
pub use expiry::{Expiry, Session};
pub use grants::{forbidden, Access, Grants};
pub use verify::{KeyError, TokenError, Verifier, LEEWAY};

/// The token a request carries: `?token=` (browsers cannot set headers on a
/// WebSocket) or `Authorization: Bearer TOKEN`; the header wins when both come.
pub fn presented<'a>(
    query_token: Option<&'a str>,
    authorization: Option<&'a str>,
) -> Option<&'a str> {
    authorization
        .and_then(bearer)
        .or(query_token)
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The token in an `Authorization: Bearer TOKEN` header value (the scheme's
/// case does not matter, as RFC 6750 says).
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `url` with the value of any `token=` in its query replaced by `…`, for
/// logs: a token is a credential until it expires.
pub fn without_token(url: &str) -> std::borrow::Cow<'_, str> {
    let Some((path, query)) = url.split_once('?') else {
        return url.into();
    };
    if !query.split('&').any(|pair| pair.starts_with("token=")) {
        return url.into();
    }
    let query: Vec<&str> = query
        .split('&')
        .map(|pair| {
            if pair.starts_with("token=") {
                "token=…"
            } else {
                pair
            }
        })
        .collect();
    format!("{path}?{}", query.join("&")).into()
}

/// What a subscriber presenting `token` may do: `Access::Open` when tokens
/// are off (`verifier` is `None`), else the token's grants (checked on a
/// thread of its own: `aside`) or why not.
#[inline(never)]
pub fn admit(
    verifier: Option<&std::sync::Arc<Verifier>>,
    token: Option<&str>,
) -> Result<Access, TokenError> {
    match verifier {
        None => Ok(Access::Open),
        Some(verifier) => {
            let token = token.ok_or(TokenError::Missing)?;
            Ok(Access::Token(std::sync::Arc::new(verify_aside(
                verifier, token,
            )?)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_urls_lose_their_token() {
        assert_eq!(without_token("/rooms?token=abc&x=1"), "/rooms?token=…&x=1");
        assert_eq!(without_token("/events?room=a"), "/events?room=a");
        assert_eq!(without_token("/healthz"), "/healthz");
    }

    #[test]
    fn the_header_wins_over_the_query_and_blank_is_none() {
        assert_eq!(presented(Some("q"), Some("Bearer h")), Some("h"));
        assert_eq!(presented(Some("q"), Some("bearer  h ")), Some("h"));
        assert_eq!(presented(Some("q"), None), Some("q"));
        assert_eq!(presented(Some("q"), Some("Basic xyz")), Some("q"));
        assert_eq!(presented(Some(" "), None), None);
        assert_eq!(presented(None, Some("Bearer")), None);
    }
}
