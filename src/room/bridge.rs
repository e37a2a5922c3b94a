//! The link from this node's rooms to the same rooms on other nodes (implemented by
//! `cluster`, feature `redis`), and what comes back over it: frames Redis numbered, frames for
//! this node only, the state of the subscription, a change of epoch.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio_tungstenite::tungstenite::Message;

use super::{Room, RoomState, Rooms, Since};
use crate::messages;

/// A link from this node's rooms to the same rooms on other nodes (see `cluster`). The registry
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

impl Rooms {
    /// Tells the members that the room's seqs start over, and may have missed frames: a
    /// `lagged` without a seq, which also ends any overlap a member was skipping (its old
    /// seqs would otherwise hide the new ones).
    pub(super) fn epoch_changed(&self, room: &Room, state: &mut RoomState) {
        self.push_as(room, state, 0, messages::lagged_json(None).into());
    }
}

impl RoomState {
    /// Takes in what Redis says of the room's history (with Redis, the welcome falls back to
    /// it while Redis is away). Returns whether the epoch changed under this room's members:
    /// Redis lost the room's keys (expired, evicted, restarted), and its seqs start over.
    pub(super) fn learn(&mut self, epoch: &str, seq: u64) -> bool {
        if *self.epoch == *epoch {
            self.last_seq = self.last_seq.max(seq);
            return false;
        }
        self.epoch = epoch.into();
        self.last_seq = seq;
        std::mem::replace(&mut self.heard, true)
    }
}
