//! One identity's share of the bytes rooms hold (PROTOCOL.md §5, §13): what its frames cost
//! in rings (buffers, history, rooms kept for it), all its rooms together.
//!
//! Counted per message, never per recipient: a frame takes its bytes from its sender's
//! [`Share`] when it is pushed, as a [`Held`], and the `Held` gives them back when the frame
//! leaves its ring, however it leaves (given up for a budget, expired, its room freed). So a
//! frame shared by 1,000 members costs one add and one subtract.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};

/// The bytes one identity's frames hold now.
#[derive(Debug, Default)]
pub(crate) struct Share {
    bytes: AtomicUsize,
}

impl Share {
    /// Takes `bytes` if that keeps the share within `limit`; `None` leaves it as it was.
    pub fn hold(self: &Arc<Share>, bytes: usize, limit: usize) -> Option<Held> {
        self.bytes
            .fetch_update(Relaxed, Relaxed, |held| {
                held.checked_add(bytes).filter(|&total| total <= limit)
            })
            .ok()?;
        Some(Held {
            share: Arc::clone(self),
            bytes,
        })
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes.load(Relaxed)
    }
}

/// Bytes a frame holds of its sender's share, given back when it is dropped.
#[derive(Debug)]
pub(crate) struct Held {
    share: Arc<Share>,
    bytes: usize,
}

impl Held {
    /// Whether these bytes are held of `share`.
    pub fn is_of(&self, share: &Arc<Share>) -> bool {
        Arc::ptr_eq(&self.share, share)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.share.bytes.fetch_sub(self.bytes, Relaxed);
    }
}

/// Every identity's share, by name. An identity's entry lives while a member or a frame of it
/// does; the map forgets the others as it grows.
#[derive(Debug, Default)]
pub(crate) struct Shares {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_user: HashMap<String, Weak<Share>>,
    /// Sweep forgotten identities when the map grows past this.
    sweep_at: usize,
}

/// The least `sweep_at`: twice what was live at the last sweep, and at least this.
const MIN_SWEEP_AT: usize = 1024;

impl Shares {
    /// `user`'s share, the same one for all its members.
    pub fn of(&self, user: &str) -> Arc<Share> {
        // Every statement leaves the map consistent, so a poisoned lock is still usable.
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(share) = inner.by_user.get(user).and_then(Weak::upgrade) {
            return share;
        }
        if inner.by_user.len() >= inner.sweep_at.max(MIN_SWEEP_AT) {
            inner.by_user.retain(|_, share| share.strong_count() > 0);
            inner.sweep_at = inner.by_user.len() * 2;
        }
        let share = Arc::new(Share::default());
        inner.by_user.insert(user.to_owned(), Arc::downgrade(&share));
        share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_is_held_within_its_limit_and_given_back_by_each_frame() {
        let shares = Shares::default();
        let alice = shares.of("alice");
        let first = alice.hold(600, 1000).unwrap();
        assert!(alice.hold(500, 1000).is_none(), "past the limit: nothing taken");
        let second = shares.of("alice").hold(400, 1000).unwrap();
        assert_eq!(alice.bytes(), 1000);
        assert!(
            shares.of("bob").hold(1000, 1000).is_some(),
            "another identity has its own"
        );
        drop(first);
        assert_eq!(alice.bytes(), 400);
        drop(second);
        assert_eq!(alice.bytes(), 0);
    }
}
