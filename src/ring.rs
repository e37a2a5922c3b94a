//! A room's ring: its last messages, oldest first, each with the room-local index members
//! keep their cursors in, the `seq` clients see (PROTOCOL.md §10), and when it arrived.
//!
//! The ring is both the buffer members read from and the room's history: a resumed client
//! is simply given a cursor further back. So a message is stored once, in the bytes that
//! fan-out already shares, however many members read it and however long history keeps it.
//!
//! On a single node `seq` equals the index. With Redis, `seq` is the one Redis assigned
//! (PROTOCOL.md §8), and a message delivered only locally while Redis was away has none.
//!
//! The ring knows nothing of budgets or clocks beyond the timestamps it is given: the room
//! decides when to give up old messages ([`Ring::pop_front`]).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::messages::Seq;
use crate::share::Held;

/// One message in the ring.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The `seq` the message carries, if any.
    pub seq: Option<Seq>,
    /// When it was pushed, for the history TTL.
    pub at: Instant,
    /// The frame's text, shared by every reader (a clone is a reference-count bump).
    pub text: Utf8Bytes,
    /// Its bytes in its sender's share, given back when it leaves the ring.
    pub held: Option<Held>,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Ring {
    entries: VecDeque<Entry>,
    /// Payload bytes in `entries`.
    bytes: usize,
    /// The index the next pushed message gets. Indexes start at 1, so a fresh room's cursor
    /// and a client's "nothing seen yet" (`seq` 0) line up.
    next: u64,
}

impl Default for Ring {
    fn default() -> Ring {
        Ring {
            entries: VecDeque::new(),
            bytes: 0,
            next: 1,
        }
    }
}

impl Ring {
    /// Appends a message; returns its payload size.
    pub fn push(&mut self, seq: Option<Seq>, at: Instant, text: Utf8Bytes, held: Option<Held>) -> usize {
        let size = text.len();
        self.entries.push_back(Entry { seq, at, text, held });
        self.next += 1;
        self.bytes += size;
        size
    }

    /// Gives up the oldest message; returns its payload size.
    pub fn pop_front(&mut self) -> Option<usize> {
        let oldest = self.entries.pop_front()?;
        self.bytes -= oldest.text.len();
        Some(oldest.text.len())
    }

    /// Gives back the slack of a ring that will not grow for a while (a room kept only for
    /// its history).
    pub fn shrink(&mut self) {
        self.entries.shrink_to_fit();
    }

    /// Empties the ring (its indexes go on); returns the bytes freed.
    pub fn clear(&mut self) -> usize {
        self.entries.clear();
        std::mem::take(&mut self.bytes)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn front(&self) -> Option<&Entry> {
        self.entries.front()
    }

    /// The messages, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// The index the next message gets.
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// The payload bytes of the messages from `index` on (what a cursor there would read).
    pub fn bytes_from(&self, index: u64) -> usize {
        let skip = usize::try_from(index.saturating_sub(self.oldest_index())).unwrap_or(usize::MAX);
        self.entries.iter().skip(skip).map(|entry| entry.text.len()).sum()
    }

    /// The index of the oldest message held (`next_index` when empty).
    pub fn oldest_index(&self) -> u64 {
        self.next - self.entries.len() as u64
    }

    /// The cursor that resumes a client which has seen every index up to `seen`, if history
    /// still holds everything after it: at most `history` messages missed, all of them in the
    /// ring, the oldest of them younger than `ttl` at `now`. `seen` equal to the newest index
    /// resumes with nothing to send; `seen` beyond it never resumes.
    pub fn resume(&self, seen: u64, history: usize, ttl: Duration, now: Instant) -> Option<u64> {
        let newest = self.next - 1;
        if seen > newest || newest - seen > history as u64 {
            return None;
        }
        if seen == newest {
            return Some(self.next);
        }
        let first = seen + 1;
        let entry = self
            .entries
            .get(usize::try_from(first.checked_sub(self.oldest_index())?).ok()?)?;
        (now.saturating_duration_since(entry.at) < ttl).then_some(first)
    }

    /// Moves messages from `cursor` on into `out`: at least one if there is one, then more
    /// while fewer than `max` messages and `max_bytes` bytes are taken. Returns how many
    /// messages were missed because the ring had already given them up; then nothing is
    /// taken, so the reader can fill the gap (from Redis history) before reading on.
    pub fn take(&self, cursor: &mut Cursor, out: &mut Vec<Message>, max: usize, max_bytes: usize) -> u64 {
        let oldest = self.oldest_index();
        if cursor.index < oldest {
            let missed = oldest - cursor.index;
            cursor.index = oldest;
            return missed;
        }
        let start = usize::try_from(cursor.index - oldest).unwrap_or(usize::MAX);
        let (taken, mut bytes) = (out.len(), 0);
        let mut last_seq = cursor.last_seq;
        for entry in self.entries.range(start.min(self.entries.len())..) {
            if out.len() >= max.max(1) || (bytes >= max_bytes && out.len() > taken) {
                break;
            }
            cursor.index += 1;
            if let Some(through) = cursor.skip_through {
                if entry.seq.is_some_and(|seq| seq <= through) {
                    continue;
                }
                // The overlap ends at the first newer frame (or one without a seq).
                cursor.skip_through = None;
            }
            // A frame without a seq (delivered only here while Redis was away, or a notice
            // that the link or the epoch changed) leaves no seq to repair from.
            last_seq = entry.seq;
            bytes += entry.text.len();
            out.push(Message::Text(entry.text.clone()));
        }
        cursor.last_seq = last_seq;
        0
    }
}

/// A reader's place in a ring.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cursor {
    /// The index of the next message to read.
    pub index: u64,
    /// Messages up to this `seq` were already delivered another way (from Redis history).
    pub skip_through: Option<Seq>,
    /// The last `seq` read, where a repair from history starts; `None` before any, and after
    /// a frame without one.
    pub last_seq: Option<Seq>,
}

impl Cursor {
    /// A cursor at `index`.
    pub fn at(index: u64) -> Cursor {
        Cursor {
            index,
            ..Cursor::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Push,
        /// Give up up to n oldest messages (a budget or the count limit).
        Pop(usize),
        /// Let this many seconds pass.
        Wait(u64),
        /// Resume after this index (relative to the newest: newest - k).
        Resume(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Push),
            1 => (0usize..4).prop_map(Op::Pop),
            1 => (0u64..4).prop_map(Op::Wait),
            2 => (0u64..12).prop_map(Op::Resume),
        ]
    }

    proptest! {
        /// Any interleaving of push, expiry and resume: a resume returns exactly the retained
        /// suffix after the seen index (every message, in order, once), and refuses exactly
        /// when history cannot give that.
        #[test]
        fn resume_returns_exactly_the_retained_suffix(ops in proptest::collection::vec(op(), 1..80), history in 0usize..8) {
            let ttl = Duration::from_secs(5);
            let start = Instant::now();
            let mut now = start;
            let mut ring = Ring::default();
            // The model: every message ever pushed (index, time), and which are still held.
            let mut pushed: Vec<(u64, Instant)> = Vec::new();
            let mut dropped = 0usize;
            for op in ops {
                match op {
                    Op::Push => {
                        let index = ring.next_index();
                        ring.push(Seq::new(index), now, index.to_string().into(), None);
                        pushed.push((index, now));
                    }
                    Op::Pop(n) => for _ in 0..n {
                        if ring.pop_front().is_some() { dropped += 1; }
                    },
                    Op::Wait(s) => now += Duration::from_secs(s),
                    Op::Resume(k) => {
                        let newest = pushed.len() as u64;
                        let seen = newest.saturating_sub(k);
                        let missed = &pushed[seen as usize..];
                        let expected = missed.len() <= history
                            && seen as usize >= dropped
                            && missed.first().is_none_or(|(_, at)| now.duration_since(*at) < ttl);
                        let got = ring.resume(seen, history, ttl, now);
                        prop_assert_eq!(got.is_some(), expected);
                        if let Some(index) = got {
                            let mut out = Vec::new();
                            let missed_before = ring.take(&mut Cursor::at(index), &mut out, usize::MAX, usize::MAX);
                            prop_assert_eq!(missed_before, 0);
                            let texts: Vec<String> = out.iter().map(|m| m.to_text().unwrap().to_owned()).collect();
                            let want: Vec<String> = missed.iter().map(|(i, _)| i.to_string()).collect();
                            prop_assert_eq!(texts, want);
                        }
                    }
                }
                prop_assert_eq!(ring.len(), pushed.len() - dropped);
                prop_assert_eq!(ring.bytes(), pushed[dropped..].iter().map(|(i, _)| i.to_string().len()).sum::<usize>());
            }
        }
    }

    #[test]
    fn skip_passes_over_the_overlap_then_ends() {
        let now = Instant::now();
        let mut ring = Ring::default();
        for seq in [7, 8, 0, 9, 10] {
            ring.push(Seq::new(seq), now, seq.to_string().into(), None);
        }
        let mut cursor = Cursor {
            skip_through: Seq::new(8),
            ..Cursor::at(1)
        };
        let mut out = Vec::new();
        assert_eq!(ring.take(&mut cursor, &mut out, 64, 1 << 20), 0);
        let texts: Vec<&str> = out.iter().map(|m| m.to_text().unwrap()).collect();
        // 7 and 8 were delivered from history already; a message without seq ends the overlap.
        assert_eq!(texts, ["0", "9", "10"]);
        assert_eq!(
            (cursor.index, cursor.skip_through, cursor.last_seq),
            (6, None, Seq::new(10))
        );
    }

    #[test]
    fn a_gap_is_reported_before_anything_is_taken() {
        let now = Instant::now();
        let mut ring = Ring::default();
        for seq in 1..=5 {
            ring.push(Seq::new(seq), now, seq.to_string().into(), None);
        }
        ring.pop_front();
        ring.pop_front();
        let (mut cursor, mut out) = (Cursor::at(1), Vec::new());
        assert_eq!(ring.take(&mut cursor, &mut out, 64, 1 << 20), 2);
        assert!(out.is_empty());
        assert_eq!(ring.take(&mut cursor, &mut out, 64, 1 << 20), 0);
        assert_eq!(out.len(), 3);
    }
}
