//! The JSON text frames of PROTOCOL.md §5, as types: what a client sends and everything the
//! server sends. Each outgoing message is serialized exactly once, into a [`Message`] whose
//! payload every recipient shares (cloning it is a reference-count bump).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

/// A chat message from a client: `{"message":"…"}`. Other members are ignored, `username`
/// included: the username always comes from the credential.
#[derive(Deserialize)]
pub(crate) struct Incoming<'a> {
    #[serde(borrow)]
    pub message: Cow<'a, str>,
}

/// `{"type":"welcome",…}`, to a member alone, once, right after the upgrade.
#[derive(Serialize)]
pub(crate) struct Welcome<'a> {
    pub r#type: &'static str,
    pub room: &'a str,
    pub username: &'a str,
    pub message: String,
}

impl<'a> Welcome<'a> {
    pub fn new(room: &'a str, username: &'a str) -> Welcome<'a> {
        Welcome {
            r#type: "welcome",
            room,
            username,
            message: format!("Welcome, {username}!"),
        }
    }
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
