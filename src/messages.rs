//! The JSON text frames of PROTOCOL.md §5, as types: what a client sends and everything the
//! server sends. Each outgoing message is serialized exactly once, into a [`Message`] whose
//! payload every recipient shares (cloning it is a reference-count bump).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

/// What a client sends: a chat message `{"message":"…"}` (no `type`), or a typed request such
/// as `{"type":"refresh","token":"…"}`. Other members are ignored, `username` included: the
/// username always comes from the credential.
#[derive(Deserialize)]
pub(crate) struct Incoming<'a> {
    #[serde(borrow, default)]
    pub r#type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub message: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub token: Option<Cow<'a, str>>,
}

/// `{"type":"welcome",…}`, to a member alone, once, right after the upgrade.
#[derive(Serialize)]
pub(crate) struct Welcome<'a> {
    pub r#type: &'static str,
    pub room: &'a str,
    pub username: &'a str,
    pub message: String,
    /// The credential's expiry (Unix seconds), or `null`.
    pub exp: Option<i64>,
}

impl<'a> Welcome<'a> {
    pub fn new(room: &'a str, username: &'a str, exp: Option<i64>) -> Welcome<'a> {
        Welcome {
            r#type: "welcome",
            room,
            username,
            message: format!("Welcome, {username}!"),
            exp,
        }
    }
}

/// `{"type":"expiring","exp":E}` or `{"type":"refreshed","exp":E}`, to one member.
#[derive(Serialize)]
struct Expiry {
    r#type: &'static str,
    exp: i64,
}

/// The credential expires at `exp`: send a `refresh` before then.
pub(crate) fn expiring(exp: i64) -> Message {
    text(&Expiry {
        r#type: "expiring",
        exp,
    })
}

/// A `refresh` was accepted: the connection now expires at `exp`.
pub(crate) fn refreshed(exp: i64) -> Message {
    text(&Expiry {
        r#type: "refreshed",
        exp,
    })
}

/// `{"type":"message",…}`, to every member of the room, the sender included.
#[derive(Serialize)]
pub(crate) struct Chat<'a> {
    pub r#type: &'static str,
    pub room: &'a str,
    pub username: &'a str,
    pub message: &'a str,
}

/// `{"type":"join"|"leave",…}`, to the other members.
#[derive(Serialize)]
struct Presence<'a> {
    r#type: &'static str,
    room: &'a str,
    username: &'a str,
}

/// `{"type":"lagged","missed":N}`: N messages this member will not get. `None` (`null`):
/// an unknown number, after the link to other nodes broke.
#[derive(Serialize)]
pub(crate) struct Lagged {
    pub r#type: &'static str,
    pub missed: Option<u64>,
}

/// `{"type":"error","error":"…"}`, to the sender alone; the connection stays open.
#[derive(Serialize)]
struct ErrorReply<'a> {
    r#type: &'static str,
    error: &'a str,
}

/// A chat message for the whole room.
pub(crate) fn chat(room: &str, username: &str, message: &str) -> Message {
    text(&Chat {
        r#type: "message",
        room,
        username,
        message,
    })
}

/// `join` (`joined = true`) or `leave`.
pub(crate) fn presence(joined: bool, room: &str, username: &str) -> Message {
    text(&Presence {
        r#type: if joined { "join" } else { "leave" },
        room,
        username,
    })
}

/// `{"type":"notice","room":R,"message":M}`: text from the server (or its operator).
#[derive(Serialize)]
struct Notice<'a> {
    r#type: &'static str,
    room: &'a str,
    message: &'a str,
}

/// A server notice for the whole room.
pub(crate) fn notice(room: &str, message: &str) -> Message {
    text(&Notice {
        r#type: "notice",
        room,
        message,
    })
}

/// A `lagged` notice.
pub(crate) fn lagged(missed: Option<u64>) -> Message {
    text(&Lagged {
        r#type: "lagged",
        missed,
    })
}

/// An `error` reply.
pub(crate) fn error(error: &str) -> Message {
    text(&ErrorReply { r#type: "error", error })
}

/// Serializes `value` once into a text message whose payload can be shared by every member.
pub(crate) fn text<T: Serialize>(value: &T) -> Message {
    Message::text(serde_json::to_string(value).expect("our message structs hold only strings and numbers"))
}
