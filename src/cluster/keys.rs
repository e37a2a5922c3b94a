//! Every Redis key and channel a node uses, in one place (PROTOCOL.md §12 lists them).
//!
//! All start with `wsgate:`, so an ACL user for wsgate needs `~wsgate:*` and `&wsgate:*`.

use crate::revocation::Revoke;

/// The channel revocations and notices travel on between nodes.
pub(crate) const CONTROL: &str = "wsgate:control";

/// The prefix of each room's channel.
pub(crate) const ROOM_CHANNEL_PREFIX: &str = "wsgate:room:";

/// The prefix of the keys revocations are stored under.
pub(crate) const REVOKED_PREFIX: &str = "wsgate:revoked:";

/// The channel `room`'s messages are published on.
pub(crate) fn room_channel(room: &str) -> String {
    format!("{ROOM_CHANNEL_PREFIX}{room}")
}

/// `room`'s history counter: a hash `{epoch, seq, bytes}`.
pub(crate) fn seq(room: &str) -> String {
    format!("wsgate:seq:{room}")
}

/// `room`'s history: a list of its last messages.
pub(crate) fn history(room: &str) -> String {
    format!("wsgate:history:{room}")
}

/// The key a revocation is stored under: one per thing revoked, so revoking it again only
/// renews the TTL.
pub(crate) fn revoked(revoke: &Revoke) -> String {
    match revoke {
        Revoke::Jti { jti, .. } => format!("{REVOKED_PREFIX}jti:{jti}"),
        Revoke::User { user } => format!("{REVOKED_PREFIX}user:{user}"),
        Revoke::Session { session } => format!("{REVOKED_PREFIX}session:{session}"),
    }
}

/// A node's marker: present while the Redis still holds what this node stored. Gone (Redis
/// restarted empty, flushed, or evicted it), the node stores its revocations again.
pub(crate) fn marker(node_id: &str) -> String {
    format!("wsgate:node:{node_id}")
}
