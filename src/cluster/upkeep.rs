//! The link's upkeep (see `link`): reloads the stored revocations after every relink, and
//! stores this node's again when Redis lost them (its marker key is gone). It runs beside the
//! subscriber and publisher, so a load of 300,000 entries never holds up delivery.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use super::control::{Control, Refused};
use super::link::{Link, MAX_CONTROL, MAX_TTL};
use super::{connect, keys, within};
use crate::jwt::unix_now;
use crate::revocation::Revoke;

/// How often the upkeep checks this node's marker key.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Keys per `SCAN`/`MGET` round trip when loading: Redis runs one command at a time, so a
/// chat message waits behind at most one of these; 50 keeps that wait well under 0.1 ms
/// (1,000 made chat's p99 three times worse during a load of 300,000).
const LOAD_BATCH: usize = 50;

/// Batches fetched ahead of the signature checks: enough for Redis to work while this node
/// checks, not so many that it floods Redis.
const LOAD_AHEAD: usize = 1;

/// What one `MGET` returns: each key's value, or nothing if it expired meanwhile.
type Values = Vec<Option<Vec<u8>>>;

/// Loaded revocations applied at once: each application that changes the list walks the
/// open connections once.
const APPLY_BATCH: usize = 5000;

/// Signatures checked between two yields while loading: a fraction of a millisecond, so a
/// chat message on the same worker never waits longer.
const YIELD_EVERY: usize = 20;

/// Revocations per pipeline when storing them again.
const STORE_BATCH: usize = 5000;

/// The upkeep: see the module docs.
pub(super) async fn run(link: Arc<Link>) {
    let mut links = link.links.subscribe();
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Set by every new link, cleared once a reload went through. Set at first too: the first
    // link may be made before this task subscribed, and then it is not a change.
    let mut reload = true;
    loop {
        tokio::select! {
            _ = links.changed() => reload = true,
            _ = tick.tick() => {}
        }
        if *links.borrow_and_update() == 0 {
            continue; // never linked yet
        }
        let Ok(mut conn) = connect(&link.client, link.timeout).await else {
            continue;
        };
        // First what Redis lost, then what it holds: a node's own entries come back before
        // it reads them.
        let marker = redis::cmd("SET")
            .arg(keys::marker(&link.node_id))
            .arg(1)
            .arg("EX")
            .arg(UPKEEP_EVERY.as_secs() * 12)
            .arg("GET")
            .to_owned();
        match within(link.timeout, marker.query_async::<Option<String>>(&mut conn)).await {
            Ok(Some(_)) => {}
            Ok(None) => store_again(&link, &mut conn).await,
            Err(e) => {
                debug!(error = %e, "redis upkeep failed");
                continue;
            }
        }
        if reload {
            reload = !load(&link, &mut conn).await;
        }
    }
}

/// Stores every revocation this node holds, signed, each with the rest of its TTL.
async fn store_again(link: &Link, conn: &mut MultiplexedConnection) {
    let held = link.revocations.held();
    if held.is_empty() {
        return;
    }
    let now = unix_now();
    for chunk in held.chunks(STORE_BATCH) {
        let mut pipe = redis::pipe();
        for (revoke, at) in chunk {
            let ttl = link.revocations.until(revoke, *at).saturating_sub(now).min(MAX_TTL);
            if ttl > 0 {
                let value = link.signer.seal(&Control::revoke(revoke.clone(), *at, None));
                pipe.cmd("SET")
                    .arg(keys::revoked(revoke))
                    .arg(value)
                    .arg("EX")
                    .arg(ttl)
                    .ignore();
            }
        }
        if let Err(e) = within(link.timeout, pipe.query_async::<()>(&mut *conn)).await {
            warn!(error = %e, "storing revocations again failed; the next check tries again");
            let _ = within(
                link.timeout,
                redis::cmd("DEL")
                    .arg(keys::marker(&link.node_id))
                    .query_async::<()>(&mut *conn),
            )
            .await;
            return;
        }
    }
    info!(
        revocations = held.len(),
        "redis had lost this node's revocations: stored them again"
    );
}

/// Loads every stored revocation; returns whether it read them all. Two halves run side by
/// side in this task: one fetches (each round trip asks for the values of the keys the last
/// `SCAN` found and for the next keys at once), the other checks signatures and applies them,
/// with a yield every [`YIELD_EVERY`], so chat on this node's workers goes on meanwhile. While
/// one batch is checked, Redis and the connection's reader are already on the next.
async fn load(link: &Link, conn: &mut MultiplexedConnection) -> bool {
    let (batches, mut fetched) = mpsc::channel(LOAD_AHEAD);
    let fetch = async move {
        let read_all = fetch(link, conn, &batches).await;
        drop(batches);
        read_all
    };
    let check = async {
        let (mut found, mut loaded, mut closed) = (Vec::with_capacity(APPLY_BATCH), 0, 0);
        while let Some(values) = fetched.recv().await {
            check(link, values, &mut found).await;
            // Applied in chunks far larger than a round trip's: each chunk that changes the
            // list costs one pass over the open connections.
            if found.len() >= APPLY_BATCH {
                loaded += found.len();
                closed += link.revocations.revoke_all(&found).0;
                found.clear();
            }
        }
        loaded += found.len();
        closed += link.revocations.revoke_all(&found).0;
        (loaded, closed)
    };
    let (read_all, (loaded, closed)) = tokio::join!(fetch, check);
    info!(revocations = loaded, closed, "loaded the stored revocations");
    read_all
}

/// Sends the values of every `wsgate:revoked:*` key into `batches`, [`LOAD_BATCH`] keys per
/// round trip; returns whether it read them all.
async fn fetch(link: &Link, conn: &mut MultiplexedConnection, batches: &mpsc::Sender<Values>) -> bool {
    let pattern = format!("{}*", keys::REVOKED_PREFIX);
    // `None` once the scan is over.
    let (mut cursor, mut keys) = (Some(0u64), Vec::<String>::new());
    while cursor.is_some() || !keys.is_empty() {
        // One round trip: the values of the keys the last scan found, and the next keys.
        let mut pipe = redis::pipe();
        if !keys.is_empty() {
            pipe.cmd("MGET").arg(&keys);
        }
        if let Some(cursor) = cursor {
            pipe.cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(LOAD_BATCH);
        }
        let Ok(replies) = within(link.timeout, pipe.query_async::<Vec<redis::Value>>(&mut *conn)).await else {
            return false;
        };
        let mut replies = replies.into_iter();
        if !keys.is_empty() {
            let Some(Ok(values)) = replies.next().map(redis::from_redis_value::<Values>) else {
                return false;
            };
            if batches.send(values).await.is_err() {
                return false;
            }
        }
        (cursor, keys) = match cursor {
            None => (None, Vec::new()),
            Some(_) => {
                let Some(Ok((next, found))) = replies.next().map(redis::from_redis_value::<(u64, Vec<String>)>) else {
                    return false;
                };
                ((next != 0).then_some(next), found)
            }
        };
    }
    true
}

/// Checks the signature of each loaded value and adds the revocations to `found`.
async fn check(link: &Link, values: Values, found: &mut Vec<(Revoke, i64)>) {
    for (i, value) in values.into_iter().flatten().enumerate() {
        if i % YIELD_EVERY == YIELD_EVERY - 1 {
            tokio::task::yield_now().await;
        }
        if value.len() > MAX_CONTROL {
            link.rejected(Refused::Unknown, "stored revocation");
            continue;
        }
        match link.signer.open(&value) {
            Ok(control) => {
                let at = control.made_at();
                match control.revoke {
                    Some(revoke) => found.push((revoke, at)),
                    None => link.rejected(Refused::Unknown, "stored revocation"),
                }
            }
            Err(refused) => link.rejected(refused, "stored revocation"),
        }
    }
}
