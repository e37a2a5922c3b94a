//! Rooms: a registry that creates a room on its first join and frees it on its last leave,
//! and the fan-out of one message to every member.
//!
//! Each room is a ring of ready-to-send WebSocket messages with a sequence number each. A
//! message is serialized once; every member reads a clone of the same `Message`, which is a
//! reference-count bump, not a copy. Each member keeps its own cursor into the ring and is
//! woken through a `watch` channel that carries the newest sequence number.
//!
//! A member that cannot keep up never holds the others back: the ring keeps the last
//! `room_buffer` messages, and a member that falls further behind learns exactly how many it
//! missed, which the connection passes on as `{"type":"lagged","missed":n}`. Nothing is
//! dropped silently.
//!
//! **Memory is bounded in bytes, not only in messages.** A ring of 256 messages of 64 KiB
//! would hold 16 MiB for one member that never reads. So a ring also gives up its oldest
//! messages when it holds more than its share of bytes (`room_queued_bytes`) or when every
//! room together holds more than `max_queued_bytes`: the slowest members then lag, and memory
//! stays within the budget (plus the newest message of each room, which is always kept).
//!
//! ```
//! use wsgate::room::{RoomSettings, Rooms};
//!
//! let rooms = Rooms::new(RoomSettings::default());
//! let mut alice = rooms.join("lobby", "alice");
//! let bob = rooms.join("lobby", "bob");
//! assert_eq!(rooms.active(), 1);
//! // Alice hears Bob arrive.
//! let mut got = Vec::new();
//! assert_eq!(alice.try_take(&mut got, 8, 64 * 1024), 0);
//! assert!(got[0].to_text().unwrap().contains(r#""type":"join""#));
//! drop((alice, bob));
//! assert_eq!(rooms.active(), 0);
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::bucket::TokenBucket;
use crate::messages;
use crate::rejection::Rejection;

/// Presence notices (`join`/`leave`) a room sends per second on average, and in a burst.
/// Churn beyond that is not announced: presence is a courtesy, chat messages are not.
const PRESENCE_RATE: u32 = 10;
const PRESENCE_BURST: u32 = 50;

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

/// How rooms buffer and announce; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomSettings {
    /// Messages a room keeps for its slowest member. Default 256.
    pub buffer: usize,
    /// Bytes one room's ring may hold. Default 8 MiB.
    pub room_queued_bytes: usize,
    /// Bytes every room's ring together may hold. Default 64 MiB.
    pub max_queued_bytes: usize,
    /// Above this many members, `join` and `leave` are no longer announced. Default 100.
    pub presence_limit: usize,
}

impl Default for RoomSettings {
    fn default() -> RoomSettings {
        RoomSettings {
            buffer: 256,
            room_queued_bytes: 8 << 20,
            max_queued_bytes: 64 << 20,
            presence_limit: 100,
        }
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
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    settings: RoomSettings,
    /// Bytes held by every ring together.
    queued: AtomicUsize,
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

struct Room {
    state: Mutex<RoomState>,
    /// The sequence number the next message will get; members wait on it.
    newest: watch::Sender<u64>,
}

struct RoomState {
    /// The last messages, oldest first, with consecutive sequence numbers.
    ring: VecDeque<(u64, Message)>,
    /// Payload bytes in `ring`.
    bytes: usize,
    next_seq: u64,
    /// Counted by us, under the registry lock, so join and leave alone decide when a room is
    /// created and removed.
    members: usize,
    presence: TokenBucket,
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
pub struct Membership {
    room: Arc<Room>,
    /// The sequence number of the next message this member reads.
    cursor: u64,
    newest: watch::Receiver<u64>,
    rooms: Rooms,
    name: String,
    username: String,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("room", &self.name)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

impl Rooms {
    /// An empty registry.
    pub fn new(settings: RoomSettings) -> Rooms {
        Rooms::with_bridge(settings, None)
    }

    pub(crate) fn with_bridge(settings: RoomSettings, bridge: Option<Arc<dyn Bridge>>) -> Rooms {
        let inner = Inner {
            rooms: Mutex::new(HashMap::new()),
            settings: RoomSettings {
                buffer: settings.buffer.max(1),
                ..settings
            },
            queued: AtomicUsize::new(0),
            bridge,
        };
        Rooms { inner: Arc::new(inner) }
    }

    /// Joins `room` as `username`; the other members get a `join` event (unless the room is
    /// past the presence limit or churning), the joiner does not.
    pub fn join(&self, room: &str, username: &str) -> Membership {
        let mut rooms = self.lock();
        let entry = rooms
            .entry(room.to_owned())
            .or_insert_with(|| {
                if let Some(bridge) = &self.inner.bridge {
                    bridge.opened(room);
                }
                Arc::new(Room::new())
            })
            .clone();
        let mut state = entry.lock();
        state.members += 1;
        if self.announce(&mut state) {
            let join = messages::presence(true, room, username);
            if let Some(bridge) = &self.inner.bridge {
                bridge.publish(room, &join);
            }
            // Pushed before the cursor is taken, so the joiner does not get its own join.
            self.push(&entry, &mut state, join);
        }
        let cursor = state.next_seq;
        drop(state);
        let newest = entry.newest.subscribe();
        Membership {
            room: entry,
            cursor,
            newest,
            rooms: self.clone(),
            name: room.to_owned(),
            username: username.to_owned(),
        }
    }

    /// Rooms with at least one member.
    pub fn active(&self) -> usize {
        self.lock().len()
    }

    /// Bytes of messages held for members, in every room.
    pub fn queued_bytes(&self) -> usize {
        self.inner.queued.load(Relaxed)
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    /// The names of the rooms with at least one member here.
    pub(crate) fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Sends a server notice to `room`'s members on this node (other nodes hear of it on the
    /// control channel). A room nobody is in gets nothing (and is not created).
    pub fn publish_notice(&self, room: &str, message: &str) {
        self.deliver_local(room, messages::notice(room, message));
    }

    /// Delivers `message` to the local members of `room`, if it has any; it is not passed on
    /// to the bridge (it came from there).
    pub(crate) fn deliver_local(&self, room: &str, message: Message) {
        let Some(entry) = self.lock().get(room).cloned() else {
            return;
        };
        let mut state = entry.lock();
        self.push(&entry, &mut state, message);
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    /// A handle that does not keep the rooms alive (for the relay's tasks, which the rooms'
    /// bridge in turn keeps alive).
    pub(crate) fn downgrade(&self) -> WeakRooms {
        WeakRooms(Arc::downgrade(&self.inner))
    }

    /// Whether a presence notice goes out now: small rooms only, and not faster than the
    /// room's presence rate.
    fn announce(&self, state: &mut RoomState) -> bool {
        state.members <= self.inner.settings.presence_limit && state.presence.take(Instant::now())
    }

    /// Appends `message` to the room's ring, gives up the oldest messages while the ring is
    /// over any of its limits, and wakes the members.
    fn push(&self, room: &Room, state: &mut RoomState, message: Message) {
        let settings = &self.inner.settings;
        let size = message.len();
        state.ring.push_back((state.next_seq, message));
        state.next_seq += 1;
        state.bytes += size;
        let mut queued = self.inner.queued.fetch_add(size, Relaxed) + size;
        // The newest message is always kept, so a member never misses what was just sent
        // unless it is already behind.
        while state.ring.len() > 1
            && (state.ring.len() > settings.buffer
                || state.bytes > settings.room_queued_bytes
                || queued > settings.max_queued_bytes)
        {
            let (_, oldest) = state.ring.pop_front().expect("the ring holds more than one message");
            state.bytes -= oldest.len();
            queued = self.inner.queued.fetch_sub(oldest.len(), Relaxed) - oldest.len();
        }
        room.newest.send_replace(state.next_seq);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Room>>> {
        // Nothing panics while holding this lock; if something ever did, the map is still
        // consistent enough to keep serving.
        self.inner.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Room {
    fn new() -> Room {
        Room {
            state: Mutex::new(RoomState {
                ring: VecDeque::new(),
                bytes: 0,
                next_seq: 1,
                members: 0,
                presence: TokenBucket::new(PRESENCE_RATE, PRESENCE_BURST),
            }),
            newest: watch::Sender::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RoomState> {
        // As for the registry: every statement leaves the state consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Membership {
    /// The room's name.
    pub fn room(&self) -> &str {
        &self.name
    }

    /// Sends `message` to every member, this one included. The same bytes go to all.
    pub fn broadcast(&self, message: Message) {
        if let Some(bridge) = &self.rooms.inner.bridge {
            bridge.publish(&self.name, &message);
        }
        let mut state = self.room.lock();
        self.rooms.push(&self.room, &mut state, message);
    }

    /// Waits until there is something to read, then moves messages into `out`: at least one,
    /// and then more while fewer than `max` messages and `max_bytes` bytes are taken. Returns
    /// how many messages this member missed just before them (0 when none): they had already
    /// left the ring.
    ///
    /// The byte bound matters: what a member has taken stays alive while its socket is slow,
    /// whatever the ring's budget, so a batch must stay small.
    ///
    /// Cancel-safe: nothing is taken unless it is returned.
    pub async fn recv(&mut self, out: &mut Vec<Message>, max: usize, max_bytes: usize) -> u64 {
        loop {
            // Marked seen *before* looking, so a message pushed after the look wakes us.
            self.newest.borrow_and_update();
            let missed = self.try_take(out, max, max_bytes);
            if missed > 0 || !out.is_empty() {
                return missed;
            }
            if self.newest.changed().await.is_err() {
                // Cannot happen while we hold the room, which holds the sender.
                std::future::pending::<()>().await;
            }
        }
    }

    /// [`Membership::recv`] without waiting: moves what is there now into `out`, within the
    /// same bounds, and returns how many messages were missed before them.
    pub fn try_take(&mut self, out: &mut Vec<Message>, max: usize, max_bytes: usize) -> u64 {
        let state = self.room.lock();
        let oldest = state.ring.front().map_or(state.next_seq, |(seq, _)| *seq);
        let missed = oldest.saturating_sub(self.cursor);
        self.cursor = self.cursor.max(oldest);
        let start = usize::try_from(self.cursor - oldest).expect("the ring fits in memory");
        let mut bytes = 0;
        for (_, message) in state.ring.iter().skip(start) {
            if out.len() >= max.max(1) || (bytes >= max_bytes && !out.is_empty()) {
                break;
            }
            bytes += message.len();
            out.push(message.clone());
            self.cursor += 1;
        }
        missed
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut rooms = self.rooms.lock();
        let mut state = self.room.lock();
        state.members -= 1;
        let announce = self.rooms.announce(&mut state);
        if announce {
            let leave = messages::presence(false, &self.name, &self.username);
            if let Some(bridge) = &self.rooms.inner.bridge {
                // Members on other nodes hear of the leave even when this node's room closes.
                bridge.publish(&self.name, &leave);
            }
            if state.members > 0 {
                self.rooms.push(&self.room, &mut state, leave);
            }
        }
        if state.members > 0 {
            return;
        }
        // The last member: free the room and its ring's share of the budget.
        self.rooms.inner.queued.fetch_sub(state.bytes, Relaxed);
        state.ring.clear();
        state.bytes = 0;
        drop(state);
        rooms.remove(&self.name);
        if let Some(bridge) = &self.rooms.inner.bridge {
            bridge.closed(&self.name);
        }
    }
}
