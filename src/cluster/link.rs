//! The link between this node and Redis (PROTOCOL.md §8, §12): what its three tasks share,
//! the rooms' sequencer, and the control messages it carries out. The tasks, each
//! owning one connection and one job, each in a file of its own, all started and stopped
//! with the server:
//!
//! - **Subscriber** (`subscriber.rs`). One pub/sub connection: a channel per room with local
//!   members (subscribed when the first one joins, unsubscribed when the last leaves), plus
//!   `wsgate:control`. It hands room messages to local members and carries out signed control
//!   messages. It pings every second, so a connection killed server-side or a Redis that
//!   stopped answering is noticed within a second plus the Redis timeout; then it tells every
//!   local room (`lagged`, `missed: null`), relinks with backoff (100 ms doubling to 2 s) and
//!   resubscribes what the registry holds *then*.
//! - **Publisher** (`publisher.rs`). Sends, pipelined and in order: first whatever waits in
//!   the control outbox (revocations are never dropped: see `outbox`), then room messages,
//!   each through the history script, which gives it its `seq` and publishes it; every node,
//!   the sender's included, delivers it from the subscription. So every node delivers a
//!   room's messages in the one order Redis gave them, each once. While Redis is away, room
//!   messages reach this node's members only, without a `seq`, and are counted
//!   (`wsgate_relay_dropped_total`).
//! - **Upkeep** (`upkeep.rs`). After every relink, reloads the stored revocations and closes
//!   the open connections they cover; every 5 s, checks this node's marker key, and when
//!   Redis lost it (restarted empty, flushed) stores again every revocation this node holds.
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

use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, watch};
use tracing::warn;

use super::control::{Control, Refused, Signer};
use super::history::{self, Keep};
use super::outbox::{Full, Outbox};
use super::{connect, keys, publisher, subscriber, upkeep, within};
use crate::messages::Event;
use crate::metrics::Metrics;
use crate::revocation::{Revocations, Revoke};
use crate::room::{self, BoxFuture, Here, Rooms, Sequencer, Since, Synced, TooMuchQueued, WeakRooms};
use crate::shutdown::{Running, Shutdown};
use crate::throttle::Throttle;

/// Outgoing room messages that may wait for Redis before new ones are dropped (and counted).
const OUTGOING_QUEUE: usize = 8192;

/// The largest control message or stored revocation read: a real one is a few hundred
/// bytes; anything larger is not checked, only counted as rejected.
pub(super) const MAX_CONTROL: usize = 4096;

/// The longest TTL given to a stored revocation (ten years): a `jti` whose `exp` lies further
/// ahead still is one Redis accepts, so one odd entry can never jam the outbox.
pub(super) const MAX_TTL: i64 = 10 * 365 * 86_400;

pub(super) enum Command {
    Subscribe(String),
    Unsubscribe(String),
}

/// Work for the publisher besides the outbox, in order.
pub(super) enum Outgoing {
    /// A message for a room, without its seq: (room, JSON text).
    Room(String, String),
    /// Renew the history counters of these rooms: they have members here. One entry for all,
    /// so a node with thousands of rooms does not crowd out messages in the queue.
    Touch(Vec<String>),
}

/// The receiving ends, until `start` hands them to the tasks.
type Receivers = (mpsc::UnboundedReceiver<Command>, mpsc::Receiver<Outgoing>);

/// See the module docs. Made by [`Link::new`], given to the room registry as its sequencer,
/// then [`Link::start`]ed.
pub(crate) struct Link {
    pub(super) node_id: String,
    pub(super) client: redis::Client,
    /// The deadline of every Redis call.
    pub(super) timeout: Duration,
    pub(super) commands: mpsc::UnboundedSender<Command>,
    pub(super) outgoing: mpsc::Sender<Outgoing>,
    pub(super) receivers: Mutex<Option<Receivers>>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) keep: Keep,
    pub(super) signer: Signer,
    pub(super) revocations: Revocations,
    pub(super) outbox: Outbox,
    /// Counts the subscriber's links (0: never linked yet). The publisher drops a connection
    /// made before the latest link (it may be to a Redis that has since restarted); the
    /// upkeep reloads revocations on every new one.
    pub(super) links: watch::Sender<u64>,
    /// The subscriber lost Redis and has not got it back. Not set before the first link, so
    /// the first joins of a node that just started wait for the link instead of missing it.
    pub(super) down: AtomicBool,
    /// For the joins' history reads, with the script's hash (the publisher has its own).
    pub(super) reader: Mutex<Option<(MultiplexedConnection, String)>>,
    /// Forged control messages are logged at most once a second.
    pub(super) rejected_log: Throttle,
    /// So is a full outbox.
    pub(super) full_log: Throttle,
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
        until_shutdown(subscriber::run(Arc::clone(self), commands, rooms.clone()), subscriber);
        until_shutdown(publisher::run(Arc::clone(self), outgoing, rooms), publisher);
        until_shutdown(upkeep::run(Arc::clone(self)), upkeep);
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

    pub(super) fn queue(&self, outgoing: Outgoing) {
        if self.outgoing.try_send(outgoing).is_err() {
            self.metrics.relay_dropped(1);
        }
    }

    /// A connection with the history script loaded, and the script's hash.
    pub(super) async fn connect_with_script(&self) -> Option<(MultiplexedConnection, String)> {
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
    pub(super) fn apply_control(&self, payload: &[u8], rooms: &Rooms) {
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
            let json = Event::Notice {
                room: &notice.room,
                message: &notice.message,
            }
            .json(None);
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

    pub(super) fn rejected(&self, refused: Refused, what: &str) {
        self.metrics.control_rejected();
        if let Some(suppressed) = self.rejected_log.allow() {
            match refused {
                Refused::BadSignature => warn!(suppressed, "ignored a {what} whose signature does not verify"),
                Refused::Unknown => warn!(suppressed, "ignored a signed {what} of unknown shape"),
            }
        }
    }
}

/// Redis numbers every room's events, for every node (see `room::sequencer`).
impl Sequencer for Link {
    /// Sends `event` through the history script (see `publisher`); every node, this one
    /// included, delivers it from the subscription.
    /// Shares of queued bytes are not counted here: this node holds only the members'
    /// buffer; history is in Redis (see `history`).
    fn send(&self, room: &str, event: Event<'_>, _here: Option<Here<'_>>) -> Result<(), TooMuchQueued> {
        self.queue(Outgoing::Room(room.to_owned(), event.json(None)));
        Ok(())
    }

    fn local(&self) -> bool {
        false
    }

    fn opened(&self, room: &str) {
        let _ = self.commands.send(Command::Subscribe(room.to_owned()));
    }

    fn closed(&self, room: &str) {
        let _ = self.commands.send(Command::Unsubscribe(room.to_owned()));
    }

    fn up(&self) -> bool {
        !self.down.load(Relaxed)
    }

    fn sync<'a>(
        &'a self,
        room: &'a str,
        join: Option<String>,
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
                let sync = self.keep.sync(&mut conn, &script, room, join.as_deref(), since);
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
