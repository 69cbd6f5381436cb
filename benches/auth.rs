//! What checking a signed token costs, per algorithm: one `Verifier::verify`
//! (signature, claims, patterns), as each handshake and refresh pays it on
//! the connection's own thread.
//!
//!     cargo bench --bench auth
//!
//! Tokens are signed with the test-only keys in `tests/keys/`.

#![allow(missing_docs)] // criterion_group! and criterion_main! generate undocumented functions

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use switchboard::auth::Verifier;

fn key(file: &str) -> Vec<u8> {
    let path = format!("{}/tests/keys/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn verify(c: &mut Criterion) {
    let claims =
        serde_json::json!({"sub": "alice", "exp": 4_000_000_000u64, "rooms": ["team-*", "lobby"]});
    let sign = |alg, key: &EncodingKey| encode(&Header::new(alg), &claims, key).expect("signs");
    let rsa = EncodingKey::from_rsa_pem(&key("rsa_private.pem")).expect("the test RSA key");
    let ec = EncodingKey::from_ec_pem(&key("ec_private.pem")).expect("the test EC key");
    let cases = [
        (
            "HS256",
            Verifier::hs256(b"a bench secret").expect("a secret"),
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(b"a bench secret"),
            ),
        ),
        (
            "RS256",
            Verifier::from_public_key_pem(&key("rsa_public.pem")).expect("a key"),
            sign(Algorithm::RS256, &rsa),
        ),
        (
            "ES256",
            Verifier::from_public_key_pem(&key("ec_public.pem")).expect("a key"),
            sign(Algorithm::ES256, &ec),
        ),
    ];
    let mut group = c.benchmark_group("token_verify");
    for (name, verifier, token) in &cases {
        group.bench_function(*name, |b| b.iter(|| verifier.verify(token).expect("good")));
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
