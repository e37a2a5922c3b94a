//! Rooms: a registry that creates a room on its first join and frees it on its last leave,
//! and the fan-out of one message to every member.
//!
//! Each room is a `tokio::sync::broadcast` channel of ready-to-send WebSocket messages. A
//! message is serialized once; every member receives a clone of the same `Message`, which is
//! a reference-count bump, not a copy.
//!
//! A member that cannot keep up never holds the others back: the channel keeps the last
//! `room_buffer` messages, and a receiver that falls further behind is told by the channel
//! exactly how many it missed (`RecvError::Lagged(n)`), which the connection passes on to the
//! client as `{"type":"lagged","missed":n}`. Memory per room is bounded by that buffer.
//!
//! ```
//! use wsgate::room::Rooms;
//!
//! let rooms = Rooms::new(16);
//! let mut alice = rooms.join("lobby", "alice");
//! let bob = rooms.join("lobby", "bob");
//! assert_eq!(rooms.active(), 1);
//! // Alice hears Bob arrive.
//! assert!(alice.receiver.try_recv().unwrap().to_text().unwrap().contains(r#""type":"join""#));
//! drop((alice, bob));
//! assert_eq!(rooms.active(), 0);
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

use crate::messages;
use crate::rejection::Rejection;

/// The most characters a room name may have.
pub const MAX_NAME_LEN: usize = 64;

/// The one rule for a room name (PROTOCOL.md §1): 1–64 characters of `[A-Za-z0-9_.-]`. Names
/// are written into paths, Redis channel names and logs, so they stay a plain token.
pub fn check_name(room: &str) -> Result<(), Rejection> {
    let valid = (1..=MAX_NAME_LEN).contains(&room.len())
        && room.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(Rejection::BadRequest(
            "room must be 1-64 characters of [A-Za-z0-9_.-]".into(),
        ))
    }
}

/// The registry of rooms. Cloning gives another handle to the same rooms.
#[derive(Clone)]
pub struct Rooms {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rooms")
            .field("active", &self.active())
            .finish_non_exhaustive()
    }
}

struct Inner {
    rooms: Mutex<HashMap<String, Room>>,
    /// Per-room broadcast capacity: how far a member may fall behind before it lags.
    buffer: usize,
    /// Where room traffic also goes when rooms span several nodes.
    bridge: Option<Arc<dyn Bridge>>,
}

/// A link from this node's rooms to the same rooms on other nodes (see `relay`). The registry
/// calls it under its lock, so implementations only queue work; they never block.
pub(crate) trait Bridge: Send + Sync {
    /// The first local member joined `room`.
    fn opened(&self, room: &str);
    /// The last local member left `room`.
    fn closed(&self, room: &str);
    /// A message sent to `room` on this node, for the other nodes.
    fn publish(&self, room: &str, message: &Message);
}

#[derive(Debug)]
struct Room {
    sender: broadcast::Sender<Message>,
    /// Counted by us rather than `receiver_count()` so that join and leave, which take the
    /// registry lock, decide alone when a room is created and removed.
    members: usize,
}

/// See [`Rooms::downgrade`].
#[derive(Clone)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct WeakRooms(std::sync::Weak<Inner>);

impl WeakRooms {
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn upgrade(&self) -> Option<Rooms> {
        self.0.upgrade().map(|inner| Rooms { inner })
    }
}

/// One member's place in a room. Dropping it leaves the room (telling the others) and frees
/// the room if it was the last member.
#[derive(Debug)]
pub struct Membership {
    /// Everything sent to the room from the moment of joining.
    pub receiver: broadcast::Receiver<Message>,
    sender: broadcast::Sender<Message>,
    rooms: Rooms,
    room: String,
    username: String,
}

impl Rooms {
    /// An empty registry whose rooms buffer `buffer` messages each.
    pub fn new(buffer: usize) -> Rooms {
        Rooms::with_bridge(buffer, None)
    }

    pub(crate) fn with_bridge(buffer: usize, bridge: Option<Arc<dyn Bridge>>) -> Rooms {
        let inner = Inner {
            rooms: Mutex::new(HashMap::new()),
            buffer: buffer.max(1),
            bridge,
        };
        Rooms { inner: Arc::new(inner) }
    }

    /// Joins `room` as `username`; the other members get a `join` event, the joiner does not.
    pub fn join(&self, room: &str, username: &str) -> Membership {
        let mut rooms = self.lock();
        let entry = rooms.entry(room.to_owned()).or_insert_with(|| {
            if let Some(bridge) = &self.inner.bridge {
                bridge.opened(room);
            }
            Room {
                sender: broadcast::channel(self.inner.buffer).0,
                members: 0,
            }
        });
        entry.members += 1;
        let join = messages::presence(true, room, username);
        if let Some(bridge) = &self.inner.bridge {
            bridge.publish(room, &join);
        }
        // Sent before subscribing, so the joiner's own receiver does not get it.
        let _ = entry.sender.send(join);
        Membership {
            receiver: entry.sender.subscribe(),
            sender: entry.sender.clone(),
            rooms: self.clone(),
            room: room.to_owned(),
            username: username.to_owned(),
        }
    }

    /// Rooms with at least one member.
    pub fn active(&self) -> usize {
        self.lock().len()
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    /// The names of the rooms with at least one member here.
    pub(crate) fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    /// Delivers `message` to the local members of `room`, if it has any; it is not passed on
    /// to the bridge (it came from there).
    pub(crate) fn deliver_local(&self, room: &str, message: Message) {
        if let Some(entry) = self.lock().get(room) {
            let _ = entry.sender.send(message);
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    /// A handle that does not keep the rooms alive (for the relay's tasks, which the rooms'
    /// bridge in turn keeps alive).
    pub(crate) fn downgrade(&self) -> WeakRooms {
        WeakRooms(Arc::downgrade(&self.inner))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Room>> {
        // Nothing panics while holding this lock; if something ever did, the map is still
        // consistent enough to keep serving.
        self.inner.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Membership {
    /// The room's name.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// Sends `message` to every member, this one included. The same bytes go to all.
    pub fn broadcast(&self, message: Message) {
        if let Some(bridge) = &self.rooms.inner.bridge {
            bridge.publish(&self.room, &message);
        }
        // Err only means no receiver is left, which cannot happen while `self` holds one.
        let _ = self.sender.send(message);
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut rooms = self.rooms.lock();
        let Some(room) = rooms.get_mut(&self.room) else { return };
        room.members -= 1;
        let leave = messages::presence(false, &self.room, &self.username);
        if let Some(bridge) = &self.rooms.inner.bridge {
            // Members on other nodes hear of the leave even when this node's room closes.
            bridge.publish(&self.room, &leave);
        }
        if room.members > 0 {
            let _ = room.sender.send(leave);
            return;
        }
        rooms.remove(&self.room);
        if let Some(bridge) = &self.rooms.inner.bridge {
            bridge.closed(&self.room);
        }
    }
}
