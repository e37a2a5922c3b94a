//! Finding the credential in a request head (PROTOCOL.md §2).
//!
//! Five carriers, checked in a fixed order; the first one present is the one used, explicit
//! before ambient:
//!
//! 1. `Authorization: Bearer <jwt>`: for clients that can set headers;
//! 2. a `Sec-WebSocket-Protocol` entry `bearer.<jwt>`: the one header a browser script *can*
//!    set on a WebSocket;
//! 3. `?token=<jwt>`, percent-decoded: works everywhere, but URLs end up in logs;
//! 4. cookie `access_token=<jwt>`: ambient, so it needs an allowed `Origin` (see `auth`);
//! 5. cookie `sessionid=<id>`: ambient too, resolved through a session store.
//!
//! List syntax (cookies, protocol lists, repeated headers, whitespace, quoted cookie values)
//! is read tolerantly, as browsers send it. A carrier that is present but ambiguous (two
//! bearer tokens, two `token` parameters, two cookies of the credential's name) is an error
//! rather than a guess: an attacker who can add a second value must not get to choose which
//! one counts.
//!
//! ```
//! use wsgate::credentials::{Carrier, Carriers};
//! use wsgate::head::RequestHead;
//!
//! let raw = b"GET /ws/chat/lobby HTTP/1.1\r\nSec-WebSocket-Protocol: chat, bearer.abc.def.ghi\r\n\r\n";
//! let (head, _) = RequestHead::parse(raw).unwrap().unwrap();
//! let credential = Carriers::default().find(&head).unwrap().unwrap();
//! assert_eq!(credential.carrier(), Carrier::Subprotocol);
//! assert_eq!(credential.secret(), "abc.def.ghi");
//! ```

use std::fmt;

use crate::head::RequestHead;

/// The `Sec-WebSocket-Protocol` prefix that marks an entry as a token rather than a protocol.
pub const BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// Where a credential was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Carrier {
    /// `Authorization: Bearer`.
    AuthorizationHeader,
    /// A `bearer.<jwt>` entry of `Sec-WebSocket-Protocol`.
    Subprotocol,
    /// The `token` query parameter.
    Query,
    /// The JWT cookie (`access_token` by default).
    Cookie,
    /// The session cookie (`sessionid` by default).
    SessionCookie,
}

impl Carrier {
    /// `true` for carriers the browser attaches on its own. A page on another site can make
    /// the browser send them, so they are only trusted together with an allowed `Origin`.
    pub fn is_ambient(self) -> bool {
        matches!(self, Carrier::Cookie | Carrier::SessionCookie)
    }

    /// A short stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Carrier::AuthorizationHeader => "authorization",
            Carrier::Subprotocol => "subprotocol",
            Carrier::Query => "query",
            Carrier::Cookie => "cookie",
            Carrier::SessionCookie => "session_cookie",
        }
    }
}

impl fmt::Display for Carrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A credential and where it came from. `Debug` shows the carrier only, never the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    carrier: Carrier,
    secret: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("carrier", &self.carrier)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Credential {
    /// A credential as if found in `carrier`; for custom authenticators and tests.
    pub fn new(carrier: Carrier, secret: impl Into<String>) -> Credential {
        Credential {
            carrier,
            secret: secret.into(),
        }
    }

    /// Where it was found.
    pub fn carrier(&self) -> Carrier {
        self.carrier
    }

    /// The token or session id itself. Do not log it.
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

/// A credential carrier was present but unusable. The text names the problem, never the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialError {
    /// The carrier holds more than one credential.
    Ambiguous(Carrier),
    /// The carrier is present but its value is empty.
    Empty(Carrier),
    /// The `token` query parameter is not valid percent-encoded UTF-8.
    BadEncoding,
}

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialError::Ambiguous(c) => write!(f, "more than one credential in {c}"),
            CredentialError::Empty(c) => write!(f, "empty credential in {c}"),
            CredentialError::BadEncoding => write!(f, "token parameter is not valid percent-encoding"),
        }
    }
}

impl std::error::Error for CredentialError {}

/// The configurable names of the carriers. The query parameter is always `token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carriers {
    /// Cookie holding a JWT. Default `access_token`.
    pub jwt_cookie: String,
    /// Cookie holding a session id. Default `sessionid`.
    pub session_cookie: String,
}

impl Default for Carriers {
    fn default() -> Carriers {
        Carriers {
            jwt_cookie: "access_token".into(),
            session_cookie: "sessionid".into(),
        }
    }
}

impl Carriers {
    /// The credential of `head`, from the first carrier present (PROTOCOL.md §2 order), or
    /// `Ok(None)` when there is none.
    pub fn find(&self, head: &RequestHead) -> Result<Option<Credential>, CredentialError> {
        if let Some(token) = bearer_header(head)? {
            return Ok(Some(Credential::new(Carrier::AuthorizationHeader, token)));
        }
        if let Some(token) = bearer_protocol(head)? {
            return Ok(Some(Credential::new(Carrier::Subprotocol, token)));
        }
        if let Some(token) = query_token(head)? {
            return Ok(Some(Credential::new(Carrier::Query, token)));
        }
        if let Some(token) = cookie(head, &self.jwt_cookie, Carrier::Cookie)? {
            return Ok(Some(Credential::new(Carrier::Cookie, token)));
        }
        if let Some(id) = cookie(head, &self.session_cookie, Carrier::SessionCookie)? {
            return Ok(Some(Credential::new(Carrier::SessionCookie, id)));
        }
        // Only emptied cookies (what a logout leaves behind, or a page that set an unset
        // variable): say so rather than "no credential".
        for (name, carrier) in [
            (&self.jwt_cookie, Carrier::Cookie),
            (&self.session_cookie, Carrier::SessionCookie),
        ] {
            if cookie_pairs(head).any(|(n, v)| n == name && v.is_empty()) {
                return Err(CredentialError::Empty(carrier));
            }
        }
        Ok(None)
    }

    /// When [`Carriers::find`] found nothing, what the client probably meant to send, as
    /// advice for the refusal: the mistakes people make first.
    pub fn missing_hint(&self, head: &RequestHead) -> Option<&'static str> {
        for value in head.headers("authorization") {
            let value = value.trim_matches([' ', '\t']);
            if looks_like_jwt(value) {
                return Some("Authorization needs the Bearer scheme: Authorization: Bearer <token>");
            }
            if value
                .split_once([' ', '\t'])
                .is_some_and(|(_, rest)| looks_like_jwt(rest.trim()))
            {
                return Some("unsupported Authorization scheme, use Bearer: Authorization: Bearer <token>");
            }
        }
        if head.list("sec-websocket-protocol").any(looks_like_jwt) {
            return Some(
                "JWT-shaped subprotocol entry without the bearer. prefix; browsers offer [\"chat\", \"bearer.\" + token]",
            );
        }
        None
    }
}

/// Three base64url segments, the first an encoded JSON object (`eyJ` is `{"`).
fn looks_like_jwt(value: &str) -> bool {
    value.starts_with("eyJ")
        && value.split('.').count() == 3
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The protocol to echo in `Sec-WebSocket-Protocol`: the first of `supported` (the server's
/// preference order) that the client offered. A `bearer.` entry is never chosen, so the token
/// is never sent back (where proxies and browser devtools would show it in the response).
pub fn select_protocol<'a>(head: &'a RequestHead, supported: &[String]) -> Option<&'a str> {
    supported.iter().find_map(|wanted| {
        head.list("sec-websocket-protocol")
            .filter(|p| !p.starts_with(BEARER_PROTOCOL_PREFIX))
            .find(|p| p == wanted)
    })
}

fn bearer_header(head: &RequestHead) -> Result<Option<&str>, CredentialError> {
    let mut found = None;
    for value in head.headers("authorization") {
        // RFC 9110 §11.1: the scheme is case-insensitive. Other schemes (a browser may replay
        // Basic credentials on its own) are not ours and are passed over.
        let value = value.trim_matches([' ', '\t']);
        let Some((scheme, token)) = value.split_once([' ', '\t']) else {
            if value.eq_ignore_ascii_case("bearer") {
                return Err(CredentialError::Empty(Carrier::AuthorizationHeader));
            }
            continue;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            continue;
        }
        if found.is_some() {
            return Err(CredentialError::Ambiguous(Carrier::AuthorizationHeader));
        }
        found = Some(token.trim_start_matches([' ', '\t']));
    }
    Ok(found)
}

fn bearer_protocol(head: &RequestHead) -> Result<Option<&str>, CredentialError> {
    let mut found = None;
    for entry in head.list("sec-websocket-protocol") {
        let Some(token) = entry.strip_prefix(BEARER_PROTOCOL_PREFIX) else {
            continue;
        };
        if found.is_some() {
            return Err(CredentialError::Ambiguous(Carrier::Subprotocol));
        }
        if token.is_empty() {
            return Err(CredentialError::Empty(Carrier::Subprotocol));
        }
        found = Some(token);
    }
    Ok(found)
}

fn query_token(head: &RequestHead) -> Result<Option<String>, CredentialError> {
    let Some(query) = head.query() else { return Ok(None) };
    let mut found = None;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(name).as_deref() != Some("token") {
            continue;
        }
        if found.is_some() {
            return Err(CredentialError::Ambiguous(Carrier::Query));
        }
        let value = percent_decode(value).ok_or(CredentialError::BadEncoding)?;
        if value.is_empty() {
            return Err(CredentialError::Empty(Carrier::Query));
        }
        found = Some(value);
    }
    Ok(found)
}

/// RFC 3986 percent-decoding into UTF-8, strict: a `%` must be followed by two hex digits.
/// `+` stays `+` (a JWT never contains a space, so form-encoding's `+` means nothing here).
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Every `name=value` cookie pair (RFC 6265 §5.4) across every `Cookie` header, trimmed,
/// surrounding double quotes removed; pairs without `=` are skipped.
fn cookie_pairs(head: &RequestHead) -> impl Iterator<Item = (&str, &str)> {
    head.headers("cookie").flat_map(|v| v.split(';')).filter_map(|pair| {
        let (n, v) = pair.split_once('=')?;
        let v = v.trim_matches([' ', '\t']);
        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
        Some((n.trim_matches([' ', '\t']), v))
    })
}

/// The value of cookie `name`. Empty values are skipped here: an emptied cookie is what a
/// logout usually leaves behind, and the next carrier may still hold a credential.
fn cookie<'a>(head: &'a RequestHead, name: &str, carrier: Carrier) -> Result<Option<&'a str>, CredentialError> {
    let mut found = None;
    for (n, v) in cookie_pairs(head) {
        if n != name || v.is_empty() {
            continue;
        }
        if found.is_some() {
            // Two cookies of one name: a sibling subdomain may have planted one (cookie
            // tossing), and nothing says which the server should believe.
            return Err(CredentialError::Ambiguous(carrier));
        }
        found = Some(v);
    }
    Ok(found)
}
