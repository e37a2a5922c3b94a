//! The link's subscriber (see `link`): one pub/sub connection for the rooms with local
//! members and the control channel, pinged every second, relinked with backoff.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tracing::{info, warn};

use super::history;
use super::keys;
use super::link::{Command, Link, Outgoing};
use super::within;
use crate::room::{Rooms, WeakRooms};

/// How often the subscriber pings Redis: a dead or stalled link is noticed within this plus
/// the Redis timeout.
const PING_EVERY: Duration = Duration::from_secs(1);

/// The longest wait between two attempts to relink.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The subscriber: see the module docs.
///
/// The outer loop is one link's life: connect, subscribe every room that has local members
/// *now* (the registry is the truth, not the commands that queued while down), then serve
/// commands, publications and pings until the link breaks; then tell every local room, wait
/// and start over.
pub(super) async fn run(link: Arc<Link>, mut commands: mpsc::UnboundedReceiver<Command>, rooms: WeakRooms) {
    let metrics = &link.metrics;
    let mut backoff = Duration::from_millis(100);
    let mut up = false;
    loop {
        if let Ok(pubsub) = within(link.timeout, link.client.get_async_pubsub()).await {
            let (mut sink, mut stream) = pubsub.split();
            let Some(names) = rooms.upgrade().map(|r| r.names()) else {
                return;
            };
            let mut channels: Vec<String> = names.iter().map(|r| keys::room_channel(r)).collect();
            channels.push(keys::CONTROL.to_owned());
            if within(link.timeout, sink.subscribe(&channels)).await.is_ok() {
                let relinked = *link.links.borrow() > 0;
                link.down.store(false, Relaxed);
                link.links.send_modify(|n| *n += 1);
                metrics.redis_up(true);
                if let Some(rooms) = rooms.upgrade() {
                    rooms.set_linked(None, true);
                }
                backoff = Duration::from_millis(100);
                if relinked {
                    info!(rooms = channels.len() - 1, "relinked to redis, rooms resubscribed");
                }
                up = true;
                let mut ping = tokio::time::interval(PING_EVERY);
                ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
                let mut touch = tokio::time::interval((link.keep.ttl / 2).max(Duration::from_secs(1)));
                touch.set_missed_tick_behavior(MissedTickBehavior::Delay);
                // One task owns the subscription: commands (the first or last local member of
                // a room) and publications interleave here, so a subscribe can never race an
                // unsubscribe of the same room.
                loop {
                    tokio::select! {
                                command = commands.recv() => {
                            let (result, room, linked) = match command {
                                None => return,
                                Some(Command::Subscribe(room)) => (within(link.timeout, sink.subscribe(keys::room_channel(&room))).await, room, true),
                                Some(Command::Unsubscribe(room)) => (within(link.timeout, sink.unsubscribe(keys::room_channel(&room))).await, room, false),
                            };
                            if result.is_err() {
                                break;
                            }
                            // Now nothing published to the room can pass this node by.
                            let Some(rooms) = rooms.upgrade() else { return };
                            rooms.set_linked(Some(&room), linked);
                        }
                        // A connection killed server-side, or a Redis that stopped answering,
                        // may never end the stream: a ping that fails within the deadline does.
                        _ = ping.tick() => {
                            if within(link.timeout, sink.ping::<redis::Value>()).await.is_err() {
                                break;
                            }
                        }
                        _ = touch.tick() => {
                            // Connected clients keep their epoch: renew the counters of the
                            // rooms that have members here.
                            let Some(rooms) = rooms.upgrade() else { return };
                            let names = rooms.names();
                            if !names.is_empty() {
                                link.queue(Outgoing::Touch(names));
                            }
                        }
                        message = stream.next() => match message {
                            None => break,
                            Some(message) => {
                                let Some(rooms) = rooms.upgrade() else { return };
                                if message.get_channel_name() == keys::CONTROL {
                                    link.apply_control(message.get_payload_bytes(), &rooms);
                                } else {
                                    dispatch(&rooms, &message);
                                }
                            }
                        },
                    }
                }
            }
        }
        metrics.redis_up(false);
        link.down.store(true, Relaxed);
        if std::mem::take(&mut up) {
            // The link just broke: say so at once to every local room.
            warn!("lost redis; local rooms keep working, other nodes' messages may be missed");
            let Some(rooms) = rooms.upgrade() else { return };
            rooms.set_linked(None, false);
            let notice = crate::messages::lagged_json(None);
            for room in rooms.names() {
                rooms.deliver_local(&room, notice.clone().into());
            }
        }
        metrics.redis_reconnect();
        // While down, the registry is the truth about which rooms to subscribe: queued
        // commands are stale.
        while commands.try_recv().is_ok() {}
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A publication on `wsgate:room:{room}`: `EPOCH\nSEQ\nJSON` (see `history`).
fn dispatch(rooms: &Rooms, message: &redis::Msg) {
    let Some(room) = message.get_channel_name().strip_prefix(keys::ROOM_CHANNEL_PREFIX) else {
        return;
    };
    let Some((epoch, seq, json)) = history::parse(message.get_payload_bytes()) else {
        return;
    };
    rooms.deliver_sequenced(room, epoch, seq, json.into());
}
