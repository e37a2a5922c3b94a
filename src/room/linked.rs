//! What the Redis link (feature `redis`, `cluster::link`) feeds into this node's rooms and
//! reads of them: frames Redis numbered, frames for this node only, the state of the
//! subscription, and a handle for its tasks that does not keep the rooms alive.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{Inner, Rooms};
use crate::messages::Seq;

impl Rooms {
    /// A handle that does not keep the rooms alive (for background tasks).
    pub(crate) fn downgrade(&self) -> WeakRooms {
        WeakRooms(Arc::downgrade(&self.inner))
    }

    /// The names of the rooms with at least one member here.
    pub(crate) fn names(&self) -> Vec<String> {
        let registry = self.lock();
        registry
            .rooms
            .iter()
            .filter(|(_, room)| room.lock().members > 0)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Delivers `message` to the local members of `room` without a `seq` (it is not passed
    /// on to other nodes, and not part of history).
    pub(crate) fn deliver_local(&self, room: &str, message: Utf8Bytes) {
        if let Some(entry) = self.lock().rooms.get(room).cloned() {
            let mut state = entry.lock();
            self.deliver(&entry, &mut state, None, message, None);
        }
    }

    /// Delivers a message Redis gave `seq` in history `epoch` to the local members of `room`.
    pub(crate) fn deliver_sequenced(&self, room: &str, epoch: &str, seq: Seq, message: Utf8Bytes) {
        if let Some(entry) = self.lock().rooms.get(room).cloned() {
            let mut state = entry.lock();
            if state.learn(epoch, seq.get()) {
                self.epoch_changed(&entry, &mut state);
            }
            self.deliver(&entry, &mut state, Some(seq), message, None);
        }
    }

    /// Marks whether this node is subscribed to `room` on Redis (`None`: every room).
    pub(crate) fn set_linked(&self, room: Option<&str>, linked: bool) {
        let registry = self.lock();
        match room {
            Some(name) => {
                if let Some(room) = registry.rooms.get(name) {
                    room.linked.store(linked, Relaxed);
                }
            }
            None => registry
                .rooms
                .values()
                .for_each(|room| room.linked.store(linked, Relaxed)),
        }
        drop(registry);
        if linked {
            self.inner.links.send_modify(|n| *n += 1);
        }
    }
}

/// See [`Rooms::downgrade`].
#[derive(Clone)]
pub(crate) struct WeakRooms(std::sync::Weak<Inner>);

impl WeakRooms {
    /// The rooms, if the server still holds them.
    pub(crate) fn upgrade(&self) -> Option<Rooms> {
        self.0.upgrade().map(|inner| Rooms { inner })
    }
}
