//! The link's upkeep (see `link`): reloads the stored revocations after every relink, and
//! stores this node's again when Redis lost them (its marker key is gone). It runs beside the
//! subscriber and publisher, so a load of 300,000 entries never holds up delivery.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use super::control::{Control, Refused};
use super::link::{Link, MAX_CONTROL, MAX_TTL};
use super::{connect, keys, within};
use crate::jwt::unix_now;

/// How often the upkeep checks this node's marker key.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Keys per `SCAN`/`MGET` round trip when loading: Redis runs one command at a time, so a
/// chat message waits behind at most one of these; 100 keeps that wait near 0.1 ms (1,000
/// made chat's p99 three times worse during a load of 300,000).
const LOAD_BATCH: usize = 100;

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

/// Loads every stored revocation, applying each batch as it arrives; returns whether it read
/// them all. A batch is a round trip and a few milliseconds of checking signatures, with a
/// yield every [`YIELD_EVERY`], so chat on this node's workers goes on meanwhile.
async fn load(link: &Link, conn: &mut MultiplexedConnection) -> bool {
    let pattern = format!("{}*", keys::REVOKED_PREFIX);
    let (mut cursor, mut loaded, mut closed) = (0u64, 0, 0);
    let mut found = Vec::with_capacity(APPLY_BATCH);
    loop {
        let scan = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(LOAD_BATCH)
            .to_owned();
        let Ok((next, keys)) = within(link.timeout, scan.query_async::<(u64, Vec<String>)>(&mut *conn)).await else {
            return false;
        };
        if !keys.is_empty() {
            let mget = redis::cmd("MGET").arg(&keys).to_owned();
            let Ok(values) = within(link.timeout, mget.query_async::<Vec<Option<Vec<u8>>>>(&mut *conn)).await else {
                return false;
            };
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
        // Applied in chunks far larger than a round trip's: each chunk that changes the list
        // costs one pass over the open connections.
        if found.len() >= APPLY_BATCH || (next == 0 && !found.is_empty()) {
            loaded += found.len();
            closed += link.revocations.revoke_all(&found).0;
            found.clear();
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    info!(revocations = loaded, closed, "loaded the stored revocations");
    true
}
