//! Why a WebSocket connection is closed, and the close code each reason is sent with
//! (PROTOCOL.md §4, §5). One table, so a client author can find every code here.
//!
//! Codes 1000–2999 are RFC 6455 §7.4.1's; 4000–4999 are private to an application. wsgate
//! uses 4xxx codes that end in the HTTP status they stand for (`4401` ≈ `401`), because a
//! browser script sees close codes but never the HTTP status of a failed upgrade.

use std::borrow::Cow;

use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// `4401`: the credential is missing, invalid or has expired; get a new one and reconnect.
pub const UNAUTHENTICATED: CloseCode = CloseCode::Library(4401);

/// `4403`: authenticated, but not allowed here; reconnecting will not help.
pub const FORBIDDEN: CloseCode = CloseCode::Library(4403);

/// `4429`: too many connections or attempts for this identity; retry later.
pub const TOO_MANY: CloseCode = CloseCode::Library(4429);

/// Why the server ends an upgraded connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The server is stopping: `1001`.
    Shutdown,
    /// The token's `exp` (plus leeway) has passed: `4401`.
    Expired,
    /// A refreshed token no longer allows this room: `4403`.
    RoomWithdrawn,
    /// The credential was revoked: `4401`.
    Revoked,
    /// The session behind the credential ended (logout, or revoked): `4401`.
    SessionEnded,
    /// Nothing heard from the client, not even a pong, for the idle timeout: `1001`.
    Idle,
    /// The client took none of our writes for the write timeout: `1008`.
    NotReading,
    /// A binary frame; this protocol is JSON text: `1003`.
    Binary,
    /// A message over the size limit: `1009`.
    TooBig,
    /// A text frame that is not UTF-8: `1007`.
    InvalidUtf8,
    /// A frame that breaks RFC 6455: `1002`.
    ProtocolError,
}

impl Close {
    /// The close code and the short reason sent with it.
    pub fn code_and_reason(self) -> (CloseCode, &'static str) {
        match self {
            Close::Shutdown => (CloseCode::Away, "server shutting down"),
            Close::Expired => (UNAUTHENTICATED, "token expired"),
            Close::RoomWithdrawn => (FORBIDDEN, "room not allowed by the refreshed token"),
            Close::Revoked => (UNAUTHENTICATED, "revoked"),
            Close::SessionEnded => (UNAUTHENTICATED, "session ended"),
            Close::Idle => (CloseCode::Away, "idle timeout"),
            Close::NotReading => (CloseCode::Policy, "not reading"),
            Close::Binary => (CloseCode::Unsupported, "binary messages are not supported"),
            Close::TooBig => (CloseCode::Size, "message too big"),
            Close::InvalidUtf8 => (CloseCode::Invalid, "invalid UTF-8"),
            Close::ProtocolError => (CloseCode::Protocol, "protocol error"),
        }
    }

    /// The frame to send.
    pub fn frame(self) -> CloseFrame {
        let (code, reason) = self.code_and_reason();
        frame(code, reason)
    }
}

/// A close frame with `reason` cut to the 123 bytes a close frame allows (RFC 6455 §5.5), at a
/// character boundary.
pub fn frame(code: CloseCode, reason: impl Into<Cow<'static, str>>) -> CloseFrame {
    let mut reason: String = reason.into().into_owned();
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.truncate(end);
    CloseFrame {
        code,
        reason: reason.into(),
    }
}
