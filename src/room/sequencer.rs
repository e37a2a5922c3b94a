//! Who gives a room's events their `seq` (PROTOCOL.md §8, §10): the one seam between a room
//! on one node and a room across many.
//!
//! Every room event (a chat message, a join, a leave, a notice) is built once, where it
//! happens, and handed to the room's [`Sequencer`] by `Rooms::send`. The [`Local`]
//! sequencer numbers it at once, in the room's ring on this node, which is then also the
//! room's history. The cluster's (feature `redis`, `cluster::link`) sends it to Redis, which
//! numbers it and keeps history for every node; every node, this one included, delivers it
//! when it comes back over the subscription (`Rooms::deliver_sequenced`). Either way the
//! frame a member reads is the same, and it reaches the members through the same ring.
//!
//! The join is the one event that travels with something else: with Redis it goes out in
//! the same round trip that reads the room's position ([`Sequencer::sync`]), so a joiner
//! never receives its own join and a resumed one misses nothing between the two.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio_tungstenite::tungstenite::Message;

use super::{Room, RoomState, Rooms, Since, TooMuchQueued};
use crate::messages::{Event, Seq};
use crate::share::Share;

/// Gives a room's events their `seq` and gets them to the room's members. The registry calls
/// it under its locks, so implementations only queue work; they never block.
pub(crate) trait Sequencer: Send + Sync {
    /// Sends `event` to every member of `room`. `here` is the room on this node, locked, when
    /// it has members here; a sequencer that numbers events here delivers the event into it,
    /// unless its sender's share of queued bytes is used up.
    fn send(&self, room: &str, event: Event<'_>, here: Option<Here<'_>>) -> Result<(), TooMuchQueued>;

    /// Whether events are numbered here, as they happen, so this node's rings are the rooms'
    /// history. `false`: they are numbered elsewhere, which also keeps history; the rings
    /// only buffer for members, and joins and repairs go through [`Sequencer::sync`].
    fn local(&self) -> bool {
        true
    }

    /// The first local member joined `room`.
    fn opened(&self, _room: &str) {}

    /// The last local member left `room`.
    fn closed(&self, _room: &str) {}

    /// Whether the sequencer can be reached now.
    fn up(&self) -> bool {
        true
    }

    /// Sends `join` (if any) and reads the room's position, with what history holds after
    /// `since`; `None` if the sequencer could not be asked.
    fn sync<'a>(
        &'a self,
        _room: &'a str,
        _join: Option<String>,
        _since: Option<&'a Since>,
    ) -> BoxFuture<'a, Option<Synced>> {
        Box::pin(std::future::ready(None))
    }
}

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What [`Sequencer::sync`] learned.
pub(crate) struct Synced {
    pub epoch: Arc<str>,
    /// The room's last `seq` (0 before its first message).
    pub seq: u64,
    /// The messages after `since`, or `None` when history no longer holds them all.
    pub missed: Option<Vec<Message>>,
}

/// One node, no Redis: each event gets the next index of the room's ring as its `seq`.
pub(crate) struct Local;

impl Sequencer for Local {
    fn send(&self, _room: &str, event: Event<'_>, here: Option<Here<'_>>) -> Result<(), TooMuchQueued> {
        // A room with no members here has no one to tell and no history to keep it for.
        match here {
            Some(here) => here.number(event),
            None => Ok(()),
        }
    }
}

/// A room on this node, locked, for an event to be delivered into (see [`Sequencer::send`]).
pub(crate) struct Here<'a> {
    rooms: &'a Rooms,
    room: &'a Room,
    state: &'a mut RoomState,
    /// The sender's share, for an event a member sent.
    sender: Option<&'a Arc<Share>>,
}

impl Here<'_> {
    pub(super) fn new<'a>(
        rooms: &'a Rooms,
        (room, state): (&'a Room, &'a mut RoomState),
        sender: Option<&'a Arc<Share>>,
    ) -> Here<'a> {
        Here {
            rooms,
            room,
            state,
            sender,
        }
    }

    /// Gives `event` the room's next `seq` and delivers it to the members, its bytes held of
    /// its sender's share; or refuses it, changing nothing, when that share is used up.
    pub(crate) fn number(self, event: Event<'_>) -> Result<(), TooMuchQueued> {
        let seq = Seq::new(self.state.ring.next_index());
        let json = event.json(seq);
        let limit = self.rooms.inner.settings.max_queued_bytes_per_user;
        let held = match self.sender {
            Some(share) => {
                // What this message makes the ring give up of the sender's own frames counts
                // as freed: a lone sender keeps going at the room's own limits.
                let freed = self.rooms.own_given_up(self.state, json.len(), share);
                Some(
                    share
                        .hold(json.len(), limit.saturating_add(freed))
                        .ok_or(TooMuchQueued)?,
                )
            }
            None => None,
        };
        self.state.last_seq = seq.map_or(0, Seq::get);
        self.rooms.deliver(self.room, self.state, seq, json.into(), held);
        Ok(())
    }
}

impl RoomState {
    /// Takes in where the sequencer says the room's history stands (with Redis, the welcome
    /// falls back to it while Redis is away). Returns whether the epoch changed under this
    /// room's members: Redis lost the room's keys (expired, evicted, restarted), and its seqs
    /// start over.
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
