//! Rooms across several nodes through Redis pub/sub, and sessions kept in Redis (PROTOCOL.md §8).
//!
//! Each node keeps its rooms exactly as a single node does; the relay adds a second path for
//! room traffic. A node subscribes to a room's channel (`wsgate:room:{room}`) when its first
//! local member joins and unsubscribes when the last one leaves, so Redis sends each node only
//! the rooms it has members in (no pattern subscription to everything). A message goes to the
//! local members directly and is published once, tagged with the node's id; a node drops its
//! own publications when they come back. One connection publishes, in the order the messages
//! were sent, so every sender's order holds on every node.
//!
//! When Redis goes away, local rooms keep working. The subscriber reconnects with backoff,
//! resubscribes the rooms that have local members, and counts it
//! (`wsgate_redis_reconnects_total`, `wsgate_redis_up`). The members of every local room are
//! told `{"type":"lagged","missed":null}` the moment the link breaks: messages from other
//! nodes may be missing, and nothing is lost silently.
//!
//! Bounded everywhere: outgoing messages wait in a bounded queue (dropped and counted when
//! Redis cannot keep up). Incoming ones go straight into each room's bounded broadcast
//! channel; the reader never waits on a member, so the crate's own unbounded pub/sub buffer
//! only holds what arrived since the reader's last turn.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tracing::{info, warn};

use crate::control::{self, Control};
use crate::metrics::Metrics;
use crate::revocation::Revocations;
use crate::room::{Bridge, Rooms, WeakRooms};

pub use crate::redis_sessions::RedisSessionStore;
use crate::redis_sessions::bounded;

/// Prefix of the Redis channel of each room.
const CHANNEL_PREFIX: &str = "wsgate:room:";

/// Outgoing messages that may wait for Redis before new ones are dropped (and counted).
const OUTGOING_QUEUE: usize = 8192;

fn channel(room: &str) -> String {
    format!("{CHANNEL_PREFIX}{room}")
}

enum Command {
    Subscribe(String),
    Unsubscribe(String),
}

/// Work for the publishing connection, in order.
enum Outgoing {
    /// A frame for a room on other nodes: (room, JSON text).
    Room(String, String),
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
    pub(crate) fn new(url: &str, metrics: Arc<Metrics>) -> Result<Arc<Relay>, redis::RedisError> {
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
        tokio::spawn(subscribe_loop(Arc::clone(self), commands, rooms, revocations));
        tokio::spawn(publish_loop(
            self.client.clone(),
            self.node_id.clone(),
            outgoing,
            self.metrics.clone(),
        ));
    }
}

impl Bridge for Relay {
    fn opened(&self, room: &str) {
        let _ = self.commands.send(Command::Subscribe(room.to_owned()));
    }

    fn closed(&self, room: &str) {
        let _ = self.commands.send(Command::Unsubscribe(room.to_owned()));
    }

    fn publish(&self, room: &str, message: &Message) {
        let Message::Text(text) = message else { return };
        self.queue(Outgoing::Room(room.to_owned(), text.to_string()));
    }
}

/// Publishes queued messages in order, a pipeline per batch, over one connection.
async fn publish_loop(
    client: redis::Client,
    node_id: String,
    mut outgoing: mpsc::Receiver<Outgoing>,
    metrics: Arc<Metrics>,
) {
    let mut connection = None;
    let mut batch = Vec::with_capacity(256);
    while outgoing.recv_many(&mut batch, 256).await > 0 {
        if connection.is_none() {
            connection = bounded(client.get_multiplexed_async_connection()).await.ok();
        }
        let Some(conn) = &mut connection else {
            metrics.relay_dropped(batch.len() as u64);
            batch.clear();
            continue;
        };
        let sent = batch.len() as u64;
        let mut pipe = redis::pipe();
        for outgoing in batch.drain(..) {
            match outgoing {
                Outgoing::Room(room, text) => pipe
                    .cmd("PUBLISH")
                    .arg(channel(&room))
                    .arg(format!("{node_id}\n{text}")),
                Outgoing::Control(json) => pipe.cmd("PUBLISH").arg(control::CHANNEL).arg(json),
                Outgoing::Store(key, value, ttl) => pipe.cmd("SET").arg(key).arg(value).arg("EX").arg(ttl),
            }
            .ignore();
        }
        if let Err(e) = bounded(pipe.query_async::<()>(conn)).await {
            // The whole batch may be lost: count it, so the loss is visible.
            warn!(error = %e, "publishing to redis failed");
            metrics.relay_dropped(sent);
            connection = None;
        }
    }
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
                metrics.redis_up(true);
                backoff = Duration::from_millis(100);
                if ever_up {
                    info!(rooms = channels.len(), "reconnected to redis, rooms resubscribed");
                }
                ever_up = true;
                up = true;
                // One task owns the subscription: commands (join/leave of a room's first or last
                // local member) and publications interleave here, so a subscribe can never race
                // an unsubscribe of the same room.
                loop {
                    tokio::select! {
                        command = commands.recv() => {
                            let result = match command {
                                None => return, // the rooms are gone: the server stopped
                                Some(Command::Subscribe(room)) => bounded(sink.subscribe(channel(&room))).await,
                                Some(Command::Unsubscribe(room)) => bounded(sink.unsubscribe(channel(&room))).await,
                            };
                            if result.is_err() {
                                break;
                            }
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
                                    dispatch(&rooms, node_id, &message);
                                }
                            }
                        },
                    }
                }
            }
        }
        metrics.redis_up(false);
        if up {
            // The link just broke: say so at once to every local room.
            up = false;
            warn!("lost redis; local rooms keep working, other nodes' messages may be missed");
            let Some(rooms) = rooms.upgrade() else { return };
            let notice = crate::messages::lagged(None);
            for room in rooms.names() {
                rooms.deliver_local(&room, notice.clone());
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

/// A publication from Redis: `NODE_ID\nJSON` on `wsgate:room:{room}`.
fn dispatch(rooms: &Rooms, node_id: &str, message: &redis::Msg) {
    let Some(room) = message.get_channel_name().strip_prefix(CHANNEL_PREFIX) else {
        return;
    };
    let Ok(payload) = std::str::from_utf8(message.get_payload_bytes()) else {
        return;
    };
    let Some((from, json)) = payload.split_once('\n') else {
        return;
    };
    if from == node_id {
        return; // our own, already delivered locally
    }
    rooms.deliver_local(room, Message::text(json));
}
