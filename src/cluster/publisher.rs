//! The link's publisher (see `link`): sends, pipelined and in order, first what waits in the
//! control outbox, then room messages through the history script; while Redis is away, room
//! messages reach this node's members only.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tracing::warn;

use super::link::{Link, MAX_TTL, Outgoing};
use super::{keys, within};
use crate::jwt::unix_now;
use crate::metrics::Metrics;
use crate::room::WeakRooms;

/// The publisher: see the module docs. A pipeline per turn, never an empty one.
pub(super) async fn run(link: Arc<Link>, mut outgoing: mpsc::Receiver<Outgoing>, rooms: WeakRooms) {
    let metrics = &link.metrics;
    let mut links = link.links.subscribe();
    let mut connection = None;
    let mut made_at_link = 0;
    let mut batch = Vec::with_capacity(256);
    // While revocations wait and Redis refuses them (down, or out of memory), try again.
    let mut retry = tokio::time::interval(Duration::from_millis(500));
    retry.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Set when a turn confirmed outbox entries and more wait: the next turn goes at once.
    let mut draining = false;
    loop {
        let waiting = link.outbox.len() > 0;
        if !std::mem::take(&mut draining) {
            tokio::select! {
                received = outgoing.recv_many(&mut batch, 256) => if received == 0 { return },
                _ = link.outbox.arrived.notified() => {}
                // A new link: what waits in the outbox goes first, now.
                _ = links.changed() => {}
                _ = retry.tick(), if waiting => {}
            }
        }
        let entries = link.outbox.oldest(256);
        if entries.is_empty() && batch.is_empty() {
            continue;
        }
        let current = *links.borrow_and_update();
        if link.down.load(Relaxed) || current != made_at_link {
            // The subscriber saw the link break (or come back): a write on the old connection
            // would fail, perhaps only after the timeout, and lose the batch.
            connection = None;
        }
        if connection.is_none() && current > 0 && !link.down.load(Relaxed) {
            connection = link.connect_with_script().await;
            made_at_link = current;
        }
        let Some((conn, script)) = &mut connection else {
            // Nothing of this batch reached Redis: local members still get the messages, and
            // the outbox keeps its entries for the next link.
            deliver_locally(&rooms, &mut batch, metrics);
            continue;
        };
        let sent = batch.len() as u64;
        let mut pipe = redis::pipe();
        let now = unix_now();
        for entry in &entries {
            let ttl = entry.until.saturating_sub(now).min(MAX_TTL);
            if ttl > 0 {
                pipe.cmd("SET")
                    .arg(&entry.key)
                    .arg(&entry.value)
                    .arg("EX")
                    .arg(ttl)
                    .ignore();
            }
            if entry.publish {
                pipe.cmd("PUBLISH").arg(keys::CONTROL).arg(&entry.value).ignore();
            }
        }
        for outgoing in batch.drain(..) {
            match outgoing {
                Outgoing::Room(room, json) => link.keep.publish(&mut pipe, script, &room, &json),
                Outgoing::Touch(rooms) => rooms.iter().for_each(|room| link.keep.touch(&mut pipe, room)),
            }
        }
        // Every entry may have expired meanwhile: then there is nothing to send.
        if pipe.cmd_iter().next().is_some()
            && let Err(e) = within(link.timeout, pipe.query_async::<()>(conn)).await
        {
            // Sent, but how much of it ran is unknown: count the room messages as lost rather
            // than risk delivering one twice. The outbox keeps its entries: sending them again
            // is harmless.
            warn!(error = %e, waiting = entries.len(), "publishing to redis failed");
            metrics.relay_dropped(sent);
            connection = None;
            continue;
        }
        if let Some(last) = entries.last() {
            link.outbox.confirm(last.ticket);
            draining = link.outbox.len() > 0;
        }
    }
}

/// Room messages that cannot reach Redis go to this node's members only, without a seq.
fn deliver_locally(rooms: &WeakRooms, batch: &mut Vec<Outgoing>, metrics: &Metrics) {
    metrics.relay_dropped(batch.len() as u64);
    let Some(rooms) = rooms.upgrade() else {
        batch.clear();
        return;
    };
    for outgoing in batch.drain(..) {
        if let Outgoing::Room(room, json) = outgoing {
            rooms.deliver_local(&room, json.into());
        }
    }
}
