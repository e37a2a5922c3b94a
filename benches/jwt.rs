//! Token verification side by side in one run: wsgate's verifier; the raw HMAC-SHA256 of the
//! same signing input with the key (the floor: no verifier can skip computing the MAC); the
//! same HMAC from a pre-keyed state (the floor without key setup); and the `jsonwebtoken`
//! crate doing the same validation.
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
        jti: None,
    }
}

fn verify(c: &mut Criterion) {
    let key = Key::new(SECRET).unwrap();
    let token = key.sign(&typical_claims());
    // The same rules on both sides: signature, exp/nbf/iat with leeway, and the audience.
    let validation = Validation {
        audience: Some("wsgate".into()),
        ..Validation::default()
    };
    let verifier = Verifier::new(vec![key], validation).unwrap();
    assert!(verifier.verify(&token).is_ok());
    let signing_input = &token[..token.rfind('.').unwrap()];

    let mut group = c.benchmark_group(format!("verify_{}_byte_token", token.len()));
    group.bench_function("wsgate", |b| b.iter(|| verifier.verify(black_box(&token)).unwrap()));

    // The floor as the issue defines it: HMAC-SHA256 of the signing input with the key.
    group.bench_function("raw_hmac", |b| {
        b.iter(|| {
            let mut mac = Hmac::<Sha256>::new_from_slice(black_box(SECRET)).unwrap();
            mac.update(black_box(signing_input.as_bytes()));
            mac.finalize().into_bytes()
        })
    });

    // Below it: the same HMAC from a state keyed once and cloned, as our verifier does.
    let keyed = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
    group.bench_function("raw_hmac_prekeyed", |b| {
        b.iter(|| {
            let mut mac = keyed.clone();
            mac.update(black_box(signing_input.as_bytes()));
            mac.finalize().into_bytes()
        })
    });

    // The least any verifier on this stack must do besides the HMAC: decode the three
    // segments and let serde_json walk header and payload, building nothing.
    group.bench_function("decode_and_parse_floor", |b| {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        b.iter(|| {
            let mut buf = [0u8; 512];
            for (i, segment) in black_box(&token).split('.').enumerate() {
                let n = engine.decode_slice(segment, &mut buf).unwrap();
                if i < 2 {
                    serde_json::from_slice::<serde::de::IgnoredAny>(&buf[..n]).unwrap();
                }
            }
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
        aud: Vec<String>,
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
