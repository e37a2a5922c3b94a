//! Rooms without members, kept for their history (PROTOCOL.md §10): how they are counted,
//! revived, expired, and freed oldest first past their bounds.

use std::sync::Arc;

use tokio::time::Instant;

use super::{Registry, Room, RoomState, Rooms};

/// The most rooms kept for their history after their last member left. Each costs a few
/// hundred bytes besides its messages, which the byte budget already bounds.
pub const MAX_KEPT_ROOMS: usize = 10_000;

impl Registry {
    /// Starts keeping an empty room for its history.
    pub(super) fn keep(&mut self, name: &str, state: &mut RoomState) {
        state.kept = true;
        self.kept.push_back(name.to_owned());
        self.kept_bytes += state.ring.bytes();
    }

    /// A kept room has a member again.
    pub(super) fn revive(&mut self, name: &str, state: &mut RoomState) {
        if state.kept {
            state.kept = false;
            self.kept_bytes -= state.ring.bytes();
            self.kept.retain(|kept| kept != name);
        }
    }
}

impl Rooms {
    /// Frees what rooms hold past the history TTL, and the kept rooms left empty by it. The
    /// server calls it every second.
    ///
    /// Rooms in use give up such frames too: a quiet room would otherwise hold its last
    /// messages, their memory and their senders' shares (`share.rs`) for as long as anyone
    /// stays in it. A member that had not taken them yet (behind by the whole TTL) is told
    /// it lagged, as when a budget gives them up.
    pub(crate) fn sweep(&self, now: Instant) {
        let ttl = self.inner.settings.history_ttl;
        let expired = |state: &RoomState| {
            state
                .ring
                .front()
                .is_some_and(|e| now.saturating_duration_since(e.at) >= ttl)
        };
        let mut registry = self.lock();
        for entry in registry.rooms.values() {
            let mut state = entry.lock();
            while !state.kept && expired(&state) {
                self.pop_front(&mut state);
            }
        }
        let kept = std::mem::take(&mut registry.kept);
        for name in kept {
            let Some(entry) = registry.rooms.get(&name).cloned() else {
                continue;
            };
            let mut state = entry.lock();
            let before = state.ring.bytes();
            while expired(&state) {
                self.pop_front(&mut state);
            }
            registry.kept_bytes -= before - state.ring.bytes();
            if state.ring.len() == 0 {
                self.free(&mut registry, &name, &mut state);
            } else {
                registry.kept.push_back(name);
            }
        }
    }

    /// Frees the oldest kept rooms while there are too many or they hold too many bytes
    /// (see [`Registry::kept_bytes`]). `current` is a kept room whose state the caller holds
    /// locked.
    pub(super) fn free_kept_over_limits(&self, registry: &mut Registry, current: (&Arc<Room>, &mut RoomState)) {
        let (current_room, current_state) = current;
        while registry.kept.len() > MAX_KEPT_ROOMS || registry.kept_bytes > self.inner.settings.max_queued_bytes / 2 {
            let Some(oldest) = registry.kept.pop_front() else { break };
            let Some(entry) = registry.rooms.get(&oldest).cloned() else {
                continue;
            };
            if Arc::ptr_eq(&entry, current_room) {
                self.free(registry, &oldest, current_state);
            } else {
                self.free(registry, &oldest, &mut entry.lock());
            }
        }
    }
}
