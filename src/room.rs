//! Rooms: a registry that creates a room on its first join, and the fan-out of one message to
//! every member, with the history a reconnecting client resumes from (PROTOCOL.md §10).
//!
//! Each room is a [`ring`](crate::ring) of ready-to-send WebSocket messages. A message is
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
//! kept only for history are freed, oldest first, when the budget is exceeded or more than
//! [`MAX_KEPT_ROOMS`] wait.
//!
//! With Redis (PROTOCOL.md §8) the ring is only the local buffer: Redis assigns `seq` and
//! keeps history, and a room is freed when its last local member leaves.
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

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::bucket::TokenBucket;
use crate::messages;
use crate::rejection::Rejection;
use crate::ring::Ring;

/// Presence notices (`join`/`leave`) a room sends per second on average, and in a burst.
/// Churn beyond that is not announced: presence is a courtesy, chat messages are not.
const PRESENCE_RATE: u32 = 10;
const PRESENCE_BURST: u32 = 50;

/// The most characters a room name may have.
pub const MAX_NAME_LEN: usize = 64;

/// The most rooms kept for their history after their last member left. Each costs a few
/// hundred bytes besides its messages, which the byte budget already bounds.
pub const MAX_KEPT_ROOMS: usize = 10_000;

/// How long a joining member waits for this node's subscription to a room (with Redis) before
/// it gives up resuming.
const LINK_WAIT: Duration = Duration::from_secs(2);

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

fn is_token(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Where a reconnecting client left off: `?since=<epoch>:<seq>` (PROTOCOL.md §10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    /// The room history the client saw (the welcome's `epoch`).
    pub epoch: String,
    /// The last `seq` it received.
    pub seq: u64,
}

impl Since {
    /// Parses `<epoch>:<seq>`: an epoch of 1–64 characters of `[A-Za-z0-9_.-]` and a decimal
    /// seq. Anything else is a `400` that says so: a client that sends a broken value should
    /// learn it, not silently lose its resume.
    pub fn parse(value: &str) -> Result<Since, Rejection> {
        let bad = || Rejection::BadRequest("since must be <epoch>:<seq>, as the welcome gave them".into());
        let (epoch, seq) = value.split_once(':').ok_or_else(bad)?;
        if !is_token(epoch, 64) || seq.is_empty() || seq.len() > 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let seq = seq.parse().map_err(|_| bad())?;
        Ok(Since {
            epoch: epoch.to_owned(),
            seq,
        })
    }
}

/// What the welcome tells a member about the room's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Names this room's history; a `since` with another epoch cannot resume.
    pub epoch: Arc<str>,
    /// The last `seq` in the room when the member joined.
    pub seq: u64,
    /// Whether the `since` the member gave was resumed; `None` when it gave none.
    pub recovered: Option<bool>,
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
    /// Where room traffic goes when rooms span several nodes.
    bridge: Option<Arc<dyn Bridge>>,
    /// Bumped whenever a room's link to the other nodes comes up (see [`Rooms::set_linked`]).
    links: watch::Sender<u64>,
}

#[derive(Default)]
struct Registry {
    rooms: HashMap<String, Arc<Room>>,
    /// Rooms without members, kept for their history, oldest first.
    kept: VecDeque<String>,
}

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

/// One member's place in a room. Dropping it leaves the room (telling the others).
pub struct Membership {
    room: Arc<Room>,
    /// The index of the next message this member reads.
    cursor: u64,
    /// Messages up to this `seq` were already delivered (from Redis history, on resume).
    skip: Option<u64>,
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

/// A member that has joined, with what its welcome says and the messages it missed (with
/// Redis; on one node they come through the ring).
pub(crate) struct Entered {
    pub membership: Membership,
    pub position: Position,
    pub missed: Vec<Message>,
}

impl Rooms {
    /// An empty registry.
    pub fn new(settings: RoomSettings) -> Rooms {
        Rooms::with_bridge(settings, None)
    }

    pub(crate) fn with_bridge(settings: RoomSettings, bridge: Option<Arc<dyn Bridge>>) -> Rooms {
        let inner = Inner {
            registry: Mutex::new(Registry::default()),
            settings: RoomSettings {
                buffer: settings.buffer.max(1),
                ..settings
            },
            queued: AtomicUsize::new(0),
            bridge,
            links: watch::Sender::new(0),
        };
        Rooms { inner: Arc::new(inner) }
    }

    /// Joins `room` as `username`; the other members get a `join` event (unless the room is
    /// past the presence limit or churning), the joiner does not.
    pub fn join(&self, room: &str, username: &str) -> Membership {
        self.join_at(room, username, None).0
    }

    /// Joins `room` as `username`, resuming after `since` when history allows (PROTOCOL.md
    /// §10): the membership then reads every message after `since.seq` first, its own `join`
    /// included. Returns what the welcome says. With Redis, use the server: resuming needs a
    /// round trip.
    pub fn join_at(&self, room: &str, username: &str, since: Option<&Since>) -> (Membership, Position) {
        let (membership, position, presence) = self.attach(room, username, since);
        if let (Some(bridge), Some(json)) = (&self.inner.bridge, presence) {
            bridge.publish(room, json);
        }
        (membership, position)
    }

    /// [`Rooms::join_at`] for the server: with Redis, the join is published and the history
    /// read in one round trip, once this node is subscribed to the room, so a resumed member
    /// gets every message after `since` exactly once.
    pub(crate) async fn enter(&self, room: &str, username: &str, since: Option<&Since>) -> Entered {
        let (mut membership, mut position, presence) = self.attach(room, username, since);
        let Some(bridge) = self.inner.bridge.clone() else {
            return Entered {
                membership,
                position,
                missed: Vec::new(),
            };
        };
        let synced = match membership.linked().await {
            true => bridge.sync(room, presence.clone(), since).await,
            false => None,
        };
        let Some(synced) = synced else {
            // Redis is away: the join goes to this node's members only, and nothing resumes.
            if let Some(json) = presence {
                self.deliver_local(room, Message::text(json));
            }
            return Entered {
                membership,
                position,
                missed: Vec::new(),
            };
        };
        membership.room.lock().learn(&synced.epoch, synced.seq);
        // What arrives live up to the position read is already in `missed` or older.
        membership.skip = Some(synced.seq);
        position = Position {
            epoch: synced.epoch,
            seq: synced.seq,
            recovered: since.map(|_| synced.missed.is_some()),
        };
        Entered {
            membership,
            position,
            missed: synced.missed.unwrap_or_default(),
        }
    }

    /// The join itself: the member is counted and placed, and its `join` pushed (on one node)
    /// or returned for the bridge.
    fn attach(&self, room: &str, username: &str, since: Option<&Since>) -> (Membership, Position, Option<String>) {
        let mut registry = self.lock();
        let entry = registry
            .rooms
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
        if state.kept {
            // Back in use: no longer waiting to be freed.
            state.kept = false;
            registry.kept.retain(|name| name != room);
        }
        let mut presence = None;
        if self.announce(&mut state) {
            match &self.inner.bridge {
                Some(_) => presence = Some(messages::presence(true, room, username, None)),
                None => self.push(&entry, &mut state, |seq| {
                    Message::text(messages::presence(true, room, username, seq))
                }),
            }
        }
        let settings = &self.inner.settings;
        let resumed = match since {
            // With Redis, history is there, not in this ring.
            Some(since) if self.inner.bridge.is_none() && *since.epoch == *state.epoch => {
                state
                    .ring
                    .resume(since.seq, settings.history, settings.history_ttl, Instant::now())
            }
            _ => None,
        };
        let position = Position {
            epoch: state.epoch.clone(),
            seq: state.last_seq,
            recovered: since.map(|_| resumed.is_some()),
        };
        // A member that does not resume starts after its own join.
        let cursor = resumed.unwrap_or(state.ring.next_index());
        drop(state);
        drop(registry);
        let newest = entry.newest.subscribe();
        let membership = Membership {
            room: entry,
            cursor,
            skip: None,
            newest,
            rooms: self.clone(),
            name: room.to_owned(),
            username: username.to_owned(),
        };
        (membership, position, presence)
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

    /// The names of the rooms with at least one member here.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn names(&self) -> Vec<String> {
        let registry = self.lock();
        registry
            .rooms
            .iter()
            .filter(|(_, room)| room.lock().members > 0)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Sends a server notice to `room`'s members, with a `seq`, into its history (with Redis:
    /// through Redis, to every node). A room nobody is in (or was in lately) gets nothing and
    /// is not created.
    pub fn publish_notice(&self, room: &str, message: &str) {
        if let Some(bridge) = &self.inner.bridge {
            bridge.publish(room, messages::notice(room, message, None));
            return;
        }
        let Some(entry) = self.lock().rooms.get(room).cloned() else {
            return;
        };
        let mut state = entry.lock();
        self.push(&entry, &mut state, |seq| {
            Message::text(messages::notice(room, message, seq))
        });
    }

    /// Delivers `message` to the local members of `room` without a `seq` (it is not passed
    /// on to other nodes, and not part of history).
    pub(crate) fn deliver_local(&self, room: &str, message: Message) {
        if let Some(entry) = self.lock().rooms.get(room).cloned() {
            let mut state = entry.lock();
            self.push_as(&entry, &mut state, 0, message);
        }
    }

    /// Delivers a message Redis gave `seq` in history `epoch` to the local members of `room`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn deliver_sequenced(&self, room: &str, epoch: &str, seq: u64, message: Message) {
        if let Some(entry) = self.lock().rooms.get(room).cloned() {
            let mut state = entry.lock();
            state.learn(epoch, seq);
            self.push_as(&entry, &mut state, seq, message);
        }
    }

    /// Marks whether this node is subscribed to `room` on Redis (`None`: every room).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
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

    /// A handle that does not keep the rooms alive (for background tasks).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn downgrade(&self) -> WeakRooms {
        WeakRooms(Arc::downgrade(&self.inner))
    }

    /// Frees the rooms kept for history whose newest message has expired, and the oldest
    /// kept rooms while every room together holds more than the byte budget. The server
    /// calls it every second.
    pub(crate) fn sweep(&self, now: Instant) {
        let ttl = self.inner.settings.history_ttl;
        let mut registry = self.lock();
        let mut over = self.queued_bytes() > self.inner.settings.max_queued_bytes;
        let kept = std::mem::take(&mut registry.kept);
        for name in kept {
            let Some(entry) = registry.rooms.get(&name).cloned() else {
                continue;
            };
            let mut state = entry.lock();
            if state.members > 0 {
                state.kept = false;
                continue;
            }
            while state
                .ring
                .front()
                .is_some_and(|e| now.saturating_duration_since(e.at) >= ttl)
            {
                self.pop_front(&mut state);
            }
            if state.ring.len() == 0 || over {
                self.free(&mut registry, &name, &mut state);
                over = self.queued_bytes() > self.inner.settings.max_queued_bytes;
            } else {
                registry.kept.push_back(name);
            }
        }
    }

    /// Whether a presence notice goes out now: small rooms only, and not faster than the
    /// room's presence rate.
    fn announce(&self, state: &mut RoomState) -> bool {
        state.members <= self.inner.settings.presence_limit && state.presence.take(Instant::now())
    }

    /// Appends the message `build` makes with its `seq` (the next one) to the room's ring.
    fn push(&self, room: &Room, state: &mut RoomState, build: impl FnOnce(Option<u64>) -> Message) {
        let seq = state.ring.next_index();
        let message = build(Some(seq));
        state.last_seq = seq;
        self.push_as(room, state, seq, message);
    }

    /// Appends `message` to the ring, gives up the oldest messages while the ring is over any
    /// of its limits, and wakes the members.
    fn push_as(&self, room: &Room, state: &mut RoomState, seq: u64, message: Message) {
        let settings = &self.inner.settings;
        let now = Instant::now();
        let size = state.ring.push(seq, now, message);
        let mut queued = self.inner.queued.fetch_add(size, Relaxed) + size;
        let keep = settings.buffer.max(settings.history);
        // The newest message is always kept, so a member never misses what was just sent
        // unless it is already behind. Past the member buffer, history expires by age.
        while let Some(oldest) = state.ring.front()
            && state.ring.len() > 1
            && (state.ring.len() > keep
                || state.ring.bytes() > settings.room_queued_bytes
                || queued > settings.max_queued_bytes
                || (state.ring.len() > settings.buffer
                    && now.saturating_duration_since(oldest.at) >= settings.history_ttl))
        {
            self.pop_front(state);
            queued = self.queued_bytes();
        }
        room.newest.send_replace(state.ring.next_index());
    }

    fn pop_front(&self, state: &mut RoomState) {
        if let Some(size) = state.ring.pop_front() {
            self.inner.queued.fetch_sub(size, Relaxed);
        }
    }

    /// Removes an empty room and gives its ring's bytes back to the budget.
    fn free(&self, registry: &mut Registry, name: &str, state: &mut RoomState) {
        self.inner.queued.fetch_sub(state.ring.clear(), Relaxed);
        state.kept = false;
        registry.rooms.remove(name);
        if let Some(bridge) = &self.inner.bridge {
            bridge.closed(name);
        }
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

impl RoomState {
    /// Takes in what Redis says of the room's history (with Redis, the welcome falls back to
    /// it while Redis is away).
    fn learn(&mut self, epoch: &str, seq: u64) {
        if *self.epoch != *epoch {
            self.epoch = epoch.into();
            self.last_seq = seq;
        } else {
            self.last_seq = self.last_seq.max(seq);
        }
    }
}

/// A name for a new room's history, unique within this process and, by its time part,
/// across restarts.
fn new_epoch() -> Arc<str> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("{micros:x}-{:x}", COUNTER.fetch_add(1, Relaxed)).into()
}

impl Membership {
    /// The room's name.
    pub fn room(&self) -> &str {
        &self.name
    }

    /// Sends a chat message from this member to every member, this one included. It is
    /// serialized once, with its `seq`.
    pub fn say(&self, text: &str) {
        let (room, user) = (self.name.as_str(), self.username.as_str());
        if let Some(bridge) = &self.rooms.inner.bridge {
            bridge.publish(room, messages::chat(room, user, text, None));
            return;
        }
        let mut state = self.room.lock();
        self.rooms.push(&self.room, &mut state, |seq| {
            Message::text(messages::chat(room, user, text, seq))
        });
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
        state.ring.take(&mut self.cursor, out, max, max_bytes, &mut self.skip)
    }

    /// Waits (briefly) until this node is subscribed to the room on Redis; `true` at once
    /// without Redis.
    async fn linked(&self) -> bool {
        let mut links = self.rooms.inner.links.subscribe();
        let wait = async {
            while !self.room.linked.load(Relaxed) {
                if links.changed().await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(LINK_WAIT, wait).await.unwrap_or(false)
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let rooms = &self.rooms;
        let mut registry = rooms.lock();
        let mut state = self.room.lock();
        state.members -= 1;
        let (room, user) = (self.name.as_str(), self.username.as_str());
        if rooms.announce(&mut state) {
            match &rooms.inner.bridge {
                // Members on other nodes hear of the leave even when this node's room closes.
                Some(bridge) => bridge.publish(room, messages::presence(false, room, user, None)),
                // Into history too, when the room is kept for it.
                None => rooms.push(&self.room, &mut state, |seq| {
                    Message::text(messages::presence(false, room, user, seq))
                }),
            }
        }
        if state.members > 0 || state.kept {
            return;
        }
        let settings = &rooms.inner.settings;
        while state.ring.len() > settings.history {
            rooms.pop_front(&mut state);
        }
        if rooms.inner.bridge.is_some() || state.ring.len() == 0 {
            rooms.free(&mut registry, room, &mut state);
            return;
        }
        // Kept for its history; the sweep frees it when that expires.
        state.kept = true;
        registry.kept.push_back(room.to_owned());
        while registry.kept.len() > MAX_KEPT_ROOMS {
            let Some(oldest) = registry.kept.pop_front() else { break };
            let Some(entry) = registry.rooms.get(&oldest).cloned() else {
                continue;
            };
            if Arc::ptr_eq(&entry, &self.room) {
                rooms.free(&mut registry, &oldest, &mut state);
                continue;
            }
            let mut other = entry.lock();
            if other.members == 0 {
                rooms.free(&mut registry, &oldest, &mut other);
            } else {
                other.kept = false;
            }
        }
    }
}
