//! Sessions that end early (PROTOCOL.md §9): the revocation list, and the registry of open
//! connections that lets a revocation reach them.
//!
//! A revocation names a token (`jti`), a user (every credential of that `sub` issued before
//! the revocation), or a session id. The list refuses such credentials at the handshake, and
//! the registry closes the open connections that used them (`4401`, `revoked` or `session
//! ended`). Entries expire: a `jti` when its token would have expired anyway, a user or a
//! session after `revocation_ttl`. The list therefore never grows without bound; its size is
//! exported as `wsgate_revocations`.
//!
//! Cost: one registry entry per open connection (a few strings and a `oneshot` sender, about
//! 150 bytes). A revocation scans every open connection under one lock: about a millisecond
//! per 100,000, and revocations are rare.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::auth::Identity;
use crate::close::Close;
use crate::jwt::unix_now;

mod revoke;

pub use revoke::Revoke;
pub(crate) use revoke::json_error;

/// The revocation list and the open connections. Cloning gives another handle to the same.
///
/// A server has one, given to its gate (which refuses revoked credentials) and to its
/// cluster (through which its handle and the admin API revoke, here and on other nodes).
///
/// ```
/// use wsgate::revocation::{Revocations, Revoke};
///
/// let revocations = Revocations::new(60, 86_400);
/// revocations.revoke(&Revoke::User { user: "alice".into() });
/// assert_eq!(revocations.len(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct Revocations {
    inner: Arc<Mutex<Inner>>,
    leeway: i64,
    ttl: i64,
}

#[derive(Debug, Default)]
struct Inner {
    /// `jti` → until (Unix seconds).
    jtis: HashMap<String, i64>,
    /// user → (revoked at, until).
    users: HashMap<String, (i64, i64)>,
    /// session id → until.
    sessions: HashMap<String, i64>,
    /// Open connections, by a number of their own.
    open: HashMap<u64, Open>,
    /// When expired entries were last dropped (Unix seconds): at most once a second, so a
    /// load of many entries in small batches does not walk the whole list per batch.
    purged_at: i64,
    next_id: u64,
}

#[derive(Debug)]
struct Open {
    user: String,
    jti: Option<String>,
    issued_at: Option<i64>,
    session: Option<String>,
    close: oneshot::Sender<Close>,
}

/// An open connection's entry; dropping it removes the entry.
#[derive(Debug)]
pub(crate) struct Registration {
    revocations: Revocations,
    id: u64,
    /// The connection came in with a session cookie: it lives as long as the session does,
    /// so it cannot switch to a token's expiry by `refresh` (PROTOCOL.md §12).
    pub(crate) session: bool,
}

impl Revocations {
    /// `leeway` for `jti` entries, `ttl` for user and session entries, in seconds.
    pub fn new(leeway: u64, ttl: u64) -> Revocations {
        let secs = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
        Revocations {
            inner: Arc::default(),
            leeway: secs(leeway),
            ttl: secs(ttl),
        }
    }

    /// Adds `revoke` to the list and closes the open connections it names; returns how many.
    pub fn revoke(&self, revoke: &Revoke) -> usize {
        self.revoke_at(revoke, unix_now())
    }

    /// Until when (Unix seconds) the entry for `revoke`, made at `at`, lasts: the one rule
    /// for every copy of it (this list, the Redis key's TTL, a re-stored copy).
    ///
    /// A `jti` entry lasts until its token could no longer be used anyway, but never longer
    /// than a user's would (`--revocation-ttl`): an `exp` of `i64::MAX` would otherwise hold a
    /// place in the list, and in Redis, forever. A token that outlives that is an operator's
    /// choice of lifetimes; revoke its user instead (PROTOCOL.md §9).
    pub(crate) fn until(&self, revoke: &Revoke, at: i64) -> i64 {
        let longest = at.saturating_add(self.ttl);
        match revoke {
            Revoke::Jti { exp, .. } => exp.saturating_add(self.leeway).min(longest),
            Revoke::User { .. } | Revoke::Session { .. } => longest,
        }
    }

    /// [`Revocations::revoke`] as made at time `at` (Unix seconds): another node's
    /// revocation, or one stored in Redis, keeps its own moment, so a user's credentials
    /// issued after it still work here.
    pub(crate) fn revoke_at(&self, revoke: &Revoke, at: i64) -> usize {
        self.revoke_all(std::slice::from_ref(&(revoke.clone(), at))).0
    }

    /// Adds every `(revocation, made at)` and closes the open connections they name; returns
    /// (connections closed, entries that changed the list). One purge and one pass over the
    /// open connections per chunk of entries that changed anything, so loading N stored
    /// revocations costs O(N + open connections), not N passes; the lock is let go between
    /// chunks so handshakes are not held up by a long load.
    ///
    /// Entries only ever move forward: an older copy of a revocation (a replayed control
    /// message, a node that was cut off) never shortens or moves back a newer one, and one
    /// already over is not added.
    pub(crate) fn revoke_all(&self, revokes: &[(Revoke, i64)]) -> (usize, usize) {
        const CHUNK: usize = 10_000;
        let (mut closed, mut changed) = (0, 0);
        let now = unix_now();
        for chunk in revokes.chunks(CHUNK) {
            let mut inner = self.lock();
            inner.purge(now);
            let before = changed;
            for (revoke, at) in chunk {
                let until = self.until(revoke, *at);
                if until <= now {
                    continue;
                }
                let later = |old: &mut i64, new: i64| {
                    let moved = new > *old;
                    *old = (*old).max(new);
                    moved
                };
                let moved = match revoke {
                    Revoke::Jti { jti, .. } => later(inner.jtis.entry(jti.clone()).or_insert(i64::MIN), until),
                    Revoke::User { user } => {
                        let (old_at, old_until) = inner.users.entry(user.clone()).or_insert((i64::MIN, i64::MIN));
                        later(old_at, *at) | later(old_until, until)
                    }
                    Revoke::Session { session } => {
                        later(inner.sessions.entry(session.clone()).or_insert(i64::MIN), until)
                    }
                };
                changed += usize::from(moved);
            }
            if changed > before {
                closed += inner.close_revoked();
            }
        }
        (closed, changed)
    }

    /// Every unexpired entry as `(revocation, made at)`: what a node stores again in a Redis
    /// that lost them.
    pub fn held(&self) -> Vec<(Revoke, i64)> {
        let mut inner = self.lock();
        inner.purge(unix_now());
        let jtis = inner.jtis.iter().map(|(jti, until)| {
            let exp = until.saturating_sub(self.leeway);
            (Revoke::Jti { jti: jti.clone(), exp }, exp)
        });
        let users = inner
            .users
            .iter()
            .map(|(user, (at, _))| (Revoke::User { user: user.clone() }, *at));
        let sessions = inner.sessions.iter().map(|(session, until)| {
            let at = until.saturating_sub(self.ttl);
            (
                Revoke::Session {
                    session: session.clone(),
                },
                at,
            )
        });
        jtis.chain(users).chain(sessions).collect()
    }

    /// Why `identity` (with `session`, if it came with a session cookie) may not connect:
    /// `None` if it may.
    pub fn check(&self, identity: &Identity, session: Option<&str>) -> Option<Close> {
        let inner = self.lock();
        inner.verdict(&identity.username, identity.jti.as_deref(), identity.issued_at, session)
    }

    /// Registers an open connection; the receiver fires with the close a revocation calls for.
    /// Checked again here, under the same lock as [`Revocations::revoke`], so a revocation
    /// that lands between the handshake's check and this call is not missed.
    pub(crate) fn register(
        &self,
        identity: &Identity,
        session: Option<&str>,
    ) -> Result<(Registration, oneshot::Receiver<Close>), Close> {
        let (close, closed) = oneshot::channel();
        let mut inner = self.lock();
        if let Some(revoked) = inner.verdict(&identity.username, identity.jti.as_deref(), identity.issued_at, session) {
            return Err(revoked);
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.open.insert(
            id,
            Open {
                user: identity.username.clone(),
                jti: identity.jti.clone(),
                issued_at: identity.issued_at,
                session: session.map(str::to_owned),
                close,
            },
        );
        let registration = Registration {
            revocations: self.clone(),
            id,
            session: session.is_some(),
        };
        Ok((registration, closed))
    }

    /// The open connections that came in with a session and fall in `slot` of `slots`: the
    /// sweep checks one slot a second, so each session is checked once per `slots` seconds
    /// and a node's lookups are spread evenly rather than all at once.
    pub(crate) fn sessions_in_slot(&self, slot: u64, slots: u64) -> Vec<(u64, String)> {
        let inner = self.lock();
        inner
            .open
            .iter()
            .filter(|(id, _)| **id % slots.max(1) == slot)
            .filter_map(|(id, open)| Some((*id, open.session.clone()?)))
            .collect()
    }

    /// Closes open connection `id` with `close`, if it is still open.
    pub(crate) fn end(&self, id: u64, close: Close) {
        if let Some(open) = self.lock().open.remove(&id) {
            let _ = open.close.send(close);
        }
    }

    /// Entries in the list now.
    pub fn len(&self) -> usize {
        let now = unix_now();
        let mut inner = self.lock();
        inner.purge(now);
        // Entries over since this second's purge do not count.
        let live = |until: &i64| *until > now;
        inner.jtis.values().filter(|u| live(u)).count()
            + inner.users.values().filter(|(_, u)| live(u)).count()
            + inner.sessions.values().filter(|u| live(u)).count()
    }

    /// Whether the list holds no entry now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every statement leaves the maps consistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Registration {
    /// Why a credential offered in a refresh is revoked, if it is.
    pub(crate) fn check(&self, identity: &Identity) -> Option<Close> {
        self.revocations.check(identity, None)
    }

    /// A refreshed credential replaces the one the connection came with.
    pub(crate) fn refreshed(&self, identity: &Identity) {
        let mut inner = self.revocations.lock();
        if let Some(open) = inner.open.get_mut(&self.id) {
            open.jti = identity.jti.clone();
            open.issued_at = identity.issued_at;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.revocations.lock().open.remove(&self.id);
    }
}

impl Inner {
    /// Entries past their `until` count for nothing even before a purge drops them.
    fn verdict(&self, user: &str, jti: Option<&str>, issued_at: Option<i64>, session: Option<&str>) -> Option<Close> {
        let now = unix_now();
        let live = |until: Option<&i64>| until.is_some_and(|until| *until > now);
        if session.is_some_and(|s| live(self.sessions.get(s))) {
            return Some(Close::SessionEnded);
        }
        if jti.is_some_and(|j| live(self.jtis.get(j))) {
            return Some(Close::Revoked);
        }
        // `iat` has a one-second granularity: a credential issued in the same second as the
        // revocation is revoked too. Missing a token minted just before a logout would be
        // worse than making a login in that same second retry.
        match self.users.get(user) {
            Some((revoked_at, until)) if *until > now && issued_at.is_none_or(|iat| iat <= *revoked_at) => {
                Some(Close::Revoked)
            }
            _ => None,
        }
    }

    /// Closes the open connections the list now covers; returns how many.
    fn close_revoked(&mut self) -> usize {
        let doomed: Vec<(u64, Close)> = self
            .open
            .iter()
            .filter_map(|(id, open)| {
                self.verdict(&open.user, open.jti.as_deref(), open.issued_at, open.session.as_deref())
                    .map(|c| (*id, c))
            })
            .collect();
        for (id, close) in &doomed {
            if let Some(open) = self.open.remove(id) {
                let _ = open.close.send(*close);
            }
        }
        doomed.len()
    }

    fn purge(&mut self, now: i64) {
        if now == self.purged_at {
            return;
        }
        self.purged_at = now;
        self.jtis.retain(|_, until| *until > now);
        self.users.retain(|_, (_, until)| *until > now);
        self.sessions.retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Revoke {
        Revoke::User { user: name.to_owned() }
    }

    #[test]
    fn an_older_copy_never_moves_an_entry_back_and_an_expired_one_is_not_added() {
        let list = Revocations::new(30, 3600);
        let now = unix_now();
        let mut carol = Identity::new("carol");
        carol.issued_at = Some(now - 50);
        assert_eq!(list.revoke_all(&[(user("carol"), now)]), (0, 1));
        // The same again, or one made earlier (a replay, a node that was cut off): no change.
        assert_eq!(
            list.revoke_all(&[(user("carol"), now), (user("carol"), now - 100)]),
            (0, 0)
        );
        assert!(
            list.check(&carol, None).is_some(),
            "a token issued before the newer one stays revoked"
        );
        let jti = |exp| Revoke::Jti { jti: "j".into(), exp };
        assert_eq!(list.revoke_all(&[(jti(now + 600), now)]).1, 1);
        assert_eq!(
            list.revoke_all(&[(jti(now + 60), now)]).1,
            0,
            "a shorter copy does not shorten it"
        );
        assert_eq!(list.revoke_all(&[(jti(now - 600), now)]).1, 0);
        assert_eq!(
            list.revoke_all(&[(
                Revoke::Jti {
                    jti: "old".into(),
                    exp: now - 600
                },
                now
            )])
            .1,
            0
        );
        assert_eq!(list.len(), 2);
    }
}
