//! The strict JSON reader behind token verification: a token's header and payload, read into
//! exactly the fields wsgate checks and nothing else.
//!
//! Why not `#[derive(Deserialize)]`:
//! - **Duplicate names are refused** (RFC 7515 §4, RFC 7519 §4). serde's derive keeps the last
//!   of two `alg`s; a proxy or another library may keep the first. One token must never mean
//!   two things. Escaped names count too: `"a\u006cg"` is `alg`.
//! - **No serde error on the hot path.** A claim of the wrong JSON type is read as
//!   [`Typed::Wrong`] and becomes our own typed [`JwtError`] later; building a serde error
//!   (a formatted, allocated message) costs more than the whole parse.
//! - **Borrowed strings.** Names and values borrow from the decoded segment unless they
//!   contain escapes.
//!
//! Nothing here decides whether a token is acceptable; `jwt/mod.rs` does, in check order.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::JwtError;

/// The JOSE header, as found.
#[derive(Default)]
pub(super) struct Header<'a> {
    pub alg: Option<Typed<Cow<'a, str>>>,
    pub typ: Option<Typed<Cow<'a, str>>>,
    pub kid: Option<Typed<Cow<'a, str>>>,
    /// Whether a `crit` member was present at all (any value: we understand no extension).
    pub crit: bool,
}

/// The claims wsgate reads, each read as its expected type or marked wrong, not yet checked.
#[derive(Default)]
pub(super) struct RawClaims<'a> {
    pub sub: Option<Typed<Cow<'a, str>>>,
    pub exp: Option<Typed<i64>>,
    pub nbf: Option<Typed<i64>>,
    pub iat: Option<Typed<i64>>,
    pub iss: Option<Typed<Cow<'a, str>>>,
    pub aud: Option<Typed<Audience>>,
    pub rooms: Option<Typed<Vec<String>>>,
    pub jti: Option<Typed<Cow<'a, str>>>,
}

/// Reads a decoded header segment.
pub(super) fn header(json: &[u8]) -> Result<Header<'_>, JwtError> {
    serde_json::from_slice(json).map_err(|_| JwtError::Malformed("header is not a JSON object without duplicate names"))
}

/// Reads a decoded payload segment.
pub(super) fn claims(json: &[u8]) -> Result<RawClaims<'_>, JwtError> {
    serde_json::from_slice(json)
        .map_err(|_| JwtError::Malformed("payload is not a JSON object without duplicate names"))
}

/// A JSON value read as `T` when it has `T`'s JSON type, or `Wrong` (consumed, no error)
/// when it does not.
pub(super) enum Typed<T> {
    Is(T),
    Wrong,
}

impl<T> Typed<T> {
    /// A present claim of the wrong type is [`JwtError::InvalidClaim`]; absent stays `None`.
    pub fn check(value: Option<Typed<T>>, invalid: &'static str) -> Result<Option<T>, JwtError> {
        match value {
            None => Ok(None),
            Some(Typed::Is(v)) => Ok(Some(v)),
            Some(Typed::Wrong) => Err(JwtError::InvalidClaim(invalid)),
        }
    }
}

/// `aud`: one string or an array of strings (RFC 7519 §4.1.3), always a list here.
pub(super) struct Audience(pub Vec<String>);

/// A member name that some reader knows. Each known name is a bit in [`SeenNames`].
trait Field: Copy {
    fn of(name: &str) -> Option<Self>;
    fn bit(self) -> u32;
}

#[derive(Clone, Copy)]
enum HeaderField {
    Alg,
    Typ,
    Kid,
    Crit,
}

impl Field for HeaderField {
    fn of(name: &str) -> Option<HeaderField> {
        Some(match name {
            "alg" => HeaderField::Alg,
            "typ" => HeaderField::Typ,
            "kid" => HeaderField::Kid,
            "crit" => HeaderField::Crit,
            _ => return None,
        })
    }
    fn bit(self) -> u32 {
        1 << self as u32
    }
}

#[derive(Clone, Copy)]
enum ClaimField {
    Sub,
    Exp,
    Nbf,
    Iat,
    Iss,
    Aud,
    Rooms,
    Jti,
}

impl Field for ClaimField {
    fn of(name: &str) -> Option<ClaimField> {
        Some(match name {
            "sub" => ClaimField::Sub,
            "exp" => ClaimField::Exp,
            "nbf" => ClaimField::Nbf,
            "iat" => ClaimField::Iat,
            "iss" => ClaimField::Iss,
            "aud" => ClaimField::Aud,
            "rooms" => ClaimField::Rooms,
            "jti" => ClaimField::Jti,
            _ => return None,
        })
    }
    fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// Object member names seen so far. Known names are bits; other names are kept only when a
/// token has some, so the common case allocates nothing.
struct SeenNames<'a, F> {
    known: u32,
    other: Vec<Cow<'a, str>>,
    field: PhantomData<F>,
}

impl<'a, F: Field> SeenNames<'a, F> {
    fn new() -> Self {
        SeenNames {
            known: 0,
            other: Vec::new(),
            field: PhantomData,
        }
    }

    /// The known field `name` stands for, or `None` for another name; an error if `name` was
    /// seen before in this object.
    fn first_time<E: de::Error>(&mut self, name: Cow<'a, str>) -> Result<Option<F>, E> {
        let duplicate = || E::custom("duplicate member name");
        if let Some(field) = F::of(&name) {
            if self.known & field.bit() != 0 {
                return Err(duplicate());
            }
            self.known |= field.bit();
            return Ok(Some(field));
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
                let mut seen = SeenNames::new();
                while let Some(JsonStr(name)) = map.next_key()? {
                    match seen.first_time(name)? {
                        Some(HeaderField::Alg) => header.alg = Some(map.next_value()?),
                        Some(HeaderField::Typ) => header.typ = Some(map.next_value()?),
                        Some(HeaderField::Kid) => header.kid = Some(map.next_value()?),
                        Some(HeaderField::Crit) => {
                            header.crit = true;
                            map.next_value::<IgnoredAny>()?;
                        }
                        None => {
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
                let mut seen = SeenNames::new();
                while let Some(JsonStr(name)) = map.next_key()? {
                    match seen.first_time(name)? {
                        Some(ClaimField::Sub) => claims.sub = Some(map.next_value()?),
                        Some(ClaimField::Exp) => claims.exp = Some(map.next_value()?),
                        Some(ClaimField::Nbf) => claims.nbf = Some(map.next_value()?),
                        Some(ClaimField::Iat) => claims.iat = Some(map.next_value()?),
                        Some(ClaimField::Iss) => claims.iss = Some(map.next_value()?),
                        Some(ClaimField::Aud) => claims.aud = Some(map.next_value()?),
                        Some(ClaimField::Rooms) => claims.rooms = Some(map.next_value()?),
                        Some(ClaimField::Jti) => claims.jti = Some(map.next_value()?),
                        None => {
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
        struct TypedVisitor<T>(PhantomData<T>);
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
                let int = i64::try_from(v).unwrap_or(i64::MAX);
                Ok(T::from_number(v as f64, Some(int)).map_or(Typed::Wrong, Typed::Is))
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
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Typed<T>, A::Error> {
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
        deserializer.deserialize_any(TypedVisitor(PhantomData))
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
