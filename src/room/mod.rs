//! Rooms: a registry that creates a room on its first join, and the fan-out of one message to
//! every member, with the history a reconnecting client resumes from (PROTOCOL.md §10).
//!
//! Each room is a ring (`ring.rs`) of ready-to-send WebSocket messages. A message is
//! serialized once, with its `seq`, under the room's lock; every member reads a clone of the
//! same `Message`, which is a reference-count bump, not a copy. Each member keeps its own
//! cursor into the ring and is woken through a `watch` channel.
//!
//! **History is the ring.** The ring keeps the last `max(buffer, history)` messages, so a
//! member that falls behind reads on from history, and a resuming client is given a cursor
//! `since` its last `seq`. A member that falls further behind than the ring holds learns
//! exactly how many it missed (`{"type":"lagged","missed":n}`); nothing is dropped silently.
//! When the last member leaves, the room is kept (with at most `history` messages) until its
//! newest message is older than `history_ttl`; a new room gets a new `epoch`.
//!
//! **Memory is bounded in bytes, not only in messages.** A ring of 256 messages of 64 KiB
//! would hold 16 MiB for one member that never reads. So a ring also gives up its oldest
//! messages when it holds more than its share of bytes (`room_queued_bytes`) or when every
//! room together holds more than `max_queued_bytes`: the slowest members then lag, and memory
//! stays within the budget (plus the newest message of each room, which is always kept). Rooms
//! kept only for history hold at most half the budget and number at most [`MAX_KEPT_ROOMS`];
//! past either, the oldest are freed, so rooms nobody is in never crowd the rooms in use.
//! And one identity's messages, all its rooms together, hold at most
//! `max_queued_bytes_per_user` (`share.rs`): past it its own messages are refused, so one
//! token cannot fill the budget and cost everyone else their history.
//!
//! **Who numbers the messages** is the room's sequencer (`sequencer.rs`): this node, or with
//! Redis (PROTOCOL.md §8) Redis, which then also keeps history; the ring is then only the
//! local buffer, and a room is freed when its last local member leaves.
//!
//! ```
//! use wsgate::room::{RoomSettings, Rooms};
//!
//! let rooms = Rooms::new(RoomSettings::default());
//! let mut alice = rooms.join("lobby", "alice");
//! let bob = rooms.join("lobby", "bob");
//! assert_eq!(rooms.active(), 1);
//! // Alice hears Bob arrive: the room's second message.
//! let mut got = Vec::new();
//! assert_eq!(alice.try_take(&mut got, 8, 64 * 1024), 0);
//! assert!(got[0].to_text().unwrap().contains(r#""type":"join""#));
//! assert!(got[0].to_text().unwrap().ends_with(r#","seq":2}"#));
//! drop((alice, bob));
//! assert_eq!(rooms.active(), 0);
//! ```

mod kept;
#[cfg(feature = "redis")]
mod linked;
mod membership;
mod position;
mod sequencer;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::bucket::TokenBucket;
use crate::messages::{self, Event, Seq};
use crate::rejection::Rejection;
use crate::ring::Ring;
use crate::share::{Held, Share, Shares};

pub use kept::MAX_KEPT_ROOMS;
#[cfg_attr(not(feature = "redis"), allow(unused_imports))]
#[cfg(feature = "redis")]
pub(crate) use linked::WeakRooms;
pub use membership::Membership;
use position::new_epoch;
pub use position::{Position, Since};
#[cfg(feature = "redis")]
pub(crate) use sequencer::{BoxFuture, Synced};
pub(crate) use sequencer::{Here, Local, Sequencer};

/// Presence notices (`join`/`leave`) a room sends per second on average, and in a burst.
/// Churn beyond that is not announced: presence is a courtesy, chat messages are not.
const PRESENCE_RATE: u32 = 10;
const PRESENCE_BURST: u32 = 50;

/// The most characters a room name may have.
pub const MAX_NAME_LEN: usize = 64;

/// The one rule for a room name (PROTOCOL.md §1): 1–64 characters of `[A-Za-z0-9_.-]`. Names
/// are written into paths, Redis channel names and logs, so they stay a plain token.
pub fn check_name(room: &str) -> Result<(), Rejection> {
    if is_token(room, MAX_NAME_LEN) {
        Ok(())
    } else {
        Err(Rejection::BadRequest(
            "room must be 1-64 characters of [A-Za-z0-9_.-]".into(),
        ))
    }
}

/// A member's message refused because its identity's frames already hold
/// `max_queued_bytes_per_user` in rooms (PROTOCOL.md §5). Nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooMuchQueued;

impl std::fmt::Display for TooMuchQueued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("too much queued for this user")
    }
}

impl std::error::Error for TooMuchQueued {}

fn is_token(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// How rooms buffer, remember and announce; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomSettings {
    /// Messages a room keeps for its slowest member. Default 256.
    pub buffer: usize,
    /// Bytes one room's ring may hold. Default 8 MiB.
    pub room_queued_bytes: usize,
    /// Bytes every room's ring together may hold. Default 64 MiB.
    pub max_queued_bytes: usize,
    /// Bytes one identity's messages may hold in rings, all its rooms together (PROTOCOL.md
    /// §5); past it its messages are refused, and nobody else's are given up for it. Default
    /// 8 MiB, an eighth of `max_queued_bytes`.
    pub max_queued_bytes_per_user: usize,
    /// Above this many members, `join` and `leave` are no longer announced. Default 100.
    pub presence_limit: usize,
    /// Messages a room keeps for resuming clients; 0 turns history off. Default 100.
    pub history: usize,
    /// How long a message stays in history. Default 5 minutes.
    pub history_ttl: Duration,
}

impl Default for RoomSettings {
    fn default() -> RoomSettings {
        RoomSettings {
            buffer: 256,
            room_queued_bytes: 8 << 20,
            max_queued_bytes: 64 << 20,
            max_queued_bytes_per_user: 8 << 20,
            presence_limit: 100,
            history: 100,
            history_ttl: Duration::from_secs(300),
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
    registry: Mutex<Registry>,
    settings: RoomSettings,
    /// Bytes held by every ring together.
    queued: AtomicUsize,
    /// Each identity's part of them.
    shares: Shares,
    /// Who numbers the rooms' events.
    sequencer: Arc<dyn Sequencer>,
    /// Messages a ring keeps for resuming clients: `settings.history` when the rings are
    /// the rooms' history, else none.
    history: usize,
    /// Bumped whenever a room's link to the other nodes comes up (see [`Rooms::set_linked`]).
    links: watch::Sender<u64>,
}

#[derive(Default)]
struct Registry {
    rooms: HashMap<String, Arc<Room>>,
    /// Rooms without members, kept for their history, oldest first.
    kept: VecDeque<String>,
    /// Bytes their rings hold. At most half the byte budget, so rooms nobody is in cannot
    /// take the buffers of the rooms in use (those would trim their own frames first).
    kept_bytes: usize,
}

struct Room {
    state: Mutex<RoomState>,
    /// The index the next message will get; members wait on it.
    newest: watch::Sender<u64>,
    /// With Redis: this node is subscribed to the room, so nothing published from now on
    /// can pass it by.
    linked: AtomicBool,
}

struct RoomState {
    ring: Ring,
    epoch: Arc<str>,
    /// The last `seq` sent in the room (with Redis: the last one this node heard of).
    last_seq: u64,
    /// Counted by us, under the registry lock, so join and leave alone decide when a room is
    /// created and removed.
    members: usize,
    presence: TokenBucket,
    /// In the registry's `kept` list.
    kept: bool,
    /// With Redis: `epoch` is one Redis gave (not this node's placeholder).
    heard: bool,
}

impl Rooms {
    /// An empty registry.
    pub fn new(settings: RoomSettings) -> Rooms {
        Rooms::with_sequencer(settings, Arc::new(Local))
    }

    pub(crate) fn with_sequencer(settings: RoomSettings, sequencer: Arc<dyn Sequencer>) -> Rooms {
        let history = if sequencer.local() { settings.history } else { 0 };
        let inner = Inner {
            registry: Mutex::new(Registry::default()),
            settings: RoomSettings {
                buffer: settings.buffer.max(1),
                ..settings
            },
            queued: AtomicUsize::new(0),
            shares: Shares::default(),
            sequencer,
            history,
            links: watch::Sender::new(0),
        };
        Rooms { inner: Arc::new(inner) }
    }

    /// Rooms with at least one member.
    pub fn active(&self) -> usize {
        let registry = self.lock();
        registry.rooms.len() - registry.kept.len()
    }

    /// Rooms without members kept for their history.
    pub fn kept(&self) -> usize {
        self.lock().kept.len()
    }

    /// Bytes of messages held for members and history, in every room.
    pub fn queued_bytes(&self) -> usize {
        self.inner.queued.load(Relaxed)
    }

    /// Sends a server notice to `room`'s members, with a `seq`, into its history (with Redis:
    /// through Redis, to every node). A room nobody is in gets nothing and is not created
    /// (and a room kept for its history does not change).
    pub fn publish_notice(&self, room: &str, message: &str) {
        let entry = self.lock().rooms.get(room).cloned();
        let mut state = entry
            .as_ref()
            .map(|entry| entry.lock())
            .filter(|state| state.members > 0);
        let here = entry.as_deref().zip(state.as_deref_mut());
        // The server's own frames count against no one's share.
        let _ = self.send(room, here, None, Event::Notice { room, message });
    }

    /// Whether a presence notice goes out now: small rooms only, and not faster than the
    /// room's presence rate.
    fn announce(&self, state: &mut RoomState) -> bool {
        state.members <= self.inner.settings.presence_limit && state.presence.take(Instant::now())
    }

    /// Hands `event` to the room's sequencer (see the module docs). `here`: the room on this
    /// node, locked, if it has members here; `sender`: the share of the member who sent it.
    fn send(
        &self,
        name: &str,
        here: Option<(&Room, &mut RoomState)>,
        sender: Option<&Arc<Share>>,
        event: Event<'_>,
    ) -> Result<(), TooMuchQueued> {
        let here = here.map(|here| Here::new(self, here, sender));
        self.inner.sequencer.send(name, event, here)
    }

    /// Tells the members that the room's seqs start over, and may have missed frames: a
    /// `lagged` without a seq, which also ends any overlap a member was skipping (its old
    /// seqs would otherwise hide the new ones).
    fn epoch_changed(&self, room: &Room, state: &mut RoomState) {
        self.deliver(room, state, None, messages::lagged_json(None).into(), None);
    }

    /// Delivers `message` to the room's members: appends it to the ring, gives up the oldest
    /// messages while the ring is over any of its limits, and wakes the members.
    fn deliver(&self, room: &Room, state: &mut RoomState, seq: Option<Seq>, message: Utf8Bytes, held: Option<Held>) {
        let now = Instant::now();
        let size = state.ring.push(seq, now, message, held);
        let mut queued = self.inner.queued.fetch_add(size, Relaxed) + size;
        while let Some(oldest) = state.ring.front()
            && self.gives_up(state.ring.len(), state.ring.bytes(), queued, oldest.at, now)
        {
            self.pop_front(state);
            queued = self.queued_bytes();
        }
        room.newest.send_replace(state.ring.next_index());
    }

    /// Whether a ring of `len` messages and `bytes`, while all rooms hold `queued`, gives up
    /// its oldest message (which arrived `at`): over the count it keeps, its bytes or the
    /// budget's, or past the member buffer and older than history keeps. The newest message
    /// is always kept, so a member never misses what was just sent unless it is already
    /// behind.
    fn gives_up(&self, len: usize, bytes: usize, queued: usize, at: Instant, now: Instant) -> bool {
        let settings = &self.inner.settings;
        len > 1
            && (len > settings.buffer.max(self.inner.history)
                || bytes > settings.room_queued_bytes
                || queued > settings.max_queued_bytes
                || (len > settings.buffer && now.saturating_duration_since(at) >= settings.history_ttl))
    }

    /// The bytes of `share`'s own messages that this room would give up if it took one more
    /// of `size` now (see [`Rooms::deliver`]): a sender whose frames fill its own room makes
    /// room for its next message with its own oldest, as before there were shares.
    fn own_given_up(&self, state: &RoomState, size: usize, share: &Arc<Share>) -> usize {
        let now = Instant::now();
        let (mut len, mut bytes) = (state.ring.len() + 1, state.ring.bytes() + size);
        let mut queued = self.queued_bytes() + size;
        let mut own = 0;
        for entry in state.ring.iter() {
            if !self.gives_up(len, bytes, queued, entry.at, now) {
                break;
            }
            let size = entry.text.len();
            (len, bytes, queued) = (len - 1, bytes - size, queued.saturating_sub(size));
            if entry.held.as_ref().is_some_and(|held| held.is_of(share)) {
                own += size;
            }
        }
        own
    }

    fn pop_front(&self, state: &mut RoomState) {
        if let Some(size) = state.ring.pop_front() {
            self.inner.queued.fetch_sub(size, Relaxed);
        }
    }

    /// Removes an empty room and gives its ring's bytes back to the budget. A kept room must
    /// already be out of `registry.kept`.
    fn free(&self, registry: &mut Registry, name: &str, state: &mut RoomState) {
        if state.kept {
            registry.kept_bytes -= state.ring.bytes();
            state.kept = false;
        }
        self.inner.queued.fetch_sub(state.ring.clear(), Relaxed);
        registry.rooms.remove(name);
        self.inner.sequencer.closed(name);
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Nothing panics while holding this lock; if something ever did, the map is still
        // consistent enough to keep serving.
        self.inner.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Room {
    fn new() -> Room {
        Room {
            state: Mutex::new(RoomState {
                ring: Ring::default(),
                epoch: new_epoch(),
                last_seq: 0,
                members: 0,
                presence: TokenBucket::new(PRESENCE_RATE, PRESENCE_BURST),
                kept: false,
                heard: false,
            }),
            newest: watch::Sender::new(1),
            linked: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RoomState> {
        // As for the registry: every statement leaves the state consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
