//! Rooms across several nodes through Redis pub/sub, and sessions kept in Redis (PROTOCOL.md §8).
//!
//! Each node keeps its rooms as a single node does, but a room's messages travel through
//! Redis: a node subscribes to a room's channel (`wsgate:room:{room}`) when its first local
//! member joins and unsubscribes when the last one leaves, so Redis sends each node only the
//! rooms it has members in. A message is handed to the history script (see
//! `redis_history`), which gives it its `seq`, keeps it for resuming clients and publishes
//! it; every node, the sender's included, delivers it to its members from there. So every
//! node delivers a room's messages in the one order Redis gave them, each exactly once. One
//! connection publishes, in the order the messages were sent, pipelined.
//!
//! When Redis goes away, local rooms keep working: a message that cannot reach Redis is
//! delivered to the members on its own node, without a `seq`. The subscriber reconnects with
//! backoff, resubscribes the rooms that have local members, and counts it
//! (`wsgate_redis_reconnects_total`, `wsgate_redis_up`). The members of every local room are
//! told `{"type":"lagged","missed":null}` the moment the link breaks: messages from other
//! nodes may be missing, and nothing is lost silently.
//!
//! Bounded everywhere: outgoing messages wait in a bounded queue (dropped and counted when
//! Redis cannot keep up). Incoming ones go straight into each room's bounded ring; the reader
//! never waits on a member, so the crate's own unbounded pub/sub buffer only holds what
//! arrived since the reader's last turn.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::control::{self, Control};
use crate::metrics::Metrics;
use crate::redis_history::{self, Keep, channel};
use crate::revocation::Revocations;
use crate::room::{BoxFuture, Bridge, Rooms, Since, Synced, WeakRooms};

pub use crate::redis_sessions::RedisSessionStore;
use crate::redis_sessions::bounded;

/// Prefix of the Redis channel of each room.
const CHANNEL_PREFIX: &str = "wsgate:room:";

/// Outgoing messages that may wait for Redis before new ones are dropped (and counted).
const OUTGOING_QUEUE: usize = 8192;

enum Command {
    Subscribe(String),
    Unsubscribe(String),
}

/// Work for the publishing connection, in order.
enum Outgoing {
    /// A message for a room, without its seq: (room, JSON text).
    Room(String, String),
    /// Renew the history counters of these rooms: they have members here. One entry for all,
    /// so a node with thousands of rooms does not crowd out messages in the queue.
    Touch(Vec<String>),
    /// A control message (`wsgate:control`).
    Control(String),
    /// A revocation to keep for nodes that start later: (key, value, TTL in seconds).
    Store(String, String, u64),
}

/// The link between this node's rooms and Redis. Create it with [`Relay::new`], give it to
/// the room registry as its bridge, then [`Relay::start`] it.
pub(crate) struct Relay {
    node_id: String,
    client: redis::Client,
    commands: mpsc::UnboundedSender<Command>,
    outgoing: mpsc::Sender<Outgoing>,
    /// The receiving ends, until `start` hands them to the tasks.
    pending: Mutex<Option<(mpsc::UnboundedReceiver<Command>, mpsc::Receiver<Outgoing>)>>,
    metrics: Arc<Metrics>,
    keep: Keep,
    /// The subscriber lost Redis and has not got it back. Not set before the first connect,
    /// so the first joins of a node that just started wait for the link instead of missing it.
    down: AtomicBool,
    /// Counts the subscriber's connections to Redis: a publisher connection made before the
    /// latest one may be to a Redis that has since restarted.
    links: AtomicU64,
    /// For the joins' history reads, with the script's hash (the publisher has its own).
    reader: Mutex<Option<(redis::aio::MultiplexedConnection, String)>>,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay through the Redis at `url`. Fails only on a URL that cannot be used; Redis
    /// being down is handled by reconnecting.
    pub(crate) fn new(url: &str, metrics: Arc<Metrics>, keep: Keep) -> Result<Arc<Relay>, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (outgoing, outgoing_rx) = mpsc::channel(OUTGOING_QUEUE);
        // Random per process: the std hasher is seeded from the OS.
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let node_id = format!("{random:016x}{:x}", std::process::id());
        metrics.redis_configured();
        Ok(Arc::new(Relay {
            node_id,
            client,
            commands,
            outgoing,
            pending: Mutex::new(Some((command_rx, outgoing_rx))),
            metrics,
            keep,
            down: AtomicBool::new(false),
            links: AtomicU64::new(0),
            reader: Mutex::new(None),
        }))
    }

    /// Sends `control` to the other nodes, and stores a revocation for `ttl` seconds.
    pub(crate) fn control(&self, control: &Control, ttl: u64) {
        let json = control.to_json();
        if let Some(revoke) = &control.revoke
            && ttl > 0
        {
            self.queue(Outgoing::Store(Control::stored_key(revoke), json.clone(), ttl));
        }
        self.queue(Outgoing::Control(json));
    }

    /// This node's id, which its own control messages carry.
    pub(crate) fn node_id(&self) -> &str {
        &self.node_id
    }

    fn queue(&self, outgoing: Outgoing) {
        if self.outgoing.try_send(outgoing).is_err() {
            self.metrics.relay_dropped(1);
        }
    }

    /// Starts the subscriber and publisher tasks for `rooms`. They end when the rooms do.
    pub(crate) fn start(self: &Arc<Relay>, rooms: WeakRooms, revocations: Revocations) {
        let Some((commands, outgoing)) = self.pending.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        tokio::spawn(subscribe_loop(Arc::clone(self), commands, rooms.clone(), revocations));
        tokio::spawn(publish_loop(Arc::clone(self), outgoing, rooms));
    }

    /// The connection for history reads, made when first needed and again after an error.
    async fn reader(&self) -> Option<(redis::aio::MultiplexedConnection, String)> {
        let cached = self.reader.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if cached.is_some() {
            return cached;
        }
        let connected = connect_with_script(&self.client).await?;
        *self.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(connected.clone());
        Some(connected)
    }
}

impl Bridge for Relay {
    fn opened(&self, room: &str) {
        let _ = self.commands.send(Command::Subscribe(room.to_owned()));
    }

    fn closed(&self, room: &str) {
        let _ = self.commands.send(Command::Unsubscribe(room.to_owned()));
    }

    fn publish(&self, room: &str, json: String) {
        self.queue(Outgoing::Room(room.to_owned(), json));
    }

    fn up(&self) -> bool {
        !self.down.load(Relaxed)
    }

    fn sync<'a>(
        &'a self,
        room: &'a str,
        presence: Option<String>,
        since: Option<&'a Since>,
    ) -> BoxFuture<'a, Option<Synced>> {
        Box::pin(async move {
            if !self.up() {
                return None;
            }
            // Twice only if the cached connection had died (with a Redis that has since
            // restarted): then the script never ran. After a timeout it may have run, and
            // running it again would publish the join twice.
            for attempt in 0..2 {
                let (mut conn, script) = self.reader().await?;
                match bounded(self.keep.sync(&mut conn, &script, room, presence.as_deref(), since)).await {
                    Ok(synced) => return Some(synced),
                    Err(e) => {
                        *self.reader.lock().unwrap_or_else(|e| e.into_inner()) = None;
                        if attempt == 1 || !(e.is_connection_dropped() || e.is_connection_refusal()) {
                            warn!(error = %e, "reading room history from redis failed");
                            return None;
                        }
                    }
                }
            }
            None
        })
    }
}

/// Publishes queued messages in order, a pipeline per batch, over one connection. While
/// Redis cannot be reached, room messages go to this node's members only (without a seq).
async fn publish_loop(relay: Arc<Relay>, mut outgoing: mpsc::Receiver<Outgoing>, rooms: WeakRooms) {
    let metrics = &relay.metrics;
    let mut connection = None;
    let mut made_at_link = 0;
    let mut batch = Vec::with_capacity(256);
    while outgoing.recv_many(&mut batch, 256).await > 0 {
        let link = relay.links.load(Relaxed);
        if relay.down.load(Relaxed) || link != made_at_link {
            // The subscriber saw the link break (or come back): a write on the old connection
            // would fail, perhaps only after the timeout, and lose the batch.
            connection = None;
        }
        if connection.is_none() {
            connection = connect_with_script(&relay.client).await;
            made_at_link = link;
        }
        let Some((conn, script)) = &mut connection else {
            // Nothing of this batch reached Redis: local members still get the messages.
            metrics.relay_dropped(batch.len() as u64);
            let Some(rooms) = rooms.upgrade() else { return };
            for outgoing in batch.drain(..) {
                if let Outgoing::Room(room, json) = outgoing {
                    rooms.deliver_local(&room, json.into());
                }
            }
            continue;
        };
        let sent = batch.len() as u64;
        let mut pipe = redis::pipe();
        for outgoing in batch.drain(..) {
            match outgoing {
                Outgoing::Room(room, json) => relay.keep.publish(&mut pipe, script, &room, &json),
                Outgoing::Touch(rooms) => rooms.iter().for_each(|room| relay.keep.touch(&mut pipe, room)),
                Outgoing::Control(json) => {
                    pipe.cmd("PUBLISH").arg(control::CHANNEL).arg(json).ignore();
                }
                Outgoing::Store(key, value, ttl) => {
                    pipe.cmd("SET").arg(key).arg(value).arg("EX").arg(ttl).ignore();
                }
            }
        }
        if let Err(e) = bounded(pipe.query_async::<()>(conn)).await {
            // Sent, but how much of it ran is unknown: count the whole batch as lost rather
            // than risk delivering a message twice.
            warn!(error = %e, "publishing to redis failed");
            metrics.relay_dropped(sent);
            connection = None;
        }
    }
}

/// A connection with the history script loaded, and the script's hash.
async fn connect_with_script(client: &redis::Client) -> Option<(redis::aio::MultiplexedConnection, String)> {
    let mut conn = bounded(client.get_multiplexed_async_connection()).await.ok()?;
    let script = bounded(redis_history::load(&mut conn)).await.ok()?;
    Some((conn, script))
}

/// Keeps a subscription per local room and hands what other nodes publish to local members.
///
/// The outer loop is one connection's life: connect, subscribe every room that has local
/// members *now* (the registry is the truth, not the commands that queued while down), then
/// serve commands and publications until the link breaks. Then it tells every local room
/// (`lagged`, `missed: null`), waits with exponential backoff (100 ms doubling to 5 s, so a
/// Redis that restarts is not hammered by every node at once) and starts over. It ends when
/// the rooms are dropped, i.e. when the server stops.
async fn subscribe_loop(
    relay: Arc<Relay>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    rooms: WeakRooms,
    revocations: Revocations,
) {
    let (client, node_id, metrics) = (&relay.client, relay.node_id.as_str(), &relay.metrics);
    let mut backoff = Duration::from_millis(100);
    let mut ever_up = false;
    let mut up = false;
    loop {
        if let Ok(pubsub) = bounded(client.get_async_pubsub()).await {
            let (mut sink, mut stream) = pubsub.split();
            let Some(names) = rooms.upgrade().map(|r| r.names()) else {
                return;
            };
            let mut channels: Vec<String> = names.iter().map(|r| channel(r)).collect();
            channels.push(control::CHANNEL.to_owned());
            if bounded(sink.subscribe(&channels)).await.is_ok() {
                // Revocations made while this node was away (or before it started).
                load_revocations(client, &revocations).await;
                relay.links.fetch_add(1, Relaxed);
                relay.down.store(false, Relaxed);
                metrics.redis_up(true);
                if let Some(rooms) = rooms.upgrade() {
                    rooms.set_linked(None, true);
                }
                backoff = Duration::from_millis(100);
                if ever_up {
                    info!(rooms = channels.len(), "reconnected to redis, rooms resubscribed");
                }
                ever_up = true;
                up = true;
                // One task owns the subscription: commands (join/leave of a room's first or last
                // local member) and publications interleave here, so a subscribe can never race
                // an unsubscribe of the same room.
                let mut touch = tokio::time::interval((relay.keep.ttl / 2).max(Duration::from_secs(1)));
                loop {
                    tokio::select! {
                        command = commands.recv() => {
                            let (result, room, linked) = match command {
                                None => return, // the rooms are gone: the server stopped
                                Some(Command::Subscribe(room)) => (bounded(sink.subscribe(channel(&room))).await, room, true),
                                Some(Command::Unsubscribe(room)) => (bounded(sink.unsubscribe(channel(&room))).await, room, false),
                            };
                            if result.is_err() {
                                break;
                            }
                            // Now nothing published to the room can pass this node by.
                            let Some(rooms) = rooms.upgrade() else { return };
                            rooms.set_linked(Some(&room), linked);
                        }
                        _ = touch.tick() => {
                            // Connected clients keep their epoch: renew the counters of the
                            // rooms that have members here.
                            let Some(rooms) = rooms.upgrade() else { return };
                            relay.queue(Outgoing::Touch(rooms.names()));
                        }
                        message = stream.next() => match message {
                            None => break, // connection lost
                            Some(message) => {
                                let Some(rooms) = rooms.upgrade() else { return };
                                if message.get_channel_name() == control::CHANNEL {
                                    let applied = control::apply(message.get_payload_bytes(), node_id, &rooms, &revocations);
                                    // Published by an application: keep it for later nodes too.
                                    if let Some(control) = applied
                                        && let Some(revoke) = &control.revoke
                                    {
                                        let ttl = revocations.lasts(revoke, control.at.unwrap_or_else(crate::jwt::unix_now));
                                        if ttl > 0 {
                                            relay.queue(Outgoing::Store(Control::stored_key(revoke), control.to_json(), ttl));
                                        }
                                    }
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
        relay.down.store(true, Relaxed);
        if up {
            // The link just broke: say so at once to every local room.
            up = false;
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
        if commands.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Loads every stored revocation (bounded by the Redis timeout per call).
async fn load_revocations(client: &redis::Client, revocations: &Revocations) {
    let Ok(mut conn) = bounded(client.get_multiplexed_async_connection()).await else {
        return;
    };
    let pattern = format!("{}*", control::STORED_PREFIX);
    let mut cursor: u64 = 0;
    loop {
        let scan = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .to_owned();
        let Ok((next, keys)) = bounded(scan.query_async::<(u64, Vec<String>)>(&mut conn)).await else {
            return;
        };
        if !keys.is_empty()
            && let Ok(values) = bounded(
                redis::cmd("MGET")
                    .arg(&keys)
                    .query_async::<Vec<Option<Vec<u8>>>>(&mut conn),
            )
            .await
        {
            for value in values.into_iter().flatten() {
                control::load(&value, revocations);
            }
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// A publication from Redis on `wsgate:room:{room}`: `EPOCH\nSEQ\nJSON` (see `redis_history`).
fn dispatch(rooms: &Rooms, message: &redis::Msg) {
    let Some(room) = message.get_channel_name().strip_prefix(CHANNEL_PREFIX) else {
        return;
    };
    let Some((epoch, seq, json)) = redis_history::parse(message.get_payload_bytes()) else {
        return;
    };
    rooms.deliver_sequenced(room, epoch, seq, json.into());
}
