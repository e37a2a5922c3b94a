//! HS256 keys: at least 32 bytes, optionally named by a `kid` for rotation, and the signer.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::Claims;

pub(super) type HmacSha256 = Hmac<Sha256>;

/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash output (32 bytes).
pub const MIN_KEY_LEN: usize = 32;

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
        let mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
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
        let header = serde_json::to_vec(&header).expect("a JSON object of strings always serializes");
        let payload = serde_json::to_vec(claims).expect("Claims holds only strings and numbers");
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

    /// HMAC-SHA256(key: this key's secret, message: `label`): a key of its own for another
    /// use of the same secret, so the secret itself is never used twice and a token can never
    /// pass for anything else. PROTOCOL.md §12 signs control messages with
    /// `derive(b"wsgate control v1")`; an application in Rust can sign its own with it.
    pub fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(label);
        mac.finalize().into_bytes().into()
    }

    /// A fresh HMAC state keyed with this key.
    pub(super) fn mac(&self) -> HmacSha256 {
        self.mac.clone()
    }
}
