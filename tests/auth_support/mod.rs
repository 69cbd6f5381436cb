//! Tokens for the auth tests, signed here with real keys: HS256 with a test
//! secret, RS256 and ES256 with the key pairs in `tests/keys/` (test-only;
//! see the README there). Servers verify with `Verifier`, as `--jwt-*` would
//! build it, with no leeway so that expiry is seen on time.

#![allow(dead_code)] // each test file uses a different part

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use switchboard::auth::mint::now_secs;
use switchboard::auth::Verifier;
use switchboard::Config;

pub const SECRET: &[u8] = b"a test secret, long enough for HS256";
pub const RSA_PRIVATE: &[u8] = include_bytes!("../keys/rsa_private.pem");
pub const RSA_PUBLIC: &[u8] = include_bytes!("../keys/rsa_public.pem");
pub const EC_PRIVATE: &[u8] = include_bytes!("../keys/ec_private.pem");
pub const EC_PUBLIC: &[u8] = include_bytes!("../keys/ec_public.pem");

/// Turns tokens on (HS256 with `SECRET`, no leeway).
pub fn hs256_server(config: &mut Config) {
    let verifier = Verifier::hs256(SECRET).expect("a secret");
    config.jwt = Some(Arc::new(verifier.with_leeway(Duration::ZERO)));
}

/// Turns tokens on with a PEM public key (RS256 or ES256 by its type).
pub fn public_key_server(config: &mut Config, pem: &[u8]) {
    let verifier = Verifier::from_public_key_pem(pem).expect("a public key");
    config.jwt = Some(Arc::new(verifier.with_leeway(Duration::ZERO)));
}

/// Turns tokens on (HS256) and requires `aud` `chat` and `iss` `auth`.
pub fn aud_iss_server(config: &mut Config) {
    let verifier = Verifier::hs256(SECRET)
        .expect("a secret")
        .with_audience("chat")
        .with_issuer("auth");
    config.jwt = Some(Arc::new(verifier.with_leeway(Duration::ZERO)));
}

/// For an `aud_iss_server`: a good token, and each wrong `aud`/`iss` one.
pub fn aud_iss_tokens(sub: &str, rooms: &[&str]) -> (String, Vec<(&'static str, String)>) {
    let mut good = claims(sub, rooms);
    good["aud"] = json!("chat");
    good["iss"] = json!("auth");
    let with = |claim: &str, value: Value| {
        let mut c = good.clone();
        match value {
            Value::Null => {
                c.as_object_mut().expect("an object").remove(claim);
            }
            value => c[claim] = value,
        }
        hs(&c)
    };
    let bad = vec![
        ("wrong aud", with("aud", json!("other"))),
        ("no aud", with("aud", Value::Null)),
        ("wrong iss", with("iss", json!("evil"))),
        ("no iss", with("iss", Value::Null)),
    ];
    (hs(&good), bad)
}

/// Claims for `sub` reading `rooms`, good for an hour.
pub fn claims(sub: &str, rooms: &[&str]) -> Value {
    json!({"sub": sub, "exp": now_secs() + 3600, "rooms": rooms})
}

/// Signs with HS256 and `SECRET`.
pub fn hs(claims: &Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET), claims)
}

/// Signs with RS256 and the test RSA key.
pub fn rs(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("the test RSA key");
    sign(Algorithm::RS256, &key, claims)
}

/// Signs with ES256 and the test EC key.
pub fn es(claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(EC_PRIVATE).expect("the test EC key");
    sign(Algorithm::ES256, &key, claims)
}

pub fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(algorithm), claims, key).expect("sign a test token")
}

/// `token` with the last character of its signature changed.
pub fn tampered(token: &str) -> String {
    let (rest, signature) = token.rsplit_once('.').expect("a JWT");
    let mut signature: Vec<u8> = signature.bytes().collect();
    let at = signature.len() / 2;
    signature[at] = if signature[at] == b'A' { b'B' } else { b'A' };
    format!(
        "{rest}.{}",
        String::from_utf8(signature).expect("base64url")
    )
}

/// An unsigned token: `alg: none`.
pub fn alg_none(claims: &Value) -> String {
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{}.", base64url(claims.to_string().as_bytes()))
}

/// Base64url without padding, as JWTs use it.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The classic confusion: HS256 with the RSA *public* key as the secret.
pub fn hs256_with_rsa_public_key(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUBLIC),
        claims,
    )
}

/// Every kind of bad token for an HS256 server, each with what it is.
pub fn bad_hs256_tokens() -> Vec<(&'static str, String)> {
    let good = claims("alice", &["*"]);
    let mut expired = good.clone();
    expired["exp"] = json!(now_secs() - 60);
    let mut no_exp = good.clone();
    no_exp.as_object_mut().expect("an object").remove("exp");
    let mut no_sub = good.clone();
    no_sub.as_object_mut().expect("an object").remove("sub");
    vec![
        ("tampered signature", tampered(&hs(&good))),
        ("another secret", {
            let key = EncodingKey::from_secret(b"another secret");
            sign(Algorithm::HS256, &key, &good)
        }),
        ("wrong algorithm (RS256)", rs(&good)),
        ("wrong algorithm (ES256)", es(&good)),
        ("alg none", alg_none(&good)),
        ("expired", hs(&expired)),
        ("no exp", hs(&no_exp)),
        ("no sub", hs(&no_sub)),
        ("not a JWT", "not-a-token".to_owned()),
    ]
}
