//! The control outbox (PROTOCOL.md §12): revocations this node made, waiting to be stored in
//! Redis and published to the other nodes.
//!
//! A revocation is a security promise, so unlike a chat message it is never dropped because
//! Redis is away: it waits here, in order, and the publisher sends what waits before anything
//! else every time it has a connection, removing an entry only once Redis confirmed it. The
//! outbox is bounded (`--control-outbox`): a full one refuses the new revocation, which the
//! admin API answers `503` (the revocation still applies on this node).
//!
//! Sending an entry twice (confirmation lost in a timeout) is harmless: storing is a `SET` of
//! the same key and value, and applying a revocation twice closes nothing more.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// One revocation to store and publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Its place in the order, from 1.
    pub ticket: u64,
    /// The key it is stored under.
    pub key: String,
    /// The signed envelope, stored and published as is.
    pub value: String,
    /// Until when it must be kept (Unix seconds): the TTL is computed when it is sent.
    pub until: i64,
    /// Publish it too (a node's own revocation), or only store it (an application's).
    pub publish: bool,
}

/// The outbox refused an entry: it holds as many as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Outbox {
    inner: Mutex<Inner>,
    /// Wakes the publisher when an entry arrives.
    pub arrived: Notify,
    /// The last ticket Redis confirmed: admin requests wait on it.
    confirmed: watch::Sender<u64>,
}

#[derive(Debug)]
struct Inner {
    entries: VecDeque<Entry>,
    capacity: usize,
    last_ticket: u64,
}

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            inner: Mutex::new(Inner {
                entries: VecDeque::new(),
                capacity,
                last_ticket: 0,
            }),
            arrived: Notify::new(),
            confirmed: watch::Sender::new(0),
        }
    }

    /// Queues an entry; returns its ticket.
    pub fn push(&self, key: String, value: String, until: i64, publish: bool) -> Result<u64, Full> {
        let mut inner = self.lock();
        if inner.entries.len() >= inner.capacity {
            return Err(Full);
        }
        inner.last_ticket += 1;
        let ticket = inner.last_ticket;
        inner.entries.push_back(Entry {
            ticket,
            key,
            value,
            until,
            publish,
        });
        drop(inner);
        self.arrived.notify_one();
        Ok(ticket)
    }

    /// The oldest `max` entries, in order, left in place until [`Outbox::confirm`].
    pub fn oldest(&self, max: usize) -> Vec<Entry> {
        self.lock().entries.iter().take(max).cloned().collect()
    }

    /// Redis confirmed every entry up to `ticket`: they leave the outbox.
    pub fn confirm(&self, ticket: u64) {
        let mut inner = self.lock();
        while inner.entries.front().is_some_and(|e| e.ticket <= ticket) {
            inner.entries.pop_front();
        }
        drop(inner);
        self.confirmed.send_if_modified(|confirmed| {
            let newer = ticket > *confirmed;
            *confirmed = (*confirmed).max(ticket);
            newer
        });
    }

    /// Entries waiting now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether `ticket` is confirmed within `wait`.
    pub async fn confirmed_within(&self, ticket: u64, wait: Duration) -> bool {
        let mut confirmed = self.confirmed.subscribe();
        let done = confirmed.wait_for(|c| *c >= ticket);
        matches!(tokio::time::timeout(wait, done).await, Ok(Ok(_)))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every statement leaves the queue consistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What happens next, in a model of a node, its link and Redis.
    #[derive(Debug, Clone)]
    enum Step {
        /// A revocation is made.
        Revoke,
        LinkUp,
        LinkDown,
        /// The publisher takes a turn: with the link up it sends the oldest `n` entries;
        /// `lost` says the confirmation is lost (a timeout after Redis ran them).
        Publish {
            n: usize,
            lost: bool,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => Just(Step::Revoke),
            1 => Just(Step::LinkUp),
            1 => Just(Step::LinkDown),
            3 => (1..5usize, any::<bool>()).prop_map(|(n, lost)| Step::Publish { n, lost }),
        ]
    }

    proptest! {
        /// Any interleaving of link up and down, revocations and publisher turns (with lost
        /// confirmations): once the link is up and the publisher has drained the outbox, Redis
        /// stores every accepted revocation exactly once, first stored in the order made, and
        /// a refused one only when the outbox was full.
        #[test]
        fn every_accepted_revocation_is_stored_once_in_order(steps in prop::collection::vec(step(), 0..200)) {
            let capacity = 8;
            let outbox = Outbox::new(capacity);
            let mut made = Vec::new();
            let mut stored: Vec<String> = Vec::new(); // the order keys first reached Redis
            let mut redis = std::collections::BTreeMap::new();
            let mut up = false;
            let publish = |outbox: &Outbox, n: usize, lost: bool, redis: &mut std::collections::BTreeMap<String, String>, stored: &mut Vec<String>| {
                let batch = outbox.oldest(n);
                for entry in &batch {
                    if redis.insert(entry.key.clone(), entry.value.clone()).is_none() {
                        stored.push(entry.key.clone());
                    }
                }
                if let (Some(last), false) = (batch.last(), lost) {
                    outbox.confirm(last.ticket);
                }
            };
            for (i, step) in steps.into_iter().enumerate() {
                match step {
                    Step::Revoke => {
                        let waiting = outbox.len();
                        match outbox.push(format!("k{i}"), format!("v{i}"), 0, true) {
                            Ok(_) => made.push(format!("k{i}")),
                            Err(Full) => prop_assert_eq!(waiting, capacity),
                        }
                    }
                    Step::LinkUp => up = true,
                    Step::LinkDown => up = false,
                    Step::Publish { n, lost } if up => publish(&outbox, n, lost, &mut redis, &mut stored),
                    Step::Publish { .. } => {}
                }
            }
            while outbox.len() > 0 {
                publish(&outbox, 4, false, &mut redis, &mut stored);
            }
            prop_assert_eq!(&stored, &made);
            prop_assert_eq!(redis.len(), made.len());
        }
    }

    #[tokio::test]
    async fn a_waiter_hears_of_its_confirmation_and_times_out_without_one() {
        let outbox = Outbox::new(2);
        let first = outbox.push("a".into(), "1".into(), 0, true).unwrap();
        let second = outbox.push("b".into(), "2".into(), 0, true).unwrap();
        assert_eq!(outbox.push("c".into(), "3".into(), 0, true), Err(Full));
        outbox.confirm(first);
        assert!(outbox.confirmed_within(first, Duration::from_secs(5)).await);
        assert!(!outbox.confirmed_within(second, Duration::from_millis(10)).await);
        assert_eq!(outbox.oldest(5).len(), 1);
    }
}
