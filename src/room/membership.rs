//! A member's place in a room: joining (and resuming), reading, speaking, leaving.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{Position, Room, Rooms, Since, TooMuchQueued};
use crate::messages::{Event, Seq};
use crate::ring::Cursor;
use crate::share::Share;

/// How long a joining member waits for this node's subscription to a room (with Redis) before
/// it gives up resuming.
const LINK_WAIT: Duration = Duration::from_secs(2);

/// One member's place in a room. Dropping it leaves the room (telling the others).
pub struct Membership {
    room: Arc<Room>,
    /// Where this member reads next.
    cursor: Cursor,
    newest: watch::Receiver<u64>,
    rooms: Rooms,
    name: String,
    username: String,
    /// The bytes this member's identity holds in rooms (see `share`).
    share: Arc<Share>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("room", &self.name)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

/// Asked with the bytes a resume would replay; `false` refuses the resume (the identity's
/// replay budget, PROTOCOL.md §10).
pub(crate) type Replay<'a> = dyn FnMut(usize) -> bool + Send + 'a;

/// A member that has joined, with what its welcome says and the messages it missed (with
/// Redis; on one node they come through the ring).
pub(crate) struct Entered {
    pub membership: Membership,
    pub position: Position,
    pub missed: Vec<Message>,
}

impl Rooms {
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
        let (membership, position, join) = self.attach(room, username, since, &mut |_| true);
        if let Some(join) = join {
            let _ = self.send(room, None, None, join);
        }
        (membership, position)
    }

    /// [`Rooms::join_at`] for the server: with Redis, the join is published and the history
    /// read in one round trip, once this node is subscribed to the room, so a resumed member
    /// gets every message after `since` exactly once. `replay` is asked before a resume
    /// sends any bytes of history; refused, the member is not recovered (never partly).
    pub(crate) async fn enter(
        &self,
        room: &str,
        username: &str,
        since: Option<&Since>,
        replay: &mut Replay<'_>,
    ) -> Entered {
        let (mut membership, mut position, join) = self.attach(room, username, since, replay);
        let sequencer = &self.inner.sequencer;
        // Numbered here, the member is placed and its join sent already. Else the sequencer
        // is asked, unless it is away: then there is nothing to wait for.
        let synced = match !sequencer.local() && sequencer.up() && membership.linked().await {
            true => sequencer.sync(room, join.map(|join| join.json(None)), since).await,
            false => None,
        };
        let Some(synced) = synced else {
            // Redis is away: the join goes to this node's members only, and nothing resumes.
            // (If Redis was there but did not answer in time, the join may have gone out
            // already: presence is a courtesy, so it is not sent a second time.)
            if let Some(join) = join
                && !sequencer.up()
            {
                membership.announce_here(join);
            }
            return Entered {
                membership,
                position,
                missed: Vec::new(),
            };
        };
        {
            let mut state = membership.room.lock();
            if state.learn(&synced.epoch, synced.seq) {
                self.epoch_changed(&membership.room, &mut state);
            }
        }
        let missed = synced
            .missed
            .filter(|missed| replay(missed.iter().map(Message::len).sum()));
        // What arrives live up to the position read is already in `missed` or older.
        membership.cursor.skip_through = Seq::new(synced.seq);
        membership.cursor.last_seq = Seq::new(synced.seq);
        position = Position {
            epoch: synced.epoch,
            seq: synced.seq,
            recovered: since.map(|_| missed.is_some()),
        };
        Entered {
            membership,
            position,
            missed: missed.unwrap_or_default(),
        }
    }

    /// The join itself: the member is counted and placed, and its `join` numbered here, or
    /// returned to go out with the position read (see `sequencer`).
    fn attach<'a>(
        &self,
        room: &'a str,
        username: &'a str,
        since: Option<&Since>,
        replay: &mut Replay<'_>,
    ) -> (Membership, Position, Option<Event<'a>>) {
        let mut registry = self.lock();
        let entry = registry
            .rooms
            .entry(room.to_owned())
            .or_insert_with(|| {
                self.inner.sequencer.opened(room);
                Arc::new(Room::new())
            })
            .clone();
        let mut state = entry.lock();
        state.members += 1;
        // Back in use: no longer waiting to be freed.
        registry.revive(room, &mut state);
        let local = self.inner.sequencer.local();
        let mut join = self.announce(&mut state).then_some(Event::Join { room, username });
        if local && let Some(join) = join.take() {
            let _ = self.send(room, Some((&entry, &mut state)), None, join);
        }
        let resumed = match since {
            // Numbered elsewhere, history is there, not in this ring.
            Some(since) if local && *since.epoch == *state.epoch => {
                let ttl = self.inner.settings.history_ttl;
                state
                    .ring
                    .resume(since.seq, self.inner.history, ttl, Instant::now())
                    .filter(|&cursor| replay(state.ring.bytes_from(cursor)))
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
            cursor: Cursor::at(cursor),
            newest,
            rooms: self.clone(),
            name: room.to_owned(),
            username: username.to_owned(),
            share: self.inner.shares.of(username),
        };
        (membership, position, join)
    }
}

impl Membership {
    /// The room's name.
    pub fn room(&self) -> &str {
        &self.name
    }

    /// Sends a chat message from this member to every member, this one included. It is
    /// serialized once, with its `seq`. Refused, and not sent, when this member's identity
    /// already holds its share of queued bytes (see [`RoomSettings`](super::RoomSettings)).
    pub fn say(&self, text: &str) -> Result<(), TooMuchQueued> {
        let (room, username) = (self.name.as_str(), self.username.as_str());
        let mut state = self.room.lock();
        let event = Event::Chat {
            room,
            username,
            message: text,
        };
        self.rooms
            .send(room, Some((&self.room, &mut state)), Some(&self.share), event)
    }

    /// Waits until there is something to read, then moves messages into `out`: at least one,
    /// and then more while fewer than `max` messages and `max_bytes` bytes are taken. Or, when
    /// the ring has already given up messages this member had not read, returns how many
    /// (taking nothing), so the gap is reported (or filled) in its place; else 0.
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
    /// same bounds, or returns how many messages were missed.
    pub fn try_take(&mut self, out: &mut Vec<Message>, max: usize, max_bytes: usize) -> u64 {
        let state = self.room.lock();
        state.ring.take(&mut self.cursor, out, max, max_bytes)
    }

    /// With Redis: after this member missed messages (see [`Membership::recv`]), fetches
    /// them from the room's history, to be sent before anything newer. `None` when history
    /// no longer holds them all (or Redis cannot be asked): the member lagged. Without
    /// Redis the ring is the history, and there is nothing more to fetch.
    pub(crate) async fn repair(&mut self) -> Option<Vec<Message>> {
        let since = Since {
            epoch: self.room.lock().epoch.to_string(),
            seq: self.cursor.last_seq?.get(),
        };
        let synced = self.rooms.inner.sequencer.sync(&self.name, None, Some(&since)).await?;
        let missed = synced.missed?;
        self.cursor.skip_through = Seq::new(synced.seq);
        self.cursor.last_seq = Seq::new(synced.seq);
        Some(missed)
    }

    /// Delivers this member's `join` to the other members on this node only (Redis is away),
    /// stepping over it unless something arrived first.
    fn announce_here(&mut self, join: Event<'_>) {
        let mut state = self.room.lock();
        let index = state.ring.next_index();
        self.rooms
            .deliver(&self.room, &mut state, None, join.json(None).into(), None);
        if self.cursor.index == index {
            self.cursor.index += 1;
        }
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
        let (room, username) = (self.name.as_str(), self.username.as_str());
        if rooms.announce(&mut state) {
            // Into history too, when the room is kept for it; with Redis, members on other
            // nodes hear of it even when this node's room closes.
            let _ = rooms.send(
                room,
                Some((&self.room, &mut state)),
                None,
                Event::Leave { room, username },
            );
        }
        if state.members > 0 || state.kept {
            return;
        }
        while state.ring.len() > rooms.inner.history {
            rooms.pop_front(&mut state);
        }
        if state.ring.len() == 0 {
            rooms.free(&mut registry, room, &mut state);
            return;
        }
        // Kept for its history; the sweep frees it when that expires.
        state.ring.shrink();
        registry.keep(room, &mut state);
        rooms.free_kept_over_limits(&mut registry, (&self.room, &mut state));
    }
}
