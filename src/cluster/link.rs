//! The link between this node and Redis (PROTOCOL.md §8, §12): three tasks, each owning one
//! connection and one job, all started and stopped with the server.
//!
//! - **Subscriber.** One pub/sub connection: a channel per room with local members (subscribed
//!   when the first one joins, unsubscribed when the last leaves), plus `wsgate:control`. It
//!   hands room messages to local members and carries out signed control messages. It pings
//!   every second, so a connection killed server-side or a Redis that stopped answering is
//!   noticed within the Redis timeout; then it tells every local room (`lagged`, `missed:
//!   null`), relinks with backoff (100 ms doubling to 2 s) and resubscribes what the registry
//!   holds *then*.
//! - **Publisher.** Sends, pipelined and in order: first whatever waits in the control outbox
//!   (revocations are never dropped: see `outbox`), then room messages, each through the
//!   history script, which gives it its `seq` and publishes it; every node, the sender's
//!   included, delivers it from the subscription. So every node delivers a room's messages
//!   in the one order Redis gave them, each once. While Redis is away, room messages reach
//!   this node's members only, without a `seq`, and are counted (`wsgate_relay_dropped_total`).
//! - **Upkeep.** After every relink, reloads the stored revocations and closes the open
//!   connections they cover; every 5 s, checks this node's marker key, and when Redis lost
//!   it (restarted empty, flushed, evicted) stores again every revocation this node holds.
//!   It runs beside the other two, so a load of 300,000 entries never holds up delivery.
//!
//! Every Redis call has a deadline (`--redis-timeout`). Bounded everywhere: outgoing room
//! messages wait in a bounded queue (dropped and counted when Redis cannot keep up), the
//! outbox is bounded, and incoming messages go straight into each room's bounded ring.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use super::control::{Control, Refused, Signer};
use super::history::{self, Keep};
use super::outbox::{Full, Outbox};
use super::{connect, keys, within};
use crate::jwt::unix_now;
use crate::metrics::Metrics;
use crate::revocation::{Revocations, Revoke};
use crate::room::{self, BoxFuture, Bridge, Rooms, Since, Synced, WeakRooms};
use crate::shutdown::{Running, Shutdown};
use crate::throttle::Throttle;

/// Outgoing room messages that may wait for Redis before new ones are dropped (and counted).
const OUTGOING_QUEUE: usize = 8192;

/// How often the subscriber pings, and the upkeep checks the marker.
const PING_EVERY: Duration = Duration::from_secs(1);
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The longest wait between two attempts to relink.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

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

/// The largest control message or stored revocation read: a real one is a few hundred
/// bytes; anything larger is not checked, only counted as rejected.
const MAX_CONTROL: usize = 4096;

/// The longest TTL given to a stored revocation (ten years): a `jti` whose `exp` lies further
/// ahead still is one Redis accepts, so one odd entry can never jam the outbox.
const MAX_TTL: i64 = 10 * 365 * 86_400;

/// Revocations per pipeline when storing them again.
const STORE_BATCH: usize = 5000;

enum Command {
    Subscribe(String),
    Unsubscribe(String),
}

/// Work for the publisher besides the outbox, in order.
enum Outgoing {
    /// A message for a room, without its seq: (room, JSON text).
    Room(String, String),
    /// Renew the history counters of these rooms: they have members here. One entry for all,
    /// so a node with thousands of rooms does not crowd out messages in the queue.
    Touch(Vec<String>),
}

/// The receiving ends, until `start` hands them to the tasks.
type Receivers = (mpsc::UnboundedReceiver<Command>, mpsc::Receiver<Outgoing>);

/// See the module docs. Made by [`Link::new`], given to the room registry as its bridge,
/// then [`Link::start`]ed.
pub(crate) struct Link {
    node_id: String,
    client: redis::Client,
    /// The deadline of every Redis call.
    timeout: Duration,
    commands: mpsc::UnboundedSender<Command>,
    outgoing: mpsc::Sender<Outgoing>,
    receivers: Mutex<Option<Receivers>>,
    metrics: Arc<Metrics>,
    keep: Keep,
    signer: Signer,
    revocations: Revocations,
    pub(super) outbox: Outbox,
    /// Counts the subscriber's links (0: never linked yet). The publisher drops a connection
    /// made before the latest link (it may be to a Redis that has since restarted); the
    /// upkeep reloads revocations on every new one.
    links: watch::Sender<u64>,
    /// The subscriber lost Redis and has not got it back. Not set before the first link, so
    /// the first joins of a node that just started wait for the link instead of missing it.
    down: AtomicBool,
    /// For the joins' history reads, with the script's hash (the publisher has its own).
    reader: Mutex<Option<(MultiplexedConnection, String)>>,
    /// Forged control messages are logged at most once a second.
    rejected_log: Throttle,
    /// So is a full outbox.
    full_log: Throttle,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// What [`Link::new`] needs besides the URL.
pub(crate) struct Settings {
    pub timeout: Duration,
    pub outbox: usize,
    pub keep: Keep,
    pub signer: Signer,
}

impl Link {
    /// A link through `client`; Redis being down is handled by relinking.
    pub(crate) fn new(
        client: redis::Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        revocations: Revocations,
    ) -> Arc<Link> {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (outgoing, outgoing_rx) = mpsc::channel(OUTGOING_QUEUE);
        // Random per process: the std hasher is seeded from the OS.
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let node_id = format!("{random:016x}{:x}", std::process::id());
        metrics.redis_configured();
        Arc::new(Link {
            node_id,
            client,
            timeout: settings.timeout,
            commands,
            outgoing,
            receivers: Mutex::new(Some((command_rx, outgoing_rx))),
            metrics,
            keep: settings.keep,
            signer: settings.signer,
            revocations,
            outbox: Outbox::new(settings.outbox),
            links: watch::Sender::new(0),
            down: AtomicBool::new(false),
            reader: Mutex::new(None),
            rejected_log: Throttle::new(1),
            full_log: Throttle::new(1),
        })
    }

    /// Starts the three tasks; each is dropped, wherever it waits, when `shutdown` says so
    /// (a Redis call in flight included, so a stalled Redis cannot hold shutdown up). A
    /// second call does nothing.
    pub(crate) fn start(self: &Arc<Link>, rooms: WeakRooms, tasks: [(Shutdown, Running); 3]) {
        let Some((commands, outgoing)) = self.receivers.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let [subscriber, publisher, upkeep] = tasks;
        until_shutdown(subscribe_loop(Arc::clone(self), commands, rooms.clone()), subscriber);
        until_shutdown(publish_loop(Arc::clone(self), outgoing, rooms), publisher);
        until_shutdown(upkeep_loop(Arc::clone(self)), upkeep);
    }

    /// Queues this node's revocation (made at `at`) to be stored and published; returns its
    /// outbox ticket.
    pub(crate) fn revoke(&self, revoke: &Revoke, at: i64) -> Result<u64, Full> {
        let control = Control::revoke(revoke.clone(), at, Some(&self.node_id));
        let until = self.revocations.until(revoke, at);
        self.outbox
            .push(keys::revoked(revoke), self.signer.seal(&control), until, true)
    }

    /// Whether the subscriber holds a link now.
    pub(crate) fn linked(&self) -> bool {
        *self.links.borrow() > 0 && !self.down.load(Relaxed)
    }

    /// The deadline of every Redis call.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    fn queue(&self, outgoing: Outgoing) {
        if self.outgoing.try_send(outgoing).is_err() {
            self.metrics.relay_dropped(1);
        }
    }

    /// A connection with the history script loaded, and the script's hash.
    async fn connect_with_script(&self) -> Option<(MultiplexedConnection, String)> {
        let mut conn = connect(&self.client, self.timeout).await.ok()?;
        let script = within(self.timeout, history::load(&mut conn)).await.ok()?;
        Some((conn, script))
    }

    /// The connection for history reads, made when first needed and again after an error.
    async fn reader(&self) -> Option<(MultiplexedConnection, String)> {
        let cached = self.reader.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if cached.is_some() {
            return cached;
        }
        let connected = self.connect_with_script().await?;
        *self.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(connected.clone());
        Some(connected)
    }

    /// Carries out a control message from the channel, if it is signed.
    fn apply_control(&self, payload: &[u8], rooms: &Rooms) {
        if payload.len() > MAX_CONTROL {
            return self.rejected(Refused::Unknown, "control message");
        }
        let control = match self.signer.open(payload) {
            Ok(control) => control,
            Err(refused) => return self.rejected(refused, "control message"),
        };
        if control.origin.as_deref() == Some(self.node_id.as_str()) {
            return; // our own, already carried out here
        }
        if let Some(notice) = &control.publish
            && room::check_name(&notice.room).is_ok()
        {
            // Every node gets this, so none may put it into the room's history (it would be
            // there once per node): each delivers it to its own members, without a seq.
            let json = crate::messages::notice(&notice.room, &notice.message, None);
            rooms.deliver_local(&notice.room, json.into());
        }
        let Some(revoke) = &control.revoke else { return };
        let at = control.made_at();
        let (_, changed) = self.revocations.revoke_all(&[(revoke.clone(), at)]);
        // Published by an application: store it (signed as it came) for later nodes too. Only
        // when it moved this node's list forward: a replayed or older copy never overwrites
        // a newer stored one, and a flood of replays costs no outbox place.
        if control.origin.is_none() && changed > 0 {
            let until = self.revocations.until(revoke, at);
            let value = String::from_utf8_lossy(payload).into_owned();
            if self.outbox.push(keys::revoked(revoke), value, until, false).is_err()
                && let Some(suppressed) = self.full_log.allow()
            {
                warn!(
                    suppressed,
                    "control outbox full: an application's revocation is applied but not stored"
                );
            }
        }
    }

    fn rejected(&self, refused: Refused, what: &str) {
        self.metrics.control_rejected();
        if let Some(suppressed) = self.rejected_log.allow() {
            match refused {
                Refused::BadSignature => warn!(suppressed, "ignored a {what} whose signature does not verify"),
                Refused::Unknown => warn!(suppressed, "ignored a signed {what} of unknown shape"),
            }
        }
    }
}

impl Bridge for Link {
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
                let sync = self.keep.sync(&mut conn, &script, room, presence.as_deref(), since);
                match within(self.timeout, sync).await {
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

/// Runs `task` until it ends or shutdown is announced, holding `running` meanwhile.
fn until_shutdown(task: impl Future<Output = ()> + Send + 'static, (mut shutdown, running): (Shutdown, Running)) {
    tokio::spawn(async move {
        tokio::select! {
            () = task => {}
            _ = shutdown.wait() => {}
        }
        drop(running);
    });
}

/// The publisher: see the module docs. A pipeline per turn, never an empty one.
async fn publish_loop(link: Arc<Link>, mut outgoing: mpsc::Receiver<Outgoing>, rooms: WeakRooms) {
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

/// The subscriber: see the module docs.
///
/// The outer loop is one link's life: connect, subscribe every room that has local members
/// *now* (the registry is the truth, not the commands that queued while down), then serve
/// commands, publications and pings until the link breaks; then tell every local room, wait
/// and start over.
async fn subscribe_loop(link: Arc<Link>, mut commands: mpsc::UnboundedReceiver<Command>, rooms: WeakRooms) {
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

/// The upkeep: see the module docs.
async fn upkeep_loop(link: Arc<Link>) {
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
