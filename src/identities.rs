//! Per-identity limits on this node (PROTOCOL.md §4): how many connections one `sub` may hold
//! open, and how often it may connect.
//!
//! Authentication says *who* is connecting; it does not stop one valid token from holding
//! thousands of sockets (memory, file descriptors, a room each) or from connecting and
//! disconnecting in a loop, which sends every member of a room a `join` and a `leave` each
//! time. Both limits are per node: with several nodes, one identity may hold the limit on each.
//!
//! Memory: one small entry per identity that has a connection open or connected within the
//! last `burst / rate` seconds; the others are swept out as the map grows.

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
}

/// One open connection of an identity; dropping it gives the place back.
#[derive(Debug)]
pub(crate) struct Seat {
    identities: Identities,
    user: String,
}

const MIN_SWEEP_AT: usize = 1024;

impl Identities {
    /// At most `max_open` connections per identity, and `rate` connects per second on average
    /// with bursts of `burst`.
    pub fn new(max_open: usize, rate: u32, burst: u32) -> Identities {
        let inner = Inner {
            users: HashMap::new(),
            sweep_at: MIN_SWEEP_AT,
        };
        Identities {
            inner: Arc::new(Mutex::new(inner)),
            max_open,
            rate,
            burst,
        }
    }

    /// A seat for a new connection of `user`, or why not (`429`).
    pub fn enter(&self, user: &str) -> Result<Seat, Rejection> {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.users.len() >= inner.sweep_at {
            inner.users.retain(|_, u| u.open > 0 || !u.connects.is_full(now));
            inner.sweep_at = (inner.users.len() * 2).max(MIN_SWEEP_AT);
        }
        let entry = inner.users.entry(user.to_owned()).or_insert_with(|| User {
            open: 0,
            connects: TokenBucket::new(self.rate, self.burst),
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
        let identities = Identities::new(2, 1, 3);
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
}
