//! What an embedder can do to a running server from its own code (PROTOCOL.md §9): revoke
//! credentials, end sessions, send a notice to a room, stop. The admin API is a thin HTTP
//! layer over the same calls.
//!
//! ```no_run
//! use wsgate::{Config, Server};
//! use wsgate::jwt::Key;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = Config::default();
//! config.keys = vec![Key::new(b"an example secret of at least 32 bytes!!")?];
//! let server = Server::bind(config).await?;
//! let handle = server.handle();
//! tokio::spawn(server.run(std::future::pending()));
//! // Later, when the application logs "alice" out everywhere:
//! let closed = handle.revoke_user("alice");
//! handle.publish("lobby", "alice has been logged out");
//! handle.shutdown();
//! # let _ = closed; Ok(()) }
//! ```

use std::sync::Arc;

use tokio::sync::Notify;

use crate::cluster::{Cluster, Revoked};
use crate::revocation::Revoke;
use crate::room::Rooms;

/// A cloneable handle to a server: see the module docs. It stays usable after the server
/// stopped (its calls then reach no connection).
#[derive(Debug, Clone)]
pub struct Handle {
    /// Revocations: applied here, and (with Redis) sent to the other nodes.
    pub(crate) cluster: Cluster,
    pub(crate) rooms: Rooms,
    pub(crate) stop: Arc<Notify>,
}

impl Handle {
    /// Revokes as `revoke` says; returns how many connections on this node it closed. With
    /// `--redis` every other node does the same within a moment, and the revocation is stored
    /// for nodes that start later; while Redis is away it waits in the control outbox (see
    /// [`Handle::revoke_confirmed`] to learn how far it got).
    pub fn revoke(&self, revoke: &Revoke) -> usize {
        self.cluster.revoke(revoke).0
    }

    /// [`Handle::revoke`], then waits (at most the Redis timeout) to learn whether Redis
    /// stored it: what the admin API answers.
    pub async fn revoke_confirmed(&self, revoke: &Revoke) -> Revoked {
        let (closed, ticket) = self.cluster.revoke(revoke);
        Revoked {
            closed,
            reach: self.cluster.reach(ticket).await,
        }
    }
    /// Revokes the token with this `jti` until its `exp`; closes its connections (`4401
    /// revoked`) and returns how many.
    pub fn revoke_jti(&self, jti: &str, exp: i64) -> usize {
        self.revoke(&Revoke::Jti {
            jti: jti.to_owned(),
            exp,
        })
    }

    /// Revokes every credential of `user` issued before now (and those without `iat`), for
    /// the revocation TTL; closes their connections and returns how many.
    pub fn revoke_user(&self, user: &str) -> usize {
        self.revoke(&Revoke::User { user: user.to_owned() })
    }

    /// Ends session `id`: its connections close with `4401 session ended` and it is refused
    /// from now on, for the revocation TTL. Returns how many connections closed.
    pub fn end_session(&self, id: &str) -> usize {
        self.revoke(&Revoke::Session { session: id.to_owned() })
    }

    /// Sends `{"type":"notice","room":…,"message":…}` to every member of `room`, on every node.
    /// With Redis it goes through the room's history, with a `seq` like any message.
    pub fn publish(&self, room: &str, message: &str) {
        self.rooms.publish_notice(room, message);
    }

    /// Asks the server to shut down as if its shutdown future had completed.
    pub fn shutdown(&self) {
        self.stop.notify_one();
    }
}
