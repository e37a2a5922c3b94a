//! Token verification on hostile input, in two modes chosen by the first byte:
//! - raw: the bytes are the token (exercises the compact-form and header checks);
//! - signed: the bytes are a header and a payload that we sign ourselves, so the fuzzer
//!   reaches claim parsing past the signature check it could never forge.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use wsgate::jwt::{Key, MAX_SUBJECT_CHARS, MAX_TOKEN_LEN, Validation, Verifier};

const NOW: i64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else { return };
    let primary = Key::new(b"fuzz-secret-0123456789abcdefghijkl").unwrap();
    let rotated = Key::with_kid("k2", b"fuzz-secret-2-0123456789abcdefghijk").unwrap();
    let validation = Validation { issuer: Some("iss".into()), audience: Some("aud".into()), ..Validation::default() };
    let verifier = Verifier::new(vec![primary.clone(), rotated.clone()], validation).unwrap();

    let token = if mode % 2 == 0 {
        String::from_utf8_lossy(data).into_owned()
    } else {
        let split = data.iter().position(|&b| b == 0xff).unwrap_or(data.len());
        let (header, payload) = (&data[..split], data.get(split + 1..).unwrap_or_default());
        let key = if mode & 2 == 0 { &primary } else { &rotated };
        key.sign_parts(header, payload)
    };
    if let Ok(claims) = verifier.verify_at(&token, NOW) {
        // Whatever got through obeys every rule.
        assert!(token.len() <= MAX_TOKEN_LEN);
        // No second spelling of a valid token exists: it is byte for byte what our signer
        // makes of its decoded parts with one of the keys.
        let parts: Vec<Vec<u8>> = token.split('.').map(|s| URL_SAFE_NO_PAD.decode(s).unwrap()).collect();
        let resigned = [&primary, &rotated].map(|k| k.sign_parts(&parts[0], &parts[1]));
        assert!(resigned.contains(&token), "a non-canonical token verified");
        assert!(!claims.sub.is_empty() && claims.sub.chars().count() <= MAX_SUBJECT_CHARS);
        assert!(claims.exp.saturating_add(30) > NOW);
        assert!(claims.nbf.is_none_or(|nbf| nbf <= NOW + 30));
        assert_eq!(claims.iss.as_deref(), Some("iss"));
        assert!(claims.aud.iter().any(|a| a == "aud"));
    }
});
