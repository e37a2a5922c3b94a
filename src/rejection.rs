//! Every way a handshake can be refused, and the one place each maps to an HTTP status,
//! a WebSocket close code and a metrics label (SPEC §4).
//!
//! The reason text of a rejection goes to the client (response body, `error_description`,
//! close reason), so every variant carries static text or text the server wrote, never
//! anything copied from the request.

use std::borrow::Cow;
use std::fmt;

use crate::credentials::CredentialError;
use crate::head::HeadError;
use crate::jwt::JwtError;

/// Why a connection is refused before (or, in close mode, right after) the upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Unknown path: `404`.
    NotFound,
    /// A known path with the wrong method: `405`.
    MethodNotAllowed,
    /// Not a valid upgrade request, or an ambiguous credential: `400`.
    BadRequest(Cow<'static, str>),
    /// Request head over the size or header-count limit: `431`.
    HeadTooLarge,
    /// No credential at all: `401` with a bare `Bearer` challenge.
    MissingCredential,
    /// A token that failed verification: `401` with `error="invalid_token"`.
    InvalidToken(JwtError),
    /// Any other credential the authenticator does not accept (unknown session, …): `401`
    /// with `error="invalid_token"`.
    InvalidCredential(Cow<'static, str>),
    /// Authenticated but not allowed (origin, room): `403`.
    Forbidden(Cow<'static, str>),
    /// Connection limit reached: `503` with `Retry-After`.
    Overloaded,
    /// A service the decision depends on (a session store) failed: `503`.
    Unavailable(Cow<'static, str>),
}

impl Rejection {
    /// Every value [`Rejection::label`] can return, in a fixed order.
    pub const LABELS: [&'static str; 17] = [
        "not_found",
        "method_not_allowed",
        "bad_request",
        "head_too_large",
        "missing_credential",
        "malformed_token",
        "unsupported_token",
        "unknown_key",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "wrong_issuer_or_audience",
        "invalid_claims",
        "invalid_credential",
        "forbidden",
        "overloaded",
        "unavailable",
    ];

    /// The HTTP status this rejection is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::NotFound => 404,
            Rejection::MethodNotAllowed => 405,
            Rejection::BadRequest(_) => 400,
            Rejection::HeadTooLarge => 431,
            Rejection::MissingCredential | Rejection::InvalidToken(_) | Rejection::InvalidCredential(_) => 401,
            Rejection::Forbidden(_) => 403,
            Rejection::Overloaded | Rejection::Unavailable(_) => 503,
        }
    }

    /// In `reject-with = close` mode, the close code that replaces the HTTP status, for the
    /// authentication and authorization failures a browser script needs to see (4401, 4403).
    /// `None`: answered with HTTP even in that mode.
    pub fn close_code(&self) -> Option<u16> {
        match self.status() {
            401 => Some(4401),
            403 => Some(4403),
            _ => None,
        }
    }

    /// The reason for a close frame: this rejection's text, cut to fit the 123 bytes a close
    /// frame allows (RFC 6455 §5.5) at a character boundary.
    pub fn close_reason(&self) -> String {
        let mut reason = self.to_string();
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason
    }

    /// The `WWW-Authenticate` challenge for a `401` (RFC 6750 §3).
    pub fn www_authenticate(&self) -> Option<String> {
        match self {
            Rejection::MissingCredential => Some(r#"Bearer realm="wsgate""#.to_owned()),
            Rejection::InvalidToken(_) | Rejection::InvalidCredential(_) => Some(format!(
                r#"Bearer realm="wsgate", error="invalid_token", error_description="{}""#,
                self.to_string().replace(['"', '\\'], "'")
            )),
            _ => None,
        }
    }

    /// A stable low-cardinality label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::NotFound => "not_found",
            Rejection::MethodNotAllowed => "method_not_allowed",
            Rejection::BadRequest(_) => "bad_request",
            Rejection::HeadTooLarge => "head_too_large",
            Rejection::MissingCredential => "missing_credential",
            Rejection::InvalidToken(e) => match e {
                JwtError::TooLong | JwtError::Malformed(_) => "malformed_token",
                JwtError::UnsupportedAlgorithm | JwtError::UnsupportedHeader(_) => "unsupported_token",
                JwtError::UnknownKey => "unknown_key",
                JwtError::BadSignature => "bad_signature",
                JwtError::Expired => "expired",
                JwtError::NotYetValid => "not_yet_valid",
                JwtError::WrongIssuer | JwtError::WrongAudience => "wrong_issuer_or_audience",
                JwtError::MissingClaim(_) | JwtError::InvalidClaim(_) => "invalid_claims",
            },
            Rejection::InvalidCredential(_) => "invalid_credential",
            Rejection::Forbidden(_) => "forbidden",
            Rejection::Overloaded => "overloaded",
            Rejection::Unavailable(_) => "unavailable",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NotFound => write!(f, "not found"),
            Rejection::MethodNotAllowed => write!(f, "method not allowed"),
            Rejection::BadRequest(why) => write!(f, "bad request: {why}"),
            Rejection::HeadTooLarge => write!(f, "request header fields too large"),
            Rejection::MissingCredential => write!(f, "no credential"),
            Rejection::InvalidToken(e) => write!(f, "{e}"),
            Rejection::InvalidCredential(why) => write!(f, "{why}"),
            Rejection::Forbidden(why) => write!(f, "forbidden: {why}"),
            Rejection::Overloaded => write!(f, "too many connections, retry later"),
            Rejection::Unavailable(why) => write!(f, "service unavailable: {why}"),
        }
    }
}

impl std::error::Error for Rejection {}

impl From<JwtError> for Rejection {
    fn from(e: JwtError) -> Rejection {
        Rejection::InvalidToken(e)
    }
}

impl From<CredentialError> for Rejection {
    fn from(e: CredentialError) -> Rejection {
        Rejection::BadRequest(e.to_string().into())
    }
}

impl From<HeadError> for Rejection {
    fn from(e: HeadError) -> Rejection {
        match e {
            HeadError::TooLarge => Rejection::HeadTooLarge,
            HeadError::Malformed(why) => Rejection::BadRequest(why.into()),
        }
    }
}
