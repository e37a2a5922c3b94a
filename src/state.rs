//! Everything the server's tasks share, built in one place and owned by one value (the shape
//! of mini-redis's `Db`): the settings, the gate, the rooms, the revocations (through the
//! cluster), the budgets, the counters. Each task holds an `Arc<State>`, never a global.
//!
//! Built by [`State::new`] in a fixed order, because each part is given what it uses rather
//! than making it: one revocation list, given to the gate (which refuses revoked credentials)
//! and to the cluster (which revokes, here and on other nodes); the rooms, given the
//! cluster's sequencer (this node, or Redis when there are other nodes).

use std::sync::Arc;

use tokio::sync::{Notify, Semaphore};

use crate::auth::Authenticator;
use crate::cluster::Cluster;
use crate::config::{Config, ConfigError};
use crate::gate::Gate;
use crate::handle::Handle;
use crate::identities::Identities;
use crate::metrics::Metrics;
use crate::pending::Pending;
use crate::rejection::Reason;
use crate::revocation::Revocations;
use crate::room::Rooms;
use crate::throttle::Throttle;

/// Log lines per second for each kind of refusal, and for failed accepts.
pub(crate) const LOG_LINES_PER_SECOND: u32 = 5;

/// See the module docs.
pub(crate) struct State<A> {
    pub(crate) config: Config,
    pub(crate) gate: Gate<A>,
    pub(crate) rooms: Rooms,
    /// Revocations, here and (with Redis) on the other nodes.
    pub(crate) cluster: Cluster,
    pub(crate) metrics: Arc<Metrics>,
    /// Upgraded connections; a socket without a permit may still get `/healthz`.
    pub(crate) connections: Arc<Semaphore>,
    /// Sockets not yet admitted.
    pub(crate) pending: Pending,
    /// Open connections and connect rate per identity.
    pub(crate) identities: Identities,
    /// One throttle per refusal reason, indexed by [`Reason`].
    pub(crate) refusal_log: [Throttle; Reason::ALL.len()],
    pub(crate) accept_log: Throttle,
    pub(crate) advice_log: Throttle,
    /// Set by [`Handle::shutdown`].
    pub(crate) stop: Arc<Notify>,
}

impl<A: Authenticator> State<A> {
    /// The state for a server with `config` (already validated) and `authenticator`.
    pub(crate) fn new(config: Config, authenticator: A) -> Result<State<A>, ConfigError> {
        let metrics = Arc::new(Metrics::default());
        let revocations = Revocations::new(config.validation.leeway, config.revocation_ttl.as_secs());
        let cluster = Cluster::new(&config, &metrics, revocations.clone())?;
        let rooms = Rooms::with_sequencer(config.room_settings(), cluster.sequencer());
        Ok(State {
            gate: Gate::new(&config, authenticator, revocations),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            pending: Pending::new(config.max_pending),
            identities: Identities::new(
                config.max_connections_per_user,
                (config.user_connect_rate, config.user_connect_burst),
                config.max_replay_bytes_per_user,
            ),
            refusal_log: std::array::from_fn(|_| Throttle::new(LOG_LINES_PER_SECOND)),
            accept_log: Throttle::new(1),
            advice_log: Throttle::new(LOG_LINES_PER_SECOND),
            stop: Arc::new(Notify::new()),
            cluster,
            config,
            rooms,
            metrics,
        })
    }
}

impl<A> State<A> {
    /// A handle for the embedder and the admin API.
    pub(crate) fn handle(&self) -> Handle {
        Handle {
            cluster: self.cluster.clone(),
            rooms: self.rooms.clone(),
            stop: self.stop.clone(),
        }
    }
}
