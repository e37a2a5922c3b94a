//! Per-identity limits on this node (PROTOCOL.md §4, §10): how many connections one `sub` may
//! hold open, how often it may connect, and how many bytes its resumes may replay.
//!
//! Authentication says *who* is connecting; it does not stop one valid token from holding
//! thousands of sockets (memory, file descriptors, a room each) or from connecting and
//! disconnecting in a loop, which sends every member of a room a `join` and a `leave` each
//! time. Both limits are per node: with several nodes, one identity may hold the limit on each.
//!
//! A resume replays up to a room's whole history (100 frames of up to 64 KiB by default) for
//! a ~230-byte request, so one token reconnecting with `?since=` in a loop would make the
//! server send far more than it receives. Each identity has a byte budget for replays.
//!
//! Memory: one small entry per identity that has a connection open, connected within the
//! last `burst / rate` seconds, or replayed within the last second; the others are swept out
//! as the map grows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use crate::bucket::TokenBucket;
use crate::rejection::Rejection;

/// The registry. Cloning gives another handle to the same counts.
#[derive(Debug, Clone)]
pub(crate) struct Identities {
    inner: Arc<Mutex<Inner>>,
    max_open: usize,
    rate: u32,
    burst: u32,
    replay_bytes: u32,
}

#[derive(Debug)]
struct Inner {
    users: HashMap<String, User>,
    /// Sweep idle entries when the map grows past this.
    sweep_at: usize,
}

#[derive(Debug)]
struct User {
    open: usize,
    connects: TokenBucket,
    /// Bytes of replay left (see the module docs).
    replays: TokenBucket,
}

/// One open connection of an identity; dropping it gives the place back.
#[derive(Debug)]
pub(crate) struct Seat {
    identities: Identities,
    user: String,
}

const MIN_SWEEP_AT: usize = 1024;

impl Identities {
    /// At most `max_open` connections per identity, `rate` connects per second on average
    /// with bursts of `burst`, and `replay_bytes` of replay per second (with bursts of as much).
    pub fn new(max_open: usize, (rate, burst): (u32, u32), replay_bytes: u32) -> Identities {
        let inner = Inner {
            users: HashMap::new(),
            sweep_at: MIN_SWEEP_AT,
        };
        Identities {
            inner: Arc::new(Mutex::new(inner)),
            max_open,
            rate,
            burst,
            replay_bytes,
        }
    }

    /// A seat for a new connection of `user`, or why not (`429`).
    pub fn enter(&self, user: &str) -> Result<Seat, Rejection> {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.users.len() >= inner.sweep_at {
            inner
                .users
                .retain(|_, u| u.open > 0 || !u.connects.is_full(now) || !u.replays.is_full(now));
            inner.sweep_at = (inner.users.len() * 2).max(MIN_SWEEP_AT);
        }
        let entry = inner.users.entry(user.to_owned()).or_insert_with(|| User {
            open: 0,
            connects: TokenBucket::new(self.rate, self.burst),
            replays: TokenBucket::new(self.replay_bytes, self.replay_bytes),
        });
        if entry.open >= self.max_open {
            return Err(Rejection::TooMany("too many open connections for this user".into()));
        }
        if !entry.connects.take(now) {
            return Err(Rejection::TooMany("connecting too often for this user".into()));
        }
        entry.open += 1;
        Ok(Seat {
            identities: self.clone(),
            user: user.to_owned(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every statement leaves the map consistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Seat {
    /// Whether this identity may be sent a replay of `bytes` now; if so, they are counted.
    pub fn replay(&self, bytes: usize) -> bool {
        let mut inner = self.identities.lock();
        inner
            .users
            .get_mut(&self.user)
            .is_some_and(|user| user.replays.take_n(Instant::now(), bytes))
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut inner = self.identities.lock();
        if let Some(user) = inner.users.get_mut(&self.user) {
            user.open -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn open_connections_and_connect_rate_are_bounded_per_user() {
        let identities = Identities::new(2, (1, 3), 1000);
        let a = identities.enter("alice").unwrap();
        let b = identities.enter("alice").unwrap();
        assert!(
            identities
                .enter("alice")
                .unwrap_err()
                .to_string()
                .contains("open connections")
        );
        assert!(identities.enter("bob").is_ok(), "another user is not affected");
        drop(a);
        drop(identities.enter("alice").unwrap());
        // Three connects were the burst: the fourth must wait for the rate.
        assert!(identities.enter("alice").unwrap_err().to_string().contains("too often"));
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let c = identities.enter("alice").unwrap();
        drop((b, c));
    }

    #[tokio::test(start_paused = true)]
    async fn replays_are_bounded_in_bytes_per_second_per_user_and_never_partial() {
        let identities = Identities::new(8, (100, 100), 1000);
        let alice = identities.enter("alice").unwrap();
        let again = identities.enter("alice").unwrap();
        assert!(alice.replay(600));
        // The same user on another connection shares the budget; all or nothing.
        assert!(!again.replay(600));
        assert!(again.replay(400));
        assert!(!alice.replay(1));
        let bob = identities.enter("bob").unwrap();
        assert!(bob.replay(1000), "another user is not affected");
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
        assert!(alice.replay(500));
        assert!(!alice.replay(1001), "more than a second's budget never passes");
    }
}
