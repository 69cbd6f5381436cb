//! Checking a token: signature, algorithm, `exp` (and `nbf`), `aud`, `iss`.
//!
//! The algorithm comes from the configured key, never from the token's
//! header: HS256 for `--jwt-secret`, RS256 or ES256 for `--jwt-public-key`
//! (whichever the PEM holds). A token whose header names anything else —
//! `none`, or HS256 signed with the RSA public key as its secret — is refused
//! before its signature is looked at. `exp` and `sub` are required; `exp`
//! and `nbf` get a small leeway (`LEEWAY`) for clocks that disagree.
//!
//! `Verifier` is built once at startup (a key that does not load is a
//! startup error) and shared read-only by every thread that meets a token.
//! Its `Debug` names the algorithm and the checks, never the key.

use std::fmt;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};

use super::claims::Claims;
use super::grants::Grants;

/// How far `exp` and `nbf` may be off: a token is good until `exp + LEEWAY`,
/// and a connection holding it ends then.
pub const LEEWAY: Duration = Duration::from_secs(5);

/// The longest token read; longer ones are refused unparsed.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Checks tokens against one key and algorithm.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    algorithm: Algorithm,
    leeway: Duration,
}

/// A key that cannot be used (a startup error).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// An empty `--jwt-secret`.
    #[error("the JWT secret is empty")]
    EmptySecret,
    /// A PEM that is neither an RSA nor an EC public key.
    #[error("not an RSA or EC (P-256) public key in PEM form")]
    NotAPublicKey,
}

/// Why a token was refused; each is a 401 at the handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// None was presented.
    #[error("a token is required: ?token=... or Authorization: Bearer ...")]
    Missing,
    /// Past `exp` (plus the leeway).
    #[error("the token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("the token is not valid yet (nbf)")]
    NotYet,
    /// The header names an algorithm other than the configured one.
    #[error("the token is not signed with {0:?}, the algorithm this server uses")]
    WrongAlgorithm(Algorithm),
    /// The signature does not match.
    #[error("the token's signature is not valid")]
    BadSignature,
    /// `aud` is not `--jwt-audience`.
    #[error("the token is not for this audience (aud)")]
    WrongAudience,
    /// `iss` is not `--jwt-issuer`.
    #[error("the token is not from the expected issuer (iss)")]
    WrongIssuer,
    /// A required claim is missing or has the wrong shape.
    #[error("the token's claims are not valid: {0}")]
    BadClaim(String),
    /// Not a JWT at all.
    #[error("not a valid token: {0}")]
    Malformed(String),
    /// The OS would not start the thread that checks it (`aside`).
    #[error("the server cannot check tokens right now; try again")]
    Unavailable,
}

impl Verifier {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Result<Verifier, KeyError> {
        if secret.is_empty() {
            return Err(KeyError::EmptySecret);
        }
        Ok(Verifier::new(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
        ))
    }

    /// RS256 or ES256, whichever public key `pem` holds.
    pub fn from_public_key_pem(pem: &[u8]) -> Result<Verifier, KeyError> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Verifier::new(key, Algorithm::RS256));
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            return Ok(Verifier::new(key, Algorithm::ES256));
        }
        Err(KeyError::NotAPublicKey)
    }

    fn new(key: DecodingKey, algorithm: Algorithm) -> Verifier {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        // Without --jwt-audience a token's `aud` is not ours to judge.
        validation.validate_aud = false;
        let mut verifier = Verifier {
            key,
            validation,
            algorithm,
            leeway: LEEWAY,
        };
        verifier.validation.leeway = LEEWAY.as_secs();
        verifier
    }

    /// Also require `aud` to be (or contain) `audience`.
    pub fn with_audience(mut self, audience: &str) -> Verifier {
        self.validation.set_audience(&[audience]);
        self.validation.validate_aud = true;
        self.validation.required_spec_claims.insert("aud".into());
        self
    }

    /// Also require `iss` to be `issuer`.
    pub fn with_issuer(mut self, issuer: &str) -> Verifier {
        self.validation.set_issuer(&[issuer]);
        self.validation.required_spec_claims.insert("iss".into());
        self
    }

    /// A leeway other than `LEEWAY` (tests use zero, to see expiry on time).
    pub fn with_leeway(mut self, leeway: Duration) -> Verifier {
        self.leeway = leeway;
        self.validation.leeway = leeway.as_secs();
        self
    }

    /// The algorithm every token must use.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Checks `token` and reads what it grants.
    #[inline(never)]
    pub fn verify(&self, token: &str) -> Result<Grants, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed(format!(
                "longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let data =
            decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYet,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenError::WrongAlgorithm(self.algorithm)
                }
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::MissingRequiredClaim(claim) => {
                    TokenError::BadClaim(format!("{claim} is required"))
                }
                ErrorKind::InvalidClaimFormat(claim) => {
                    TokenError::BadClaim(format!("{claim} has the wrong form"))
                }
                ErrorKind::Json(e) => TokenError::BadClaim(e.to_string()),
                _ => TokenError::Malformed(e.to_string()),
            })?;
        Grants::from_claims(data.claims, self.leeway)
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithm", &self.algorithm)
            .field("audience", &self.validation.aud)
            .field("issuer", &self.validation.iss)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::mint;

    fn hs(secret: &str) -> Verifier {
        Verifier::hs256(secret.as_bytes()).expect("a secret")
    }

    #[test]
    fn a_good_token_is_read_and_a_tampered_one_refused() {
        let token = mint::hs256(b"s3cret", &mint::claims("alice", 3600, &["team-*"], None));
        let grants = hs("s3cret").verify(&token).expect("good");
        assert_eq!(&*grants.user, "alice");
        assert_eq!(hs("other").verify(&token), Err(TokenError::BadSignature));
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(hs("s3cret").verify(&tampered).is_err());
        assert!(matches!(
            hs("s3cret").verify("nope"),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn alg_none_is_refused() {
        // {"alg":"none","typ":"JWT"} . {"sub":"a","exp":9999999999} . (no signature)
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhIiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert!(hs("s").verify(none).is_err());
    }

    #[test]
    fn expiry_sub_audience_and_issuer_are_checked() {
        let past = mint::claims("a", 0, &["*"], None);
        let mut past = past;
        past["exp"] = serde_json::json!(1_000);
        assert_eq!(
            hs("s").verify(&mint::hs256(b"s", &past)),
            Err(TokenError::Expired)
        );
        let no_sub = serde_json::json!({"exp": 9_999_999_999u64});
        assert!(matches!(
            hs("s").verify(&mint::hs256(b"s", &no_sub)),
            Err(TokenError::BadClaim(_))
        ));
        let mut c = mint::claims("a", 60, &["*"], None);
        c["aud"] = "app".into();
        c["iss"] = "auth".into();
        let token = mint::hs256(b"s", &c);
        assert!(
            hs("s").verify(&token).is_ok(),
            "aud is not judged unless configured"
        );
        assert!(hs("s")
            .with_audience("app")
            .with_issuer("auth")
            .verify(&token)
            .is_ok());
        assert_eq!(
            hs("s").with_audience("web").verify(&token),
            Err(TokenError::WrongAudience)
        );
        assert_eq!(
            hs("s").with_issuer("else").verify(&token),
            Err(TokenError::WrongIssuer)
        );
        let bare = mint::hs256(b"s", &mint::claims("a", 60, &["*"], None));
        assert!(hs("s").with_audience("app").verify(&bare).is_err());
    }

    #[test]
    fn the_debug_form_never_shows_the_key() {
        let shown = format!("{:?}", hs("hunter2-secret"));
        assert!(
            !shown.contains("hunter2") && shown.contains("HS256"),
            "{shown}"
        );
    }
}
