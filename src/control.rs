//! The control channel between nodes (PROTOCOL.md §9, feature `redis`): revocations and
//! notices travel as JSON on the Redis channel `wsgate:control`, and revocations are also
//! stored in Redis with a TTL so a node that starts or reconnects later enforces them.
//!
//! The JSON is the admin API's bodies wrapped in one key, so an application that already
//! talks to Redis (a Django or FastAPI backend at logout) can publish it itself:
//!
//! ```text
//! PUBLISH wsgate:control '{"revoke":{"user":"alice"}}'
//! PUBLISH wsgate:control '{"revoke":{"session":"3f1c9a7e5b2d4c6f"}}'
//! PUBLISH wsgate:control '{"publish":{"room":"lobby","message":"back in 5 minutes"}}'
//! ```
//!
//! A notice published this way reaches the members connected now, on every node, without a
//! `seq` and outside history (every node gets it, so none can number it once); the admin
//! API's publish goes through the room's history instead (PROTOCOL.md §10).
//!
//! A message a node sent itself carries `"origin":"<node id>"` and is skipped when it comes
//! back; so are `"at"` (when a user was revoked; default now) and anything unknown, which is
//! logged and ignored.

use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::jwt::unix_now;
use crate::revocation::{Revocations, Revoke};
use crate::room::{self, Rooms};

/// The Redis channel.
pub(crate) const CHANNEL: &str = "wsgate:control";

/// The prefix of the keys revocations are stored under.
pub(crate) const STORED_PREFIX: &str = "wsgate:revoked:";

/// One control message.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Control {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke: Option<Revoke>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Notice>,
    /// When the revocation was made (Unix seconds); absent: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<i64>,
    /// The node that sent it, which skips it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// `{"room":…,"message":…}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Notice {
    pub room: String,
    pub message: String,
}

impl Control {
    /// A revocation made now by `origin`.
    pub fn revoke(revoke: Revoke, origin: &str) -> Control {
        Control {
            revoke: Some(revoke),
            publish: None,
            at: Some(unix_now()),
            origin: Some(origin.to_owned()),
        }
    }

    /// The JSON on the wire.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("control messages hold only strings and numbers")
    }

    /// The key a revocation is stored under: one per thing revoked, so revoking it again
    /// only renews the TTL.
    pub fn stored_key(revoke: &Revoke) -> String {
        match revoke {
            Revoke::Jti { jti, .. } => format!("{STORED_PREFIX}jti:{jti}"),
            Revoke::User { user } => format!("{STORED_PREFIX}user:{user}"),
            Revoke::Session { session } => format!("{STORED_PREFIX}session:{session}"),
        }
    }
}

/// Carries out a control message received from Redis. Returns the revocation to store when
/// an application published it (a node stores its own when it makes them).
pub(crate) fn apply(payload: &[u8], node_id: &str, rooms: &Rooms, revocations: &Revocations) -> Option<Control> {
    let control: Control = match serde_json::from_slice(payload) {
        Ok(control) => control,
        Err(e) => {
            debug!(error = %e, "ignored a control message that is not one");
            return None;
        }
    };
    if control.origin.as_deref() == Some(node_id) {
        return None; // our own, already carried out here
    }
    if let Some(notice) = &control.publish
        && room::check_name(&notice.room).is_ok()
    {
        // Every node gets this, so none may put it into the room's history (it would be there
        // once per node): each delivers it to its own members, without a seq.
        let json = crate::messages::notice(&notice.room, &notice.message, None);
        rooms.deliver_local(&notice.room, json.into());
    }
    let revoke = control.revoke.as_ref()?;
    revocations.revoke_at(revoke, control.at.unwrap_or_else(unix_now));
    control.origin.is_none().then_some(control)
}

/// Loads a stored revocation (the value of a `wsgate:revoked:` key).
pub(crate) fn load(value: &[u8], revocations: &Revocations) {
    if let Ok(Control {
        revoke: Some(revoke),
        at,
        ..
    }) = serde_json::from_slice::<Control>(value)
    {
        revocations.revoke_at(&revoke, at.unwrap_or_else(unix_now));
    }
}
