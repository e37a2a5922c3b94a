//! The link from this node's rooms to the same rooms on other nodes (implemented by
//! `relay`, feature `redis`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio_tungstenite::tungstenite::Message;

use super::Since;

/// A link from this node's rooms to the same rooms on other nodes (see `relay`). The registry
/// calls it under its lock, so implementations only queue work; they never block.
pub(crate) trait Bridge: Send + Sync {
    /// The first local member joined `room`.
    fn opened(&self, room: &str);
    /// The last local member left `room`.
    fn closed(&self, room: &str);
    /// A message for `room` without its `seq`: Redis gives it one, and every node, this one
    /// included, delivers it from there.
    fn publish(&self, room: &str, json: String);
    /// Whether the link to the other nodes is up now.
    fn up(&self) -> bool;
    /// Publishes `presence` (if any) and reads the room's position, with what history holds
    /// after `since`; `None` if Redis could not be asked.
    fn sync<'a>(
        &'a self,
        room: &'a str,
        presence: Option<String>,
        since: Option<&'a Since>,
    ) -> BoxFuture<'a, Option<Synced>>;
}

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What [`Bridge::sync`] learned.
pub(crate) struct Synced {
    pub epoch: Arc<str>,
    pub seq: u64,
    /// The messages after `since`, or `None` when history no longer holds them all.
    pub missed: Option<Vec<Message>>,
}
