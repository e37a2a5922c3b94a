//! The budget for sockets that have not been admitted yet (PROTOCOL.md §4).
//!
//! A socket costs a file descriptor and a task from the moment it is accepted, long before
//! anyone knows who is on the other end. If those sockets counted against the connection
//! limit, anyone could fill it with connections that never send a byte (slowloris), and
//! honest users with good tokens would be refused. So they have their own budget, and when
//! it is full a new socket **evicts the oldest one still reading its head**: an honest client
//! sends its head within milliseconds of connecting, so the oldest readers are the silent
//! ones. A flood of silent sockets therefore cannot keep an honest client out, and the
//! descriptors held stay within the budget.
//!
//! A socket whose head has arrived is being decided (authenticated); it is not evictable, but
//! it still counts, and that phase is bounded by the handshake timeout. A refused socket that
//! only lingers so its answer is not lost to a reset is evictable again, and first of all:
//! a flood of complete but refused requests must not hold the places either. When the whole
//! budget is being decided, a new socket is answered `503` at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// The sockets not yet admitted. Cloning gives another handle to the same budget.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    inner: Arc<Mutex<Inner>>,
    max: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading its head, under this id in `Inner::reading`.
    Reading(u64),
    /// Head read: counted in `Inner::deciding`.
    Deciding,
    /// Answered, draining before the close, under this id in `Inner::lingering`.
    Lingering(u64),
}

#[derive(Debug, Default)]
struct Inner {
    /// Accept order; lower ids are older.
    next_id: u64,
    /// Sockets still reading their head, oldest first, each with the way to evict it.
    reading: BTreeMap<u64, oneshot::Sender<()>>,
    /// Sockets whose head has arrived and that have not finished yet.
    deciding: usize,
    /// Refused sockets lingering before their close, oldest first: evicted before readers.
    lingering: BTreeMap<u64, oneshot::Sender<()>>,
}

/// A socket's place in the budget; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Slot {
    pending: Pending,
    phase: Phase,
    /// Completes when a newer socket takes this one's place.
    pub evicted: oneshot::Receiver<()>,
}

impl Pending {
    /// A budget of `max` sockets.
    pub fn new(max: usize) -> Pending {
        Pending {
            inner: Arc::default(),
            max,
        }
    }

    /// A place for a socket just accepted, evicting the oldest reader if the budget is full;
    /// `None` when every place is held by a socket past its head.
    pub fn enter(&self) -> Option<Slot> {
        let mut inner = self.lock();
        if inner.reading.len() + inner.deciding + inner.lingering.len() >= self.max {
            let (_, evict) = match inner.lingering.pop_first() {
                Some(lingering) => lingering,
                None => inner.reading.pop_first()?,
            };
            // The evicted task notices at its next poll, drops its socket and ends.
            let _ = evict.send(());
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let (evict, evicted) = oneshot::channel();
        inner.reading.insert(id, evict);
        Some(Slot {
            pending: self.clone(),
            phase: Phase::Reading(id),
            evicted,
        })
    }

    /// Sockets counted now.
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.reading.len() + inner.deciding + inner.lingering.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The map is consistent after every statement, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Slot {
    /// The head has arrived: this socket can no longer be evicted. `false` if it already
    /// was (its eviction raced with the head), in which case the caller must stop.
    pub fn head_read(&mut self) -> bool {
        let Phase::Reading(id) = self.phase else { return true };
        let mut inner = self.pending.lock();
        if inner.reading.remove(&id).is_none() {
            return false;
        }
        inner.deciding += 1;
        self.phase = Phase::Deciding;
        true
    }

    /// The socket has been answered and only waits to close: evictable again, before any
    /// reader. `evicted` fires if a newer socket needs the place.
    pub fn linger(&mut self) {
        let mut inner = self.pending.lock();
        match self.phase {
            Phase::Deciding => inner.deciding -= 1,
            Phase::Reading(id) => {
                inner.reading.remove(&id);
            }
            Phase::Lingering(_) => return,
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let (evict, evicted) = oneshot::channel();
        inner.lingering.insert(id, evict);
        self.phase = Phase::Lingering(id);
        self.evicted = evicted;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.pending.lock();
        match self.phase {
            Phase::Reading(id) => {
                inner.reading.remove(&id);
            }
            Phase::Deciding => inner.deciding -= 1,
            Phase::Lingering(id) => {
                inner.lingering.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_reader_makes_way_and_deciders_do_not() {
        let pending = Pending::new(2);
        let mut first = pending.enter().unwrap();
        let mut second = pending.enter().unwrap();
        let third = pending.enter().unwrap();
        assert!(first.evicted.try_recv().is_ok(), "the oldest reader is evicted");
        assert!(second.evicted.try_recv().is_err());
        assert!(!first.head_read(), "an evicted socket must stop");
        drop(first);
        assert_eq!(pending.len(), 2);
        assert!(second.head_read());
        let mut third = third;
        assert!(third.head_read());
        assert!(pending.enter().is_none(), "every place is past its head");
        drop(second);
        assert_eq!(pending.len(), 1);
        assert!(pending.enter().is_some());
        drop(third);
        assert_eq!(pending.len(), 0);
    }

    #[test]
    fn a_lingering_refusal_makes_way_before_any_reader() {
        let pending = Pending::new(2);
        let mut refused = pending.enter().unwrap();
        assert!(refused.head_read());
        refused.linger();
        let mut reader = pending.enter().unwrap();
        let _newcomer = pending.enter().unwrap();
        assert!(refused.evicted.try_recv().is_ok(), "the lingering socket goes first");
        assert!(reader.evicted.try_recv().is_err());
        drop(refused);
        assert_eq!(pending.len(), 2);
    }
}
