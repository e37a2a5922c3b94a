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
    /// The room's history (PROTOCOL.md §10).
    pub epoch: &'a str,
    /// The last `seq` in the room.
    pub seq: u64,
    /// Whether `since` was resumed; absent when the client gave none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
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

/// A message's `seq` (PROTOCOL.md §10): its place in the room's history, from 1. A frame
/// delivered without one (a `lagged`, or a message that reached this node's members only
/// while Redis was away) has `None`.
pub(crate) type Seq = std::num::NonZeroU64;

/// Something that happens in a room and goes to its members with a `seq`: the room events
/// of PROTOCOL.md §5. Built once, where it happens; the room's sequencer gives it its `seq`
/// (see `room::sequencer`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event<'a> {
    /// `{"type":"message",…}`, to every member, the sender included.
    Chat {
        room: &'a str,
        username: &'a str,
        message: &'a str,
    },
    /// `{"type":"join",…}`, to the other members.
    Join { room: &'a str, username: &'a str },
    /// `{"type":"leave",…}`, to the other members.
    Leave { room: &'a str, username: &'a str },
    /// `{"type":"notice",…}`: text from the server (or its operator).
    Notice { room: &'a str, message: &'a str },
}

impl Event<'_> {
    /// The event as JSON, with `seq` last, or without it until it is known: with Redis, the
    /// node sends the JSON without it and Redis writes `,"seq":N` before the closing brace
    /// (see `cluster::history`).
    pub(crate) fn json(&self, seq: Option<Seq>) -> String {
        match *self {
            Event::Chat {
                room,
                username,
                message,
            } => json(&Chat {
                r#type: "message",
                room,
                username,
                message,
                seq,
            }),
            Event::Join { room, username } | Event::Leave { room, username } => json(&Presence {
                r#type: if matches!(self, Event::Join { .. }) {
                    "join"
                } else {
                    "leave"
                },
                room,
                username,
                seq,
            }),
            Event::Notice { room, message } => json(&Notice {
                r#type: "notice",
                room,
                message,
                seq,
            }),
        }
    }
}

#[derive(Serialize)]
struct Chat<'a> {
    r#type: &'static str,
    room: &'a str,
    username: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<Seq>,
}

#[derive(Serialize)]
struct Presence<'a> {
    r#type: &'static str,
    room: &'a str,
    username: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<Seq>,
}

#[derive(Serialize)]
struct Notice<'a> {
    r#type: &'static str,
    room: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<Seq>,
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

/// A `lagged` notice.
pub(crate) fn lagged(missed: Option<u64>) -> Message {
    Message::text(lagged_json(missed))
}

/// A `lagged` notice, as JSON (for a room's ring).
pub(crate) fn lagged_json(missed: Option<u64>) -> String {
    json(&Lagged {
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
    Message::text(json(value))
}

fn json<T: Serialize>(value: &T) -> String {
    let mut json = serde_json::to_string(value).expect("our message structs hold only strings and numbers");
    // The writer grows by doubling: a frame kept in history would otherwise hold up to twice
    // its size (and make `Bytes` allocate its shared header at once).
    json.shrink_to_fit();
    json
}
