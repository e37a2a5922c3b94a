//! Every way a handshake can be refused, and the one table that gives each its HTTP status,
//! its close code in close mode, its response headers and its metrics label
//! (PROTOCOL.md §4).
//!
//! The reason text of a rejection goes to the client (response body, `error_description`,
//! close reason), so every variant carries static text or text the server wrote, never a
//! credential. The one request value a text may quote is a refused `Origin`, escaped and cut
//! to 100 characters: the page that sent it knows it already, and it names the mistake.

use std::borrow::Cow;
use std::fmt;

use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::close;
use crate::credentials::{Carrier, CredentialError};
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
    /// `Sec-WebSocket-Version` is not 13: `400`, saying which version we speak (RFC 6455 §4.4).
    UnsupportedVersion,
    /// Request head over the size or header-count limit: `431`.
    HeadTooLarge,
    /// No credential at all: `401` with a bare `Bearer` challenge, and, when the request
    /// shows a likely mistake, a hint in the body.
    MissingCredential(Option<&'static str>),
    /// A carrier present but empty (`?token=`, `Bearer `, `bearer.`, an emptied cookie): `401`
    /// with `error="invalid_token"`. An unset token variable is the usual cause.
    EmptyCredential(Carrier),
    /// A token that failed verification: `401` with `error="invalid_token"`.
    InvalidToken(JwtError),
    /// Any other credential the authenticator does not accept (unknown session, …): `401`
    /// with `error="invalid_token"`.
    InvalidCredential(Cow<'static, str>),
    /// A revoked credential or ended session: `401` with `error="invalid_token"` and the
    /// description `revoked` or `session ended`.
    Revoked(&'static str),
    /// Authenticated but not allowed (the room): `403`.
    Forbidden(Cow<'static, str>),
    /// The `Origin` is not allowed: `403`, as HTTP even in close mode (a page on another
    /// site is not a user who needs a readable close code).
    OriginNotAllowed(Cow<'static, str>),
    /// Too many connections, or connects, for this identity on this node: `429` with
    /// `Retry-After`; close mode `4429`.
    TooMany(Cow<'static, str>),
    /// Connection limit reached: `503` with `Retry-After`.
    Overloaded,
    /// A service the decision depends on (a session store) failed: `503`.
    Unavailable(Cow<'static, str>),
}

/// The metrics label of a rejection: `wsgate_handshake_rejections_total{reason="…"}`.
///
/// Metrics keep one counter per variant, indexed by the variant itself, so a new reason is
/// counted as soon as it exists; [`Reason::ALL`] only lists them for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // each variant is its label, below
pub enum Reason {
    NotFound,
    MethodNotAllowed,
    BadRequest,
    HeadTooLarge,
    MissingCredential,
    MalformedToken,
    UnsupportedToken,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuerOrAudience,
    InvalidClaims,
    InvalidCredential,
    EmptyCredential,
    Forbidden,
    Overloaded,
    Unavailable,
    TooMany,
    Revoked,
}

impl Reason {
    /// Every reason, in declaration order (`ALL[r as usize] == r`, checked by a test).
    pub const ALL: [Reason; 20] = [
        Reason::NotFound,
        Reason::MethodNotAllowed,
        Reason::BadRequest,
        Reason::HeadTooLarge,
        Reason::MissingCredential,
        Reason::MalformedToken,
        Reason::UnsupportedToken,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::WrongIssuerOrAudience,
        Reason::InvalidClaims,
        Reason::InvalidCredential,
        Reason::EmptyCredential,
        Reason::Forbidden,
        Reason::Overloaded,
        Reason::Unavailable,
        Reason::TooMany,
        Reason::Revoked,
    ];

    /// The label text.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotFound => "not_found",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::BadRequest => "bad_request",
            Reason::HeadTooLarge => "head_too_large",
            Reason::MissingCredential => "missing_credential",
            Reason::MalformedToken => "malformed_token",
            Reason::UnsupportedToken => "unsupported_token",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::WrongIssuerOrAudience => "wrong_issuer_or_audience",
            Reason::InvalidClaims => "invalid_claims",
            Reason::InvalidCredential => "invalid_credential",
            Reason::EmptyCredential => "empty_credential",
            Reason::Forbidden => "forbidden",
            Reason::Overloaded => "overloaded",
            Reason::Unavailable => "unavailable",
            Reason::TooMany => "too_many_for_identity",
            Reason::Revoked => "revoked",
        }
    }
}

// A variant added to `Reason` but not to `ALL` fails to compile here (or the order test).
const _: () = assert!(Reason::ALL.len() == Reason::Revoked as usize + 1);

/// The `result` label of `wsgate_handshakes_total`: what the handshake came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Upgraded.
    Accepted,
    /// `401` (or `4401`).
    Unauthenticated,
    /// `403` (or `4403`).
    Forbidden,
    /// `400`, `404`, `405`, `431`: not a request we could act on.
    BadRequest,
    /// `429` or `503`: no room for it now.
    Overloaded,
}

impl Outcome {
    /// Every outcome, in declaration order.
    pub const ALL: [Outcome; 5] = [
        Outcome::Accepted,
        Outcome::Unauthenticated,
        Outcome::Forbidden,
        Outcome::BadRequest,
        Outcome::Overloaded,
    ];

    /// The label text.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::Forbidden => "forbidden",
            Outcome::BadRequest => "bad_request",
            Outcome::Overloaded => "overloaded",
        }
    }
}

const _: () = assert!(Outcome::ALL.len() == Outcome::Overloaded as usize + 1);

/// The response header a rejection adds besides the body.
enum Extra {
    None,
    /// `WWW-Authenticate` (RFC 6750 §3).
    Challenge,
    RetryAfter,
    Allow,
    WebSocketVersion,
}

/// One row of the table.
struct Row {
    status: StatusCode,
    outcome: Outcome,
    close: Option<CloseCode>,
    extra: Extra,
}

const fn row(status: StatusCode, outcome: Outcome, close: Option<CloseCode>, extra: Extra) -> Row {
    Row {
        status,
        outcome,
        close,
        extra,
    }
}

impl Rejection {
    /// The table: status, outcome, close code (close mode) and extra header of each variant.
    fn row(&self) -> Row {
        use Outcome as O;
        use StatusCode as S;
        let unauthenticated = Some(close::UNAUTHENTICATED);
        match self {
            Rejection::NotFound => row(S::NOT_FOUND, O::BadRequest, None, Extra::None),
            Rejection::MethodNotAllowed => row(S::METHOD_NOT_ALLOWED, O::BadRequest, None, Extra::Allow),
            Rejection::BadRequest(_) => row(S::BAD_REQUEST, O::BadRequest, None, Extra::None),
            Rejection::UnsupportedVersion => row(S::BAD_REQUEST, O::BadRequest, None, Extra::WebSocketVersion),
            Rejection::HeadTooLarge => row(S::REQUEST_HEADER_FIELDS_TOO_LARGE, O::BadRequest, None, Extra::None),
            Rejection::MissingCredential(_)
            | Rejection::EmptyCredential(_)
            | Rejection::InvalidToken(_)
            | Rejection::InvalidCredential(_)
            | Rejection::Revoked(_) => row(S::UNAUTHORIZED, O::Unauthenticated, unauthenticated, Extra::Challenge),
            Rejection::Forbidden(_) => row(S::FORBIDDEN, O::Forbidden, Some(close::FORBIDDEN), Extra::None),
            Rejection::OriginNotAllowed(_) => row(S::FORBIDDEN, O::Forbidden, None, Extra::None),
            Rejection::TooMany(_) => row(
                S::TOO_MANY_REQUESTS,
                O::Overloaded,
                Some(close::TOO_MANY),
                Extra::RetryAfter,
            ),
            Rejection::Overloaded => row(S::SERVICE_UNAVAILABLE, O::Overloaded, None, Extra::RetryAfter),
            Rejection::Unavailable(_) => row(S::SERVICE_UNAVAILABLE, O::Overloaded, None, Extra::RetryAfter),
        }
    }

    /// The HTTP status this rejection is answered with.
    pub fn status(&self) -> StatusCode {
        self.row().status
    }

    /// What the handshake came to, for `wsgate_handshakes_total{result}`.
    pub fn outcome(&self) -> Outcome {
        self.row().outcome
    }

    /// In `reject-with = close` mode, the close code that replaces the HTTP status, for the
    /// authentication and authorization failures a browser script needs to see (`4401`,
    /// `4403`). `None`: answered with HTTP even in that mode.
    pub fn close_code(&self) -> Option<CloseCode> {
        self.row().close
    }

    /// The response headers this rejection needs besides the body.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self.row().extra {
            Extra::None => Vec::new(),
            Extra::Challenge => vec![("WWW-Authenticate", self.challenge())],
            Extra::RetryAfter => vec![("Retry-After", "1".to_owned())],
            Extra::Allow => vec![("Allow", "GET".to_owned())],
            Extra::WebSocketVersion => vec![("Sec-WebSocket-Version", "13".to_owned())],
        }
    }

    /// The `WWW-Authenticate` challenge of a `401`, `None` for other statuses.
    pub fn www_authenticate(&self) -> Option<String> {
        matches!(self.row().extra, Extra::Challenge).then(|| self.challenge())
    }

    /// The challenge (RFC 6750 §3): bare when no credential was sent, `invalid_token` with a
    /// description otherwise.
    fn challenge(&self) -> String {
        if matches!(self, Rejection::MissingCredential(_)) {
            return r#"Bearer realm="wsgate""#.to_owned();
        }
        format!(
            r#"Bearer realm="wsgate", error="invalid_token", error_description="{}""#,
            self.to_string().replace(['"', '\\'], "'")
        )
    }

    /// The metrics label.
    pub fn label(&self) -> Reason {
        match self {
            Rejection::NotFound => Reason::NotFound,
            Rejection::MethodNotAllowed => Reason::MethodNotAllowed,
            Rejection::BadRequest(_) | Rejection::UnsupportedVersion => Reason::BadRequest,
            Rejection::HeadTooLarge => Reason::HeadTooLarge,
            Rejection::MissingCredential(_) => Reason::MissingCredential,
            Rejection::EmptyCredential(_) => Reason::EmptyCredential,
            Rejection::InvalidToken(e) => match e {
                JwtError::TooLong | JwtError::Malformed(_) => Reason::MalformedToken,
                JwtError::UnsupportedAlgorithm | JwtError::UnsupportedHeader(_) => Reason::UnsupportedToken,
                JwtError::UnknownKey => Reason::UnknownKey,
                JwtError::BadSignature => Reason::BadSignature,
                JwtError::Expired => Reason::Expired,
                JwtError::NotYetValid => Reason::NotYetValid,
                JwtError::WrongIssuer | JwtError::WrongAudience => Reason::WrongIssuerOrAudience,
                JwtError::MissingClaim(_) | JwtError::InvalidClaim(_) => Reason::InvalidClaims,
            },
            Rejection::InvalidCredential(_) => Reason::InvalidCredential,
            Rejection::Revoked(_) => Reason::Revoked,
            Rejection::Forbidden(_) | Rejection::OriginNotAllowed(_) => Reason::Forbidden,
            Rejection::TooMany(_) => Reason::TooMany,
            Rejection::Overloaded => Reason::Overloaded,
            Rejection::Unavailable(_) => Reason::Unavailable,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NotFound => write!(f, "not found"),
            Rejection::MethodNotAllowed => write!(f, "method not allowed"),
            Rejection::BadRequest(why) => write!(f, "bad request: {why}"),
            Rejection::UnsupportedVersion => write!(f, "bad request: Sec-WebSocket-Version must be 13"),
            Rejection::HeadTooLarge => write!(f, "request header fields too large"),
            Rejection::MissingCredential(None) => write!(f, "no credential"),
            Rejection::MissingCredential(Some(hint)) => write!(f, "no credential: {hint}"),
            Rejection::EmptyCredential(carrier) => write!(
                f,
                "empty credential in {carrier}: an unset token variable is the usual cause"
            ),
            Rejection::InvalidToken(e) => write!(f, "{e}"),
            Rejection::InvalidCredential(why) => write!(f, "{why}"),
            Rejection::Revoked(why) => write!(f, "{why}"),
            Rejection::Forbidden(why) | Rejection::OriginNotAllowed(why) => write!(f, "forbidden: {why}"),
            Rejection::TooMany(why) => write!(f, "{why}, retry later"),
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
        match e {
            CredentialError::Empty(carrier) => Rejection::EmptyCredential(carrier),
            other => Rejection::BadRequest(other.to_string().into()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_has_its_own_counter_slot() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "Reason::ALL is out of order at {reason:?}");
        }
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, i, "Outcome::ALL is out of order at {outcome:?}");
        }
        let mut names: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        names.dedup();
        assert_eq!(names.len(), Reason::ALL.len());
    }
}
