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

use std::borrow::Cow;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Tokens longer than this are refused before any decoding, so a client cannot make the
/// server base64-decode or parse megabytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash output (32 bytes).
pub const MIN_KEY_LEN: usize = 32;

/// Longest accepted `sub`, in characters: it becomes the username shown to every member.
pub const MAX_SUBJECT_CHARS: usize = 128;

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

/// A key could not be used; the server refuses to start rather than run with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Shorter than [`MIN_KEY_LEN`] bytes.
    TooShort {
        /// The key's actual length in bytes.
        len: usize,
    },
    /// A verifier needs at least one key.
    NoKeys,
    /// Two keys share a `kid`, so a token could not say which one it means.
    DuplicateKid(String),
    /// A `kid` must be 1–64 characters of `[A-Za-z0-9_.-]`: it is written into headers and logs.
    InvalidKid,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::TooShort { len } => write!(
                f,
                "HS256 key is {len} bytes; at least {MIN_KEY_LEN} are required (RFC 7518 section 3.2)"
            ),
            KeyError::NoKeys => write!(f, "no signing key configured"),
            KeyError::DuplicateKid(kid) => write!(f, "two keys share the kid {kid:?}"),
            KeyError::InvalidKid => write!(f, "a kid must be 1-64 characters of [A-Za-z0-9_.-]"),
        }
    }
}

impl std::error::Error for KeyError {}

/// One HS256 key, optionally named by a `kid`.
///
/// The HMAC state is keyed once here and cloned per use: that skips hashing the key's two
/// pad blocks on every verification.
#[derive(Clone)]
pub struct Key {
    kid: Option<String>,
    mac: HmacSha256,
}

impl fmt::Debug for Key {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl Key {
    /// A key without a `kid`. Refuses keys shorter than [`MIN_KEY_LEN`] bytes.
    pub fn new(secret: &[u8]) -> Result<Key, KeyError> {
        if secret.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort { len: secret.len() });
        }
        let mac = HmacSha256::new_from_slice(secret).map_err(|_| KeyError::TooShort { len: 0 })?;
        Ok(Key { kid: None, mac })
    }

    /// A key named `kid`; tokens whose header carries that `kid` are checked with it.
    pub fn with_kid(kid: &str, secret: &[u8]) -> Result<Key, KeyError> {
        let valid =
            (1..=64).contains(&kid.len()) && kid.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !valid {
            return Err(KeyError::InvalidKid);
        }
        Ok(Key {
            kid: Some(kid.to_owned()),
            ..Key::new(secret)?
        })
    }

    /// The key's `kid`, if it has one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Signs `claims` as a compact HS256 JWT; the header names this key's `kid`, if any.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = match &self.kid {
            Some(kid) => serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": kid}),
            None => serde_json::json!({"alg": "HS256", "typ": "JWT"}),
        };
        // Serializing a `Value` and our plain struct cannot fail.
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        self.sign_parts(&header, &payload)
    }

    /// Signs arbitrary header and payload bytes. Meant for tests and tools that need tokens
    /// [`Key::sign`] would never make (hostile headers, odd claims).
    pub fn sign_parts(&self, header: &[u8], payload: &[u8]) -> String {
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let mut mac = self.mac.clone();
        mac.update(token.as_bytes());
        let signature = mac.finalize().into_bytes();
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        token
    }
}

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
            if let Some(kid) = &key.kid
                && keys[..i].iter().any(|k| k.kid.as_ref() == Some(kid))
            {
                return Err(KeyError::DuplicateKid(kid.clone()));
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
        let header = parse_header(buffer.decode(header_b64)?)?;
        let key = self.key_for(&header)?;

        let mut signature = [0u8; 64];
        let signature = decode_into(signature_b64, &mut signature)?;
        let signing_input = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
        let mut mac = key.mac.clone();
        mac.update(signing_input);
        // `verify_slice` checks the length, then compares in constant time.
        mac.verify_slice(signature).map_err(|_| JwtError::BadSignature)?;

        // The payload is authentic from here on.
        let mut buffer = SegmentBuffer::new();
        self.check_claims(parse_claims(buffer.decode(payload_b64)?)?, now)
    }

    fn key_for(&self, header: &Header) -> Result<&Key, JwtError> {
        match &header.kid {
            None => Ok(&self.keys[0]),
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid.as_ref()))
                .ok_or(JwtError::UnknownKey),
        }
    }

    /// Checks claims in a fixed order: time first (an expired token is "expired" whatever
    /// else is wrong with it), then who, then for whom.
    fn check_claims(&self, raw: RawClaims<'_>, now: i64) -> Result<Claims, JwtError> {
        let leeway = i64::try_from(self.validation.leeway).unwrap_or(i64::MAX);
        let exp = typed(raw.exp, "exp must be a number")?.ok_or(JwtError::MissingClaim("exp"))?;
        let nbf = typed(raw.nbf, "nbf must be a number")?;
        let iat = typed(raw.iat, "iat must be a number")?;
        // RFC 7519 §4.1.4: the current time must be *before* exp.
        if now >= exp.saturating_add(leeway) {
            return Err(JwtError::Expired);
        }
        let future = now.saturating_add(leeway);
        if nbf.is_some_and(|nbf| nbf > future) || iat.is_some_and(|iat| iat > future) {
            return Err(JwtError::NotYetValid);
        }
        let sub = typed(raw.sub, "sub must be a string")?.ok_or(JwtError::MissingClaim("sub"))?;
        if sub.is_empty() || sub.chars().count() > MAX_SUBJECT_CHARS {
            return Err(JwtError::InvalidClaim("sub must be 1-128 characters"));
        }
        let iss = typed(raw.iss, "iss must be a string")?;
        let aud = typed(raw.aud, "aud must be a string or an array of strings")?.map_or_else(Vec::new, |a| a.0);
        let rooms = typed(raw.rooms, "rooms must be an array of strings")?;
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

#[derive(Default)]
struct Header<'a> {
    alg: Option<Typed<Cow<'a, str>>>,
    typ: Option<Typed<Cow<'a, str>>>,
    kid: Option<Cow<'a, str>>,
    kid_invalid: bool,
    crit: bool,
}

fn parse_header(json: &[u8]) -> Result<Header<'_>, JwtError> {
    let header: Header = serde_json::from_slice(json)
        .map_err(|_| JwtError::Malformed("header is not a JSON object without duplicate names"))?;
    // Exact and case-sensitive: `none`, `None`, `hs256`, `HS512`, `RS256` all fail here,
    // before any key is touched.
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
    if header.kid_invalid {
        return Err(JwtError::Malformed("kid must be a string"));
    }
    Ok(header)
}

/// Claims as found, each read as its expected type or marked wrong, not yet checked.
#[derive(Default)]
struct RawClaims<'a> {
    sub: Option<Typed<Cow<'a, str>>>,
    exp: Option<Typed<i64>>,
    nbf: Option<Typed<i64>>,
    iat: Option<Typed<i64>>,
    iss: Option<Typed<Cow<'a, str>>>,
    aud: Option<Typed<Audience>>,
    rooms: Option<Typed<Vec<String>>>,
}

fn parse_claims(json: &[u8]) -> Result<RawClaims<'_>, JwtError> {
    serde_json::from_slice(json)
        .map_err(|_| JwtError::Malformed("payload is not a JSON object without duplicate names"))
}

/// A present claim of the wrong type is an [`JwtError::InvalidClaim`]; absent stays `None`.
fn typed<T>(value: Option<Typed<T>>, invalid: &'static str) -> Result<Option<T>, JwtError> {
    match value {
        None => Ok(None),
        Some(Typed::Is(v)) => Ok(Some(v)),
        Some(Typed::Wrong) => Err(JwtError::InvalidClaim(invalid)),
    }
}

/// Object member names seen so far. Duplicates are refused (RFC 7515 §4, RFC 7519 §4): two
/// `alg`s must never mean one thing to us and another to a proxy or library in front of us.
/// Known names are bits; other names are kept only when a token has some.
#[derive(Default)]
struct SeenNames<'a> {
    known: u32,
    other: Vec<Cow<'a, str>>,
}

impl<'a> SeenNames<'a> {
    /// Returns `known`'s index for `name`, or an error if it was seen before.
    fn check<E: de::Error>(
        &mut self,
        name: Cow<'a, str>,
        known: fn(&str) -> Option<usize>,
    ) -> Result<Option<usize>, E> {
        let duplicate = || E::custom("duplicate member name");
        if let Some(i) = known(&name) {
            if self.known & (1 << i) != 0 {
                return Err(duplicate());
            }
            self.known |= 1 << i;
            return Ok(Some(i));
        }
        if self.other.contains(&name) {
            return Err(duplicate());
        }
        self.other.push(name);
        Ok(None)
    }
}

impl<'de> Deserialize<'de> for Header<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HeaderVisitor;
        impl<'de> Visitor<'de> for HeaderVisitor {
            type Value = Header<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header<'de>, A::Error> {
                let mut header = Header::default();
                let mut seen = SeenNames::default();
                while let Some(JsonStr(name)) = map.next_key()? {
                    let known = |name: &str| match name {
                        "alg" => Some(0),
                        "typ" => Some(1),
                        "kid" => Some(2),
                        "crit" => Some(3),
                        _ => None,
                    };
                    match seen.check(name, known)? {
                        Some(0) => header.alg = Some(map.next_value()?),
                        Some(1) => header.typ = Some(map.next_value()?),
                        Some(2) => match map.next_value()? {
                            Typed::Is(kid) => header.kid = Some(kid),
                            Typed::Wrong => header.kid_invalid = true,
                        },
                        found => {
                            header.crit |= found == Some(3);
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(header)
            }
        }
        deserializer.deserialize_map(HeaderVisitor)
    }
}

impl<'de> Deserialize<'de> for RawClaims<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ClaimsVisitor;
        impl<'de> Visitor<'de> for ClaimsVisitor {
            type Value = RawClaims<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawClaims<'de>, A::Error> {
                let mut claims = RawClaims::default();
                let mut seen = SeenNames::default();
                while let Some(JsonStr(name)) = map.next_key()? {
                    let known = |name: &str| match name {
                        "sub" => Some(0),
                        "exp" => Some(1),
                        "nbf" => Some(2),
                        "iat" => Some(3),
                        "iss" => Some(4),
                        "aud" => Some(5),
                        "rooms" => Some(6),
                        _ => None,
                    };
                    match seen.check(name, known)? {
                        Some(0) => claims.sub = Some(map.next_value()?),
                        Some(1) => claims.exp = Some(map.next_value()?),
                        Some(2) => claims.nbf = Some(map.next_value()?),
                        Some(3) => claims.iat = Some(map.next_value()?),
                        Some(4) => claims.iss = Some(map.next_value()?),
                        Some(5) => claims.aud = Some(map.next_value()?),
                        Some(6) => claims.rooms = Some(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(claims)
            }
        }
        deserializer.deserialize_map(ClaimsVisitor)
    }
}

/// A JSON value read as `T` when it has `T`'s JSON type, or `Wrong` (consumed, no error)
/// when it does not. A claim of the wrong type thus becomes our own typed error later, and
/// the parse never builds a serde error on the way (which costs more than the whole parse).
enum Typed<T> {
    Is(T),
    Wrong,
}

/// What each expected type accepts; every other JSON type is `Wrong`.
trait Expected<'de>: Sized {
    fn from_str(_: Cow<'de, str>) -> Option<Self> {
        None
    }
    fn from_number(_: f64, _: Option<i64>) -> Option<Self> {
        None
    }
    fn from_strings(_: Vec<String>) -> Option<Self> {
        None
    }
}

impl<'de> Expected<'de> for Cow<'de, str> {
    fn from_str(s: Cow<'de, str>) -> Option<Self> {
        Some(s)
    }
}

/// RFC 7519 NumericDate: a JSON number, possibly fractional (truncated). An absurd value such
/// as 1e300 saturates ("far future"), it does not wrap.
impl Expected<'_> for i64 {
    fn from_number(float: f64, int: Option<i64>) -> Option<Self> {
        Some(int.unwrap_or(float as i64))
    }
}

impl Expected<'_> for Vec<String> {
    fn from_strings(list: Vec<String>) -> Option<Self> {
        Some(list)
    }
}

/// `aud`: one string or an array of strings (RFC 7519 §4.1.3).
struct Audience(Vec<String>);

impl<'de> Expected<'de> for Audience {
    fn from_str(s: Cow<'de, str>) -> Option<Self> {
        Some(Audience(vec![s.into_owned()]))
    }
    fn from_strings(list: Vec<String>) -> Option<Self> {
        Some(Audience(list))
    }
}

impl<'de, T: Expected<'de>> Deserialize<'de> for Typed<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TypedVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Expected<'de>> Visitor<'de> for TypedVisitor<T> {
            type Value = Typed<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Typed<T>, E> {
                Ok(T::from_str(Cow::Borrowed(v)).map_or(Typed::Wrong, Typed::Is))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Typed<T>, E> {
                Ok(T::from_str(Cow::Owned(v.to_owned())).map_or(Typed::Wrong, Typed::Is))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Typed<T>, E> {
                Ok(T::from_number(v as f64, Some(v)).map_or(Typed::Wrong, Typed::Is))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Typed<T>, E> {
                Ok(
                    T::from_number(v as f64, Some(i64::try_from(v).unwrap_or(i64::MAX)))
                        .map_or(Typed::Wrong, Typed::Is),
                )
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Typed<T>, E> {
                Ok(T::from_number(v, None).map_or(Typed::Wrong, Typed::Is))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Typed<T>, E> {
                Ok(Typed::Wrong)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Typed<T>, E> {
                Ok(Typed::Wrong)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Typed<T>, A::Error> {
                let mut strings = Vec::new();
                let mut all_strings = true;
                while let Some(element) = seq.next_element::<Typed<Cow<'de, str>>>()? {
                    match element {
                        Typed::Is(s) if all_strings => strings.push(s.into_owned()),
                        _ => all_strings = false,
                    }
                }
                Ok(if all_strings {
                    T::from_strings(strings).map_or(Typed::Wrong, Typed::Is)
                } else {
                    Typed::Wrong
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Typed<T>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Typed::Wrong)
            }
        }
        deserializer.deserialize_any(TypedVisitor(std::marker::PhantomData))
    }
}

/// A JSON string, borrowed from the input unless it contained escapes. Escapes are
/// resolved, so `"a\u006cg"` is the name `alg` and counts as a duplicate of it.
struct JsonStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for JsonStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Typed::<Cow<'de, str>>::deserialize(deserializer)? {
            Typed::Is(s) => Ok(JsonStr(s)),
            Typed::Wrong => Err(de::Error::custom("expected a string")),
        }
    }
}
