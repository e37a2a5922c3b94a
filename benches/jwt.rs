//! Token verification side by side in one run: wsgate's verifier, the raw HMAC-SHA256 of the
//! same signing input (the floor: nothing can verify faster than computing the MAC), and the
//! `jsonwebtoken` crate doing the same validation.
//!
//! Run: `cargo bench --bench jwt`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use wsgate::jwt::{Claims, Key, Validation, Verifier, unix_now};

const SECRET: &[u8] = b"benchmark-secret-0123456789abcdefghij";

/// A typical token, about 250 bytes: subject, times, issuer, audience and two room patterns.
fn typical_claims() -> Claims {
    let now = unix_now();
    Claims {
        sub: "alice.example".into(),
        exp: now + 3600,
        nbf: Some(now - 10),
        iat: Some(now - 10),
        iss: Some("https://auth.example".into()),
        aud: vec!["wsgate".into()],
        rooms: Some(vec!["lobby".into(), "team-*".into()]),
    }
}

fn verify(c: &mut Criterion) {
    let key = Key::new(SECRET).unwrap();
    let token = key.sign(&typical_claims());
    let verifier = Verifier::new(vec![key], Validation::default()).unwrap();
    assert!(verifier.verify(&token).is_ok());
    let signing_input = &token[..token.rfind('.').unwrap()];

    let mut group = c.benchmark_group(format!("verify_{}_byte_token", token.len()));
    group.bench_function("wsgate", |b| b.iter(|| verifier.verify(black_box(&token)).unwrap()));

    let keyed = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
    group.bench_function("raw_hmac_floor", |b| {
        b.iter(|| {
            let mut mac = keyed.clone();
            mac.update(black_box(signing_input.as_bytes()));
            mac.finalize().into_bytes()
        })
    });

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct TheirClaims {
        sub: String,
        exp: i64,
        nbf: i64,
        iat: i64,
        iss: String,
        aud: String,
        rooms: Vec<String>,
    }
    let decoding_key = jsonwebtoken::DecodingKey::from_secret(SECRET);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["wsgate"]);
    validation.validate_nbf = true;
    assert!(jsonwebtoken::decode::<TheirClaims>(&token, &decoding_key, &validation).is_ok());
    group.bench_function("jsonwebtoken", |b| {
        b.iter(|| jsonwebtoken::decode::<TheirClaims>(black_box(&token), &decoding_key, &validation).unwrap())
    });
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
