//! HS256 JSON Web Tokens: signing and strict verification (RFC 7515, 7518, 7519).
//!
//! This is the only place a token is read. Verification runs in an order chosen so that an
//! attacker's bytes are trusted as little as possible, and as late as possible:
//!
//! 1. the length cap (8 KiB) before anything is decoded;
//! 2. the compact form: exactly three segments of strict, unpadded, canonical base64url;
//! 3. the header: `alg` pinned to `HS256`, `typ` if present `JWT`, no `crit`, `kid` picks the key;
//! 4. the signature, in constant time, over the *original* bytes of `header.payload`;
//! 5. only then the claims: decoded, parsed and checked (`sub`, `exp`, `nbf`, `iat`, `iss`,
//!    `aud`, `rooms`).
//!
//! Every failure is a [`JwtError`] whose text is safe to show a client: it says why, and never
//! repeats any part of the token.
//!
//! ```
//! use wsgate::jwt::{Claims, Key, Validation, Verifier};
//!
//! let key = Key::new(b"an example secret of at least 32 bytes!!").unwrap();
//! let token = key.sign(&Claims::new("alice", 4_000_000_000));
//! let verifier = Verifier::new(vec![key], Validation::default()).unwrap();
//! assert_eq!(verifier.verify(&token).unwrap().sub, "alice");
//! ```

mod json;
mod key;

use std::borrow::Cow;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac;

use json::{Header, RawClaims, Typed};
pub use key::{Key, KeyError, MIN_KEY_LEN};

/// Tokens longer than this are refused before any decoding, so a client cannot make the
/// server base64-decode or parse megabytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Longest accepted `sub`, in characters: it becomes the username shown to every member.
pub const MAX_SUBJECT_CHARS: usize = 128;

/// The one rule for a `sub` (and so for every username, from a token, a session or the admin
/// API): 1–[`MAX_SUBJECT_CHARS`] characters, none of them a control character, a line or
/// paragraph separator, or a bidirectional control (PROTOCOL.md §3). A username is written
/// into every member's messages and into the server's log lines; a newline, carriage return
/// or ANSI escape in it could forge a log line or repaint an operator's terminal, a U+2028
/// breaks a line in a JavaScript client, and a U+202E shows `evil\u{202E}gpj.exe` to every
/// member as `evilexe.jpg`. So such a `sub` is refused outright.
pub fn check_subject(sub: &str) -> Result<(), JwtError> {
    if sub.is_empty() || sub.chars().count() > MAX_SUBJECT_CHARS {
        return Err(JwtError::InvalidClaim("sub must be 1-128 characters"));
    }
    // `char::is_control` is Unicode's Cc: C0, DEL and C1.
    if sub.chars().any(char::is_control) {
        return Err(JwtError::InvalidClaim("sub must not contain control characters"));
    }
    if sub.chars().any(is_separator_or_bidi) {
        return Err(JwtError::InvalidClaim(
            "sub must not contain line or paragraph separators or bidirectional controls",
        ));
    }
    Ok(())
}

/// U+2028, U+2029 (separators), U+202A–U+202E and U+2066–U+2069 (bidirectional embeddings,
/// overrides and isolates).
fn is_separator_or_bidi(c: char) -> bool {
    matches!(c, '\u{2028}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Why a token was refused. The `Display` text is safe to send to the client (it is what
/// `error_description` and close reasons carry): it never contains the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Longer than [`MAX_TOKEN_LEN`]; nothing was decoded.
    TooLong,
    /// Not a well-formed compact JWS; the text says what is wrong.
    Malformed(&'static str),
    /// `alg` is anything but exactly `HS256` (this is what stops `none` and algorithm confusion).
    UnsupportedAlgorithm,
    /// A header parameter we refuse: `typ` other than `JWT`, or any `crit`.
    UnsupportedHeader(&'static str),
    /// `kid` names no configured key.
    UnknownKey,
    /// The signature does not match.
    BadSignature,
    /// `exp` (plus leeway) has passed.
    Expired,
    /// `nbf` or `iat` lies in the future (beyond leeway).
    NotYetValid,
    /// `iss` differs from the configured issuer.
    WrongIssuer,
    /// `aud` does not contain the configured audience.
    WrongAudience,
    /// A required claim is absent.
    MissingClaim(&'static str),
    /// A claim is present but has the wrong type or an invalid value.
    InvalidClaim(&'static str),
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::TooLong => write!(f, "token too long"),
            JwtError::Malformed(why) => write!(f, "malformed token: {why}"),
            JwtError::UnsupportedAlgorithm => write!(f, "unsupported algorithm (only HS256)"),
            JwtError::UnsupportedHeader(why) => write!(f, "unsupported token header: {why}"),
            JwtError::UnknownKey => write!(f, "unknown key id"),
            JwtError::BadSignature => write!(f, "bad signature"),
            JwtError::Expired => write!(f, "token expired"),
            JwtError::NotYetValid => write!(f, "token not yet valid"),
            JwtError::WrongIssuer => write!(f, "wrong issuer"),
            JwtError::WrongAudience => write!(f, "wrong audience"),
            JwtError::MissingClaim(name) => write!(f, "missing claim: {name}"),
            JwtError::InvalidClaim(why) => write!(f, "invalid claim: {why}"),
        }
    }
}

impl std::error::Error for JwtError {}

/// The claims wsgate reads. Unknown claims are ignored (after the duplicate-name check).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Claims {
    /// The user; shown to other members as `username`.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch. Required: a token that never expires is a
    /// password that can never be changed.
    pub exp: i64,
    /// Not before, seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audiences (the claim may be one string or an array; both arrive here as a list).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aud: Vec<String>,
    /// Rooms this token may join: exact names, or prefixes ending in `*`. `None`: any room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    /// The token's id, by which it can be revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl Claims {
    /// Claims with only the two required fields set.
    pub fn new(sub: impl Into<String>, exp: i64) -> Claims {
        Claims {
            sub: sub.into(),
            exp,
            nbf: None,
            iat: None,
            iss: None,
            aud: Vec::new(),
            rooms: None,
            jti: None,
        }
    }
}

/// What a token must satisfy besides its signature. Every rule is a named field with a
/// default, in the manner of the `jsonwebtoken` crate's `Validation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// Seconds of clock skew tolerated for `exp`, `nbf` and `iat`. Default 30.
    pub leeway: u64,
    /// When set, `iss` must be present and equal to it. Default: not checked.
    pub issuer: Option<String>,
    /// When set, `aud` must be present and contain it. Default: not checked.
    pub audience: Option<String>,
}

impl Default for Validation {
    fn default() -> Validation {
        Validation {
            leeway: 30,
            issuer: None,
            audience: None,
        }
    }
}

/// Verifies HS256 tokens against one or more keys.
///
/// With several keys (rotation), a token's `kid` selects the key; a token without `kid` is
/// checked with the first key, which is also the one new tokens should be signed with.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Vec<Key>,
    validation: Validation,
}

impl Verifier {
    /// A verifier over `keys` (first = primary). Refuses an empty list and duplicate `kid`s.
    pub fn new(keys: Vec<Key>, validation: Validation) -> Result<Verifier, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        for (i, key) in keys.iter().enumerate() {
            if let Some(kid) = key.kid()
                && keys[..i].iter().any(|k| k.kid() == Some(kid))
            {
                return Err(KeyError::DuplicateKid(kid.to_owned()));
            }
        }
        Ok(Verifier { keys, validation })
    }

    /// The primary key: the one to sign new tokens with.
    pub fn primary(&self) -> &Key {
        &self.keys[0]
    }

    /// The rules tokens are checked against.
    pub fn validation(&self) -> &Validation {
        &self.validation
    }

    /// Verifies `token` at the current system time.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        self.verify_at(token, unix_now())
    }

    /// Verifies `token` as if the time were `now` (seconds since the Unix epoch), so tests can
    /// pin the clock.
    pub fn verify_at(&self, token: &str, now: i64) -> Result<Claims, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::TooLong);
        }
        let mut segments = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (segments.next(), segments.next(), segments.next(), segments.next())
        else {
            return Err(JwtError::Malformed("expected three segments"));
        };

        let mut buffer = SegmentBuffer::new();
        let header = json::header(buffer.decode(header_b64)?)?;
        let key = self.key_for(check_header(header)?)?;

        let mut signature = [0u8; 64];
        let signature = decode_into(signature_b64, &mut signature)?;
        let signing_input = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
        let mut mac = key.mac();
        mac.update(signing_input);
        // `verify_slice` checks the length, then compares in constant time.
        mac.verify_slice(signature).map_err(|_| JwtError::BadSignature)?;

        // The payload is authentic from here on.
        let mut buffer = SegmentBuffer::new();
        self.check_claims(json::claims(buffer.decode(payload_b64)?)?, now)
    }

    /// The key a header's `kid` names; no `kid`, the primary key.
    fn key_for(&self, kid: Option<Cow<'_, str>>) -> Result<&Key, JwtError> {
        match kid {
            None => Ok(&self.keys[0]),
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid() == Some(kid.as_ref()))
                .ok_or(JwtError::UnknownKey),
        }
    }

    /// Checks claims in a fixed order: time first (an expired token is "expired" whatever
    /// else is wrong with it), then who, then for whom.
    fn check_claims(&self, raw: RawClaims<'_>, now: i64) -> Result<Claims, JwtError> {
        let leeway = i64::try_from(self.validation.leeway).unwrap_or(i64::MAX);
        let exp = Typed::check(raw.exp, "exp must be a number")?.ok_or(JwtError::MissingClaim("exp"))?;
        let nbf = Typed::check(raw.nbf, "nbf must be a number")?;
        let iat = Typed::check(raw.iat, "iat must be a number")?;
        // RFC 7519 §4.1.4: the current time must be *before* exp.
        if now >= exp.saturating_add(leeway) {
            return Err(JwtError::Expired);
        }
        let future = now.saturating_add(leeway);
        if nbf.is_some_and(|nbf| nbf > future) || iat.is_some_and(|iat| iat > future) {
            return Err(JwtError::NotYetValid);
        }
        let sub = Typed::check(raw.sub, "sub must be a string")?.ok_or(JwtError::MissingClaim("sub"))?;
        check_subject(&sub)?;
        let iss = Typed::check(raw.iss, "iss must be a string")?;
        let aud = Typed::check(raw.aud, "aud must be a string or an array of strings")?.map_or_else(Vec::new, |a| a.0);
        let rooms = Typed::check(raw.rooms, "rooms must be an array of strings")?;
        let jti = Typed::check(raw.jti, "jti must be a string")?.map(Cow::into_owned);
        if let Some(issuer) = &self.validation.issuer {
            match &iss {
                None => return Err(JwtError::MissingClaim("iss")),
                Some(iss) if iss != issuer => return Err(JwtError::WrongIssuer),
                Some(_) => {}
            }
        }
        if let Some(audience) = &self.validation.audience {
            if aud.is_empty() {
                return Err(JwtError::MissingClaim("aud"));
            }
            if !aud.contains(audience) {
                return Err(JwtError::WrongAudience);
            }
        }
        Ok(Claims {
            sub: sub.into_owned(),
            exp,
            nbf,
            iat,
            iss: iss.map(Cow::into_owned),
            aud,
            rooms,
            jti,
        })
    }
}

/// Seconds since the Unix epoch by the system clock.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Strict base64url: the engine refuses padding and non-canonical trailing bits, so every
/// token has exactly one spelling and a signature cannot be altered without breaking it.
fn decode_into<'b>(segment: &str, out: &'b mut [u8]) -> Result<&'b [u8], JwtError> {
    let invalid = |_| JwtError::Malformed("invalid base64url");
    let len = URL_SAFE_NO_PAD.decode_slice(segment, out).map_err(invalid)?;
    Ok(&out[..len])
}

/// Where a segment is decoded: on the stack when it is small (typical headers and payloads
/// are a few hundred bytes), on the heap otherwise. Saves an allocation per segment.
struct SegmentBuffer {
    stack: [u8; 512],
    heap: Vec<u8>,
}

impl SegmentBuffer {
    fn new() -> SegmentBuffer {
        SegmentBuffer {
            stack: [0; 512],
            heap: Vec::new(),
        }
    }

    fn decode(&mut self, segment: &str) -> Result<&[u8], JwtError> {
        if base64::decoded_len_estimate(segment.len()) <= self.stack.len() {
            return decode_into(segment, &mut self.stack);
        }
        self.heap = URL_SAFE_NO_PAD
            .decode(segment)
            .map_err(|_| JwtError::Malformed("invalid base64url"))?;
        Ok(&self.heap)
    }
}

/// The header rules, before any key is touched. Returns the `kid`, if any.
fn check_header(header: Header<'_>) -> Result<Option<Cow<'_, str>>, JwtError> {
    // Exact and case-sensitive: `none`, `None`, `hs256`, `HS512`, `RS256` all fail here.
    // This is what stops `alg: none` and algorithm confusion.
    match &header.alg {
        None => return Err(JwtError::Malformed("header has no alg")),
        Some(Typed::Is(alg)) if alg == "HS256" => {}
        Some(_) => return Err(JwtError::UnsupportedAlgorithm),
    }
    if header
        .typ
        .as_ref()
        .is_some_and(|typ| !matches!(typ, Typed::Is(t) if t == "JWT"))
    {
        return Err(JwtError::UnsupportedHeader("typ must be JWT"));
    }
    // RFC 7515 §4.1.11: extensions we do not understand must not be ignored.
    if header.crit {
        return Err(JwtError::UnsupportedHeader("crit is not supported"));
    }
    match header.kid {
        None => Ok(None),
        Some(Typed::Is(kid)) => Ok(Some(kid)),
        Some(Typed::Wrong) => Err(JwtError::Malformed("kid must be a string")),
    }
}
