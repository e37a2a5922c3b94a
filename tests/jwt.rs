//! HS256 verification against the RFC example, a table of hostile tokens, an independent
//! implementation, and every single-byte corruption of valid tokens.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use wsgate::jwt::{Claims, JwtError, Key, KeyError, MAX_TOKEN_LEN, Validation, Verifier};

const SECRET: &[u8] = b"wsgate-test-secret-0123456789abcdef";
const OTHER_SECRET: &[u8] = b"another-secret-0123456789abcdefghij";
const NOW: i64 = 1_800_000_000;

fn key() -> Key {
    Key::new(SECRET).unwrap()
}

fn verifier() -> Verifier {
    Verifier::new(vec![key()], Validation::default()).unwrap()
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

/// A token with this exact header and payload JSON, correctly signed with `SECRET`.
fn signed(header: &str, payload: &str) -> String {
    key().sign_parts(header.as_bytes(), payload.as_bytes())
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

fn payload_ok() -> String {
    format!(r#"{{"sub":"alice","exp":{}}}"#, NOW + 3600)
}

#[test]
fn rfc7515_appendix_a1_example() {
    // RFC 7515 A.1: header with CRLF whitespace, `iss` "joe", `exp` 1300819380, no `sub`.
    let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9\
        .eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ\
        .dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let jwk_k = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
    let key = Key::new(&URL_SAFE_NO_PAD.decode(jwk_k).unwrap()).unwrap();
    let verifier = Verifier::new(vec![key], Validation::default()).unwrap();

    // Before `exp`, signature, header and time all pass; the only complaint left is the `sub`
    // that PROTOCOL.md §3 requires and the RFC example does not carry.
    assert_eq!(
        verifier.verify_at(token, 1_300_819_000),
        Err(JwtError::MissingClaim("sub"))
    );
    // Today it is expired.
    assert_eq!(verifier.verify(token), Err(JwtError::Expired));
    // A different key: bad signature, at any time.
    let other = Verifier::new(vec![Key::new(SECRET).unwrap()], Validation::default()).unwrap();
    assert_eq!(other.verify_at(token, 1_300_819_000), Err(JwtError::BadSignature));
}

#[test]
fn valid_token_round_trips_every_claim() {
    let key = Key::with_kid("k1", SECRET).unwrap();
    let claims = Claims {
        sub: "alice".into(),
        exp: NOW + 60,
        nbf: Some(NOW - 60),
        iat: Some(NOW - 60),
        iss: Some("https://issuer.example".into()),
        aud: vec!["wsgate".into(), "other".into()],
        rooms: Some(vec!["lobby".into(), "team-*".into()]),
        jti: Some("token-42".into()),
    };
    let token = key.sign(&claims);
    let validation = Validation {
        issuer: Some("https://issuer.example".into()),
        audience: Some("wsgate".into()),
        ..Validation::default()
    };
    let verifier = Verifier::new(vec![key], validation).unwrap();
    assert_eq!(verifier.verify_at(&token, NOW), Ok(claims));
}

#[test]
fn hostile_tokens_are_refused_for_the_right_reason() {
    let good = signed(HEADER, &payload_ok());
    let (head_b64, rest) = good.split_once('.').unwrap();
    let (payload_b64, sig_b64) = rest.split_once('.').unwrap();
    let other_key_sig = Key::new(OTHER_SECRET)
        .unwrap()
        .sign_parts(HEADER.as_bytes(), payload_ok().as_bytes());
    let with_payload = |p: &str| format!("{head_b64}.{}.{sig_b64}", b64(p));
    let with_header = |h: &str| format!("{}.{payload_b64}.{sig_b64}", b64(h));
    let unsigned = |h: &str| format!("{}.{payload_b64}.", b64(h));
    let payload = |p: String| signed(HEADER, &p);
    // Flip the signature's last character to one that decodes to the same bytes but has
    // non-zero trailing bits: a lenient decoder would accept it.
    let mut non_canonical = good.clone();
    let last = non_canonical.pop().unwrap();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let index = alphabet.iter().position(|&c| c == last as u8).unwrap();
    non_canonical.push(alphabet[index ^ 1] as char);

    use JwtError::*;
    let cases: Vec<(&str, String, JwtError)> = vec![
        (
            "alg none",
            unsigned(r#"{"alg":"none","typ":"JWT"}"#),
            UnsupportedAlgorithm,
        ),
        ("alg None", unsigned(r#"{"alg":"None"}"#), UnsupportedAlgorithm),
        ("alg NONE", unsigned(r#"{"alg":"NONE"}"#), UnsupportedAlgorithm),
        (
            "alg none, no trailing dot",
            format!("{}.{payload_b64}", b64(r#"{"alg":"none"}"#)),
            Malformed("expected three segments"),
        ),
        (
            "alg none, signed",
            signed(r#"{"alg":"none"}"#, &payload_ok()),
            UnsupportedAlgorithm,
        ),
        (
            "alg hs256 lowercase",
            signed(r#"{"alg":"hs256"}"#, &payload_ok()),
            UnsupportedAlgorithm,
        ),
        (
            "alg HS384",
            signed(r#"{"alg":"HS384"}"#, &payload_ok()),
            UnsupportedAlgorithm,
        ),
        (
            "alg HS512",
            signed(r#"{"alg":"HS512"}"#, &payload_ok()),
            UnsupportedAlgorithm,
        ),
        (
            "alg RS256",
            signed(r#"{"alg":"RS256"}"#, &payload_ok()),
            UnsupportedAlgorithm,
        ),
        (
            "alg ES256",
            signed(r#"{"alg":"ES256"}"#, &payload_ok()),
            UnsupportedAlgorithm,
        ),
        (
            "alg missing",
            signed(r#"{"typ":"JWT"}"#, &payload_ok()),
            Malformed("header has no alg"),
        ),
        (
            "alg not a string",
            signed(r#"{"alg":1}"#, &payload_ok()),
            UnsupportedAlgorithm,
        ),
        ("signature stripped", format!("{head_b64}.{payload_b64}."), BadSignature),
        (
            "signature truncated",
            format!("{head_b64}.{payload_b64}.{}", &sig_b64[..40]),
            BadSignature,
        ),
        ("signature of another key", other_key_sig, BadSignature),
        (
            "payload changed after signing",
            with_payload(&format!(r#"{{"sub":"admin","exp":{}}}"#, NOW + 3600)),
            BadSignature,
        ),
        (
            "header changed after signing",
            with_header(r#"{"alg":"HS256"}"#),
            BadSignature,
        ),
        ("padding added", format!("{good}="), Malformed("invalid base64url")),
        (
            "padded header",
            format!("{head_b64}=.{payload_b64}.{sig_b64}"),
            Malformed("invalid base64url"),
        ),
        (
            "standard base64 alphabet",
            good.replace(['-', '_'], "+"),
            Malformed("invalid base64url"),
        ),
        (
            "non-canonical trailing bits",
            non_canonical,
            Malformed("invalid base64url"),
        ),
        (
            "two segments",
            format!("{head_b64}.{payload_b64}"),
            Malformed("expected three segments"),
        ),
        (
            "four segments",
            format!("{good}.{sig_b64}"),
            Malformed("expected three segments"),
        ),
        ("empty", String::new(), Malformed("expected three segments")),
        (
            "three empty segments",
            "..".into(),
            Malformed("header is not a JSON object without duplicate names"),
        ),
        ("9 KiB", format!("{good}{}", "A".repeat(9 * 1024)), TooLong),
        (
            "header not JSON",
            signed("not json", &payload_ok()),
            Malformed("header is not a JSON object without duplicate names"),
        ),
        (
            "header a JSON array",
            signed(r#"["alg","HS256"]"#, &payload_ok()),
            Malformed("header is not a JSON object without duplicate names"),
        ),
        (
            "payload not JSON",
            signed(HEADER, "not json"),
            Malformed("payload is not a JSON object without duplicate names"),
        ),
        (
            "payload a JSON array",
            signed(HEADER, r#"[{"sub":"alice"}]"#),
            Malformed("payload is not a JSON object without duplicate names"),
        ),
        (
            "payload with trailing data",
            signed(HEADER, &format!("{} x", payload_ok())),
            Malformed("payload is not a JSON object without duplicate names"),
        ),
        ("exp missing", payload(r#"{"sub":"alice"}"#.into()), MissingClaim("exp")),
        (
            "exp a string",
            payload(format!(r#"{{"sub":"alice","exp":"{}"}}"#, NOW + 60)),
            InvalidClaim("exp must be a number"),
        ),
        (
            "exp passed",
            payload(format!(r#"{{"sub":"alice","exp":{}}}"#, NOW - 31)),
            Expired,
        ),
        (
            "exp now plus leeway",
            payload(format!(r#"{{"sub":"alice","exp":{}}}"#, NOW - 30)),
            Expired,
        ),
        (
            "nbf in the future",
            payload(format!(r#"{{"sub":"alice","exp":{},"nbf":{}}}"#, NOW + 600, NOW + 60)),
            NotYetValid,
        ),
        (
            "iat in the future",
            payload(format!(r#"{{"sub":"alice","exp":{},"iat":{}}}"#, NOW + 600, NOW + 60)),
            NotYetValid,
        ),
        (
            "sub missing",
            payload(format!(r#"{{"exp":{}}}"#, NOW + 60)),
            MissingClaim("sub"),
        ),
        (
            "sub empty",
            payload(format!(r#"{{"sub":"","exp":{}}}"#, NOW + 60)),
            InvalidClaim("sub must be 1-128 characters"),
        ),
        (
            "sub a number",
            payload(format!(r#"{{"sub":42,"exp":{}}}"#, NOW + 60)),
            InvalidClaim("sub must be a string"),
        ),
        (
            "sub null",
            payload(format!(r#"{{"sub":null,"exp":{}}}"#, NOW + 60)),
            InvalidClaim("sub must be a string"),
        ),
        (
            "sub 129 chars",
            payload(format!(r#"{{"sub":"{}","exp":{}}}"#, "é".repeat(129), NOW + 60)),
            InvalidClaim("sub must be 1-128 characters"),
        ),
        (
            "rooms not strings",
            payload(format!(r#"{{"sub":"alice","exp":{},"rooms":[1]}}"#, NOW + 60)),
            InvalidClaim("rooms must be an array of strings"),
        ),
        (
            "jti not a string",
            payload(format!(r#"{{"sub":"alice","exp":{},"jti":7}}"#, NOW + 60)),
            InvalidClaim("jti must be a string"),
        ),
        (
            "sub with a newline",
            payload(format!(r#"{{"sub":"root\n2026 INFO forged","exp":{}}}"#, NOW + 60)),
            InvalidClaim("sub must not contain control characters"),
        ),
        (
            "sub with an escape sequence",
            payload(format!(r#"{{"sub":"a\u001b[2Jb","exp":{}}}"#, NOW + 60)),
            InvalidClaim("sub must not contain control characters"),
        ),
        (
            "sub with a C1 control",
            payload(format!(r#"{{"sub":"a\u0085b","exp":{}}}"#, NOW + 60)),
            InvalidClaim("sub must not contain control characters"),
        ),
        (
            "sub with a line separator",
            payload(format!(r#"{{"sub":"a\u2028b","exp":{}}}"#, NOW + 60)),
            InvalidClaim("sub must not contain line or paragraph separators or bidirectional controls"),
        ),
        (
            "sub with a paragraph separator",
            payload(format!(r#"{{"sub":"a\u2029b","exp":{}}}"#, NOW + 60)),
            InvalidClaim("sub must not contain line or paragraph separators or bidirectional controls"),
        ),
        (
            "sub with a right-to-left override",
            payload(format!(r#"{{"sub":"evil\u202Egpj.exe","exp":{}}}"#, NOW + 60)),
            InvalidClaim("sub must not contain line or paragraph separators or bidirectional controls"),
        ),
        (
            "sub with a bidirectional embedding",
            payload(format!(r#"{{"sub":"a\u202Ab","exp":{}}}"#, NOW + 60)),
            InvalidClaim("sub must not contain line or paragraph separators or bidirectional controls"),
        ),
        (
            "sub with a bidirectional isolate",
            payload(format!(r#"{{"sub":"a\u2066b\u2069","exp":{}}}"#, NOW + 60)),
            InvalidClaim("sub must not contain line or paragraph separators or bidirectional controls"),
        ),
        (
            "crit present",
            signed(r#"{"alg":"HS256","crit":["exp"]}"#, &payload_ok()),
            UnsupportedHeader("crit is not supported"),
        ),
        (
            "typ JWS",
            signed(r#"{"alg":"HS256","typ":"JWS"}"#, &payload_ok()),
            UnsupportedHeader("typ must be JWT"),
        ),
        (
            "typ lowercase",
            signed(r#"{"alg":"HS256","typ":"jwt"}"#, &payload_ok()),
            UnsupportedHeader("typ must be JWT"),
        ),
        (
            "unknown kid",
            signed(r#"{"alg":"HS256","kid":"nope"}"#, &payload_ok()),
            UnknownKey,
        ),
        (
            "kid not a string",
            signed(r#"{"alg":"HS256","kid":7}"#, &payload_ok()),
            Malformed("kid must be a string"),
        ),
        (
            "duplicate alg",
            signed(r#"{"alg":"HS256","alg":"none"}"#, &payload_ok()),
            Malformed("header is not a JSON object without duplicate names"),
        ),
        (
            "duplicate alg, escaped",
            signed(r#"{"alg":"none","a\u006cg":"HS256"}"#, &payload_ok()),
            Malformed("header is not a JSON object without duplicate names"),
        ),
        (
            "duplicate unknown header",
            signed(r#"{"alg":"HS256","x":1,"x":2}"#, &payload_ok()),
            Malformed("header is not a JSON object without duplicate names"),
        ),
        (
            "duplicate sub",
            payload(format!(r#"{{"sub":"alice","sub":"admin","exp":{}}}"#, NOW + 60)),
            Malformed("payload is not a JSON object without duplicate names"),
        ),
        (
            "duplicate exp",
            payload(format!(r#"{{"sub":"alice","exp":1,"exp":{}}}"#, NOW + 60)),
            Malformed("payload is not a JSON object without duplicate names"),
        ),
    ];
    let verifier = verifier();
    for (name, token, expected) in cases {
        assert_eq!(verifier.verify_at(&token, NOW), Err(expected), "case: {name}");
    }
}

#[test]
fn leeway_is_honoured_and_configurable() {
    let verifier = verifier();
    let expired_by = |secs: i64| signed(HEADER, &format!(r#"{{"sub":"alice","exp":{}}}"#, NOW - secs));
    assert!(
        verifier.verify_at(&expired_by(29), NOW).is_ok(),
        "expired within leeway is accepted"
    );
    assert_eq!(verifier.verify_at(&expired_by(30), NOW), Err(JwtError::Expired));
    let nbf_soon = signed(
        HEADER,
        &format!(r#"{{"sub":"alice","exp":{},"nbf":{}}}"#, NOW + 600, NOW + 30),
    );
    assert!(
        verifier.verify_at(&nbf_soon, NOW).is_ok(),
        "nbf within leeway is accepted"
    );

    let strict = Verifier::new(
        vec![key()],
        Validation {
            leeway: 0,
            ..Validation::default()
        },
    )
    .unwrap();
    assert_eq!(strict.verify_at(&expired_by(0), NOW), Err(JwtError::Expired));
    assert!(strict.verify_at(&expired_by(-1), NOW).is_ok());
    assert_eq!(strict.verify_at(&nbf_soon, NOW), Err(JwtError::NotYetValid));
}

#[test]
fn numeric_dates_may_be_fractional_or_huge() {
    let verifier = verifier();
    let fractional = signed(HEADER, &format!(r#"{{"sub":"alice","exp":{}.75}}"#, NOW + 60));
    assert_eq!(verifier.verify_at(&fractional, NOW).unwrap().exp, NOW + 60);
    let huge = signed(HEADER, r#"{"sub":"alice","exp":1e300}"#);
    assert_eq!(verifier.verify_at(&huge, NOW).unwrap().exp, i64::MAX);
    let negative = signed(HEADER, r#"{"sub":"alice","exp":-1e300}"#);
    assert_eq!(verifier.verify_at(&negative, NOW), Err(JwtError::Expired));
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let validation = Validation {
        issuer: Some("issuer-a".into()),
        audience: Some("wsgate".into()),
        ..Validation::default()
    };
    let verifier = Verifier::new(vec![key()], validation).unwrap();
    let token = |extra: &str| signed(HEADER, &format!(r#"{{"sub":"alice","exp":{}{extra}}}"#, NOW + 60));
    use JwtError::*;
    assert!(
        verifier
            .verify_at(&token(r#","iss":"issuer-a","aud":"wsgate""#), NOW)
            .is_ok()
    );
    assert!(
        verifier
            .verify_at(&token(r#","iss":"issuer-a","aud":["x","wsgate"]"#), NOW)
            .is_ok()
    );
    assert_eq!(
        verifier.verify_at(&token(r#","aud":"wsgate""#), NOW),
        Err(MissingClaim("iss"))
    );
    assert_eq!(
        verifier.verify_at(&token(r#","iss":"issuer-b","aud":"wsgate""#), NOW),
        Err(WrongIssuer)
    );
    assert_eq!(
        verifier.verify_at(&token(r#","iss":"issuer-a""#), NOW),
        Err(MissingClaim("aud"))
    );
    assert_eq!(
        verifier.verify_at(&token(r#","iss":"issuer-a","aud":["x","y"]"#), NOW),
        Err(WrongAudience)
    );
    assert_eq!(
        verifier.verify_at(&token(r#","iss":"issuer-a","aud":[1]"#), NOW),
        Err(InvalidClaim("aud must be a string or an array of strings"))
    );
    // Not configured: not checked.
    assert!(
        self::verifier()
            .verify_at(&token(r#","iss":"anyone","aud":"anything""#), NOW)
            .is_ok()
    );
}

#[test]
fn kid_selects_the_key_for_rotation() {
    let old = Key::with_kid("2025", OTHER_SECRET).unwrap();
    let new = Key::with_kid("2026", SECRET).unwrap();
    let claims = Claims::new("alice", NOW + 60);
    let old_token = old.sign(&claims);
    let new_token = new.sign(&claims);
    let verifier = Verifier::new(vec![new.clone(), old.clone()], Validation::default()).unwrap();
    assert!(verifier.verify_at(&old_token, NOW).is_ok());
    assert!(verifier.verify_at(&new_token, NOW).is_ok());
    // Without kid, the primary (first) key is used.
    let no_kid = Key::new(SECRET).unwrap().sign(&claims);
    assert!(verifier.verify_at(&no_kid, NOW).is_ok());
    let no_kid_old = Key::new(OTHER_SECRET).unwrap().sign(&claims);
    assert_eq!(verifier.verify_at(&no_kid_old, NOW), Err(JwtError::BadSignature));
    // A token whose kid names the old key but that was signed with the new one fails.
    let swapped = new.sign_parts(br#"{"alg":"HS256","kid":"2025"}"#, br#"{"sub":"a","exp":4000000000}"#);
    assert_eq!(verifier.verify_at(&swapped, NOW), Err(JwtError::BadSignature));
    assert_eq!(
        Verifier::new(vec![old.clone(), old], Validation::default()).unwrap_err(),
        KeyError::DuplicateKid("2025".into())
    );
}

#[test]
fn short_and_misnamed_keys_are_refused() {
    assert_eq!(Key::new(&[7; 31]).unwrap_err(), KeyError::TooShort { len: 31 });
    assert!(Key::new(&[7; 32]).is_ok());
    assert!(KeyError::TooShort { len: 31 }.to_string().contains("at least 32"));
    assert_eq!(Key::with_kid("", SECRET).unwrap_err(), KeyError::InvalidKid);
    assert_eq!(Key::with_kid("a\"b", SECRET).unwrap_err(), KeyError::InvalidKid);
    assert_eq!(
        Verifier::new(vec![], Validation::default()).unwrap_err(),
        KeyError::NoKeys
    );
    assert!(!format!("{:?}", key()).contains("wsgate-test-secret"));
}

#[test]
fn error_texts_never_contain_the_token() {
    let verifier = verifier();
    let tokens = [
        signed(r#"{"alg":"none"}"#, &payload_ok()),
        signed(HEADER, r#"{"sub":"SECRETSUBJECT"}"#),
        format!("{}.{}.AAAA", b64(HEADER), b64(r#"{"sub":"SECRETSUBJECT","exp":1}"#)),
        "garbage-SECRETSUBJECT".into(),
    ];
    for token in tokens {
        let err = verifier.verify_at(&token, NOW).unwrap_err();
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains(&token) && !text.contains("SECRETSUBJECT"), "{text}");
            for segment in token.split('.').filter(|s| s.len() > 3) {
                assert!(!text.contains(segment), "{text} contains a token segment");
            }
        }
    }
}

#[test]
fn cross_check_with_the_jsonwebtoken_crate() {
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation as JwtValidation};
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct TheirClaims {
        sub: String,
        exp: i64,
        rooms: Vec<String>,
    }
    let now = wsgate::jwt::unix_now();
    let theirs = TheirClaims {
        sub: "alice".into(),
        exp: now + 600,
        rooms: vec!["lobby".into()],
    };

    // Signed by jsonwebtoken (with and without kid), verified by us.
    let mut header = Header::new(Algorithm::HS256);
    let token = jsonwebtoken::encode(&header, &theirs, &EncodingKey::from_secret(SECRET)).unwrap();
    let ours = verifier().verify(&token).unwrap();
    assert_eq!(
        (ours.sub.as_str(), ours.exp, ours.rooms),
        ("alice", now + 600, Some(vec!["lobby".to_owned()]))
    );
    header.kid = Some("k2".into());
    let token = jsonwebtoken::encode(&header, &theirs, &EncodingKey::from_secret(OTHER_SECRET)).unwrap();
    let rotating = Verifier::new(
        vec![key(), Key::with_kid("k2", OTHER_SECRET).unwrap()],
        Validation::default(),
    )
    .unwrap();
    assert_eq!(rotating.verify(&token).unwrap().sub, "alice");

    // Signed by us, verified by jsonwebtoken.
    let mut claims = Claims::new("alice", now + 600);
    claims.rooms = Some(vec!["lobby".into()]);
    let token = key().sign(&claims);
    let decoded = jsonwebtoken::decode::<TheirClaims>(
        &token,
        &DecodingKey::from_secret(SECRET),
        &JwtValidation::new(Algorithm::HS256),
    )
    .unwrap();
    assert_eq!(decoded.claims, theirs);
    // And both refuse the other key's signature.
    assert!(
        jsonwebtoken::decode::<TheirClaims>(
            &token,
            &DecodingKey::from_secret(OTHER_SECRET),
            &JwtValidation::new(Algorithm::HS256)
        )
        .is_err()
    );
}

/// Property, checked exhaustively rather than by sampling: no single-byte change anywhere in
/// a valid token (every position, every one of the 255 other values) verifies.
#[test]
fn property_no_single_byte_change_verifies() {
    let with_kid = Key::with_kid("k1", SECRET).unwrap();
    let verifier = Verifier::new(vec![key(), with_kid.clone()], Validation::default()).unwrap();
    let mut claims = Claims::new("alice", NOW + 3600);
    claims.rooms = Some(vec!["lobby".into(), "team-*".into()]);
    claims.iss = Some("issuer".into());
    for token in [
        key().sign(&claims),
        with_kid.sign(&claims),
        signed(HEADER, &payload_ok()),
    ] {
        assert!(verifier.verify_at(&token, NOW).is_ok());
        let mut checked = 0;
        for position in 0..token.len() {
            for mask in 1..=255u8 {
                let mut bytes = token.clone().into_bytes();
                bytes[position] ^= mask;
                // Non-UTF-8 bytes cannot reach `verify` (it takes `&str`); the HTTP layer turns
                // them into replacement characters first, which this covers too.
                let mutated = String::from_utf8_lossy(&bytes);
                assert!(
                    verifier.verify_at(&mutated, NOW).is_err(),
                    "byte {position} ^ {mask:#04x} verified"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, token.len() * 255);
    }
}

#[test]
fn max_token_len_is_the_boundary() {
    let verifier = verifier();
    // Pad the payload with an unknown claim until the token is exactly at the cap.
    let base = signed(HEADER, &format!(r#"{{"sub":"alice","exp":{},"pad":""}}"#, NOW + 60));
    let mut pad = (MAX_TOKEN_LEN - base.len()) * 3 / 4;
    let token = loop {
        let token = signed(
            HEADER,
            &format!(r#"{{"sub":"alice","exp":{},"pad":"{}"}}"#, NOW + 60, "x".repeat(pad)),
        );
        if token.len() <= MAX_TOKEN_LEN {
            break token;
        }
        pad -= 1;
    };
    assert!(token.len() > MAX_TOKEN_LEN - 4);
    assert!(verifier.verify_at(&token, NOW).is_ok());
    let too_long = signed(
        HEADER,
        &format!(
            r#"{{"sub":"alice","exp":{},"pad":"{}"}}"#,
            NOW + 60,
            "x".repeat(pad + 4)
        ),
    );
    assert!(too_long.len() > MAX_TOKEN_LEN);
    assert_eq!(verifier.verify_at(&too_long, NOW), Err(JwtError::TooLong));
}
