//! This node among others (PROTOCOL.md §8, §12): rooms, revocations and notices shared through
//! Redis with the `redis` feature and `--redis URL`; without them, the same type with
//! nothing behind it, so the rest of the server has no `cfg` of its own.
//!
//! A revocation's path reads one way: the admin API or a [`Handle`](crate::Handle) calls the
//! cluster's `revoke`, which applies it to this node's [`Revocations`] at once and, with
//! Redis, queues it in the control outbox for the other nodes. What arrives from Redis goes
//! the same way: link → revocations.
//!
//! The Redis side, one file each: `keys` (every key and channel name), `control` (signed
//! control messages), `outbox` (revocations waiting for Redis), `history` (seq and history),
//! `link` (the link and what its tasks share), its three tasks `subscriber`, `publisher` and
//! `upkeep`, and `sessions` ([`RedisSessionStore`]).

use std::sync::Arc;

#[cfg(feature = "redis")]
mod control;
#[cfg(feature = "redis")]
mod history;
#[cfg(feature = "redis")]
mod keys;
#[cfg(feature = "redis")]
mod link;
#[cfg(feature = "redis")]
mod outbox;
#[cfg(feature = "redis")]
mod publisher;
#[cfg(feature = "redis")]
mod sessions;
#[cfg(feature = "redis")]
mod subscriber;
#[cfg(feature = "redis")]
mod upkeep;

#[cfg(feature = "redis")]
pub use sessions::RedisSessionStore;

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::revocation::{Revocations, Revoke};
use crate::room::{Local, Rooms, Sequencer};
use crate::shutdown::Coordinator;

/// How far a revocation reached beyond this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reach {
    /// There are no other nodes (no Redis configured).
    ThisNode,
    /// Stored in Redis and published to every node.
    Stored,
    /// Waiting in the control outbox (Redis is away or slow): it is stored and published,
    /// before anything else, as soon as Redis answers.
    Pending,
    /// The control outbox is full: it applies on this node only. Try again later.
    OutboxFull,
}

impl Reach {
    /// The admin API's word for it (`"cluster"` in the answer), if there is a cluster.
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            Reach::ThisNode => None,
            Reach::Stored => Some("stored"),
            Reach::Pending => Some("pending"),
            Reach::OutboxFull => Some("full"),
        }
    }
}

/// What a revocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revoked {
    /// Connections closed on this node.
    pub closed: usize,
    /// How far it reached beyond this node.
    pub reach: Reach,
}

/// See the module docs. Cloning gives another handle to the same.
#[derive(Debug, Clone)]
pub(crate) struct Cluster {
    revocations: Revocations,
    #[cfg(feature = "redis")]
    link: Option<Arc<link::Link>>,
}

impl Cluster {
    /// This node's cluster, as `config` says. Fails on an unusable Redis URL, or Redis
    /// without a token key to sign control messages with.
    pub(crate) fn new(
        config: &Config,
        metrics: &Arc<Metrics>,
        revocations: Revocations,
    ) -> Result<Cluster, ConfigError> {
        #[cfg(feature = "redis")]
        if let Some(url) = &config.redis_url {
            let signer = control::Signer::new(&config.keys).ok_or_else(|| {
                ConfigError("Redis needs a token key: control messages between nodes are signed with one".to_owned())
            })?;
            let settings = link::Settings {
                timeout: config.redis_timeout,
                outbox: config.control_outbox,
                keep: history::Keep {
                    history: config.history,
                    room_bytes: config.room_settings().room_queued_bytes,
                    reply_bytes: config.room_settings().room_queued_bytes / 2,
                    ttl: config.history_ttl,
                },
                signer,
            };
            // The URL is not repeated: it may hold a password.
            let client = client(url, config.redis_ca.as_deref())
                .map_err(|e| ConfigError(format!("the Redis URL cannot be used: {e}")))?;
            let link = link::Link::new(client, settings, metrics.clone(), revocations.clone());
            return Ok(Cluster {
                revocations,
                link: Some(link),
            });
        }
        let _ = (config, metrics);
        Ok(Cluster {
            revocations,
            #[cfg(feature = "redis")]
            link: None,
        })
    }

    /// Who numbers the rooms' events: Redis, through the link, when there are other nodes;
    /// else this node.
    pub(crate) fn sequencer(&self) -> Arc<dyn Sequencer> {
        #[cfg(feature = "redis")]
        if let Some(link) = &self.link {
            return link.clone();
        }
        Arc::new(Local)
    }

    /// Starts the link's tasks under `coordinator`, so they end when the server does.
    pub(crate) fn start(&self, rooms: &Rooms, coordinator: &Coordinator) {
        #[cfg(feature = "redis")]
        if let Some(link) = &self.link {
            link.start(
                rooms.downgrade(),
                [coordinator.task(), coordinator.task(), coordinator.task()],
            );
        }
        let _ = (rooms, coordinator);
    }

    /// This node's revocation list.
    pub(crate) fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Applies `revoke` on this node now and sends it to the others; does not wait for Redis.
    pub(crate) fn revoke(&self, revoke: &Revoke) -> (usize, Ticket) {
        let at = crate::jwt::unix_now();
        let closed = self.revocations.revoke_at(revoke, at);
        #[cfg(feature = "redis")]
        if let Some(link) = &self.link {
            return match link.revoke(revoke, at) {
                Ok(ticket) => (closed, Ticket::Queued(ticket)),
                Err(outbox::Full) => {
                    tracing::warn!("control outbox full: a revocation applies on this node only");
                    (closed, Ticket::Full)
                }
            };
        }
        (closed, Ticket::ThisNode)
    }

    /// How far the revocation with `ticket` got, waiting up to the Redis timeout for it to
    /// be stored while the link is up.
    pub(crate) async fn reach(&self, ticket: Ticket) -> Reach {
        match ticket {
            Ticket::ThisNode => Reach::ThisNode,
            #[cfg(feature = "redis")]
            Ticket::Full => Reach::OutboxFull,
            #[cfg(feature = "redis")]
            Ticket::Queued(ticket) => match &self.link {
                Some(link) if link.linked() && link.outbox.confirmed_within(ticket, link.timeout()).await => {
                    Reach::Stored
                }
                _ => Reach::Pending,
            },
        }
    }

    /// Revocations waiting in the outbox, if there is a cluster (`wsgate_control_pending`).
    pub(crate) fn pending(&self) -> Option<usize> {
        #[cfg(feature = "redis")]
        if let Some(link) = &self.link {
            return Some(link.outbox.len());
        }
        None
    }
}

/// Where a revocation went: see [`Cluster::reach`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ticket {
    ThisNode,
    #[cfg(feature = "redis")]
    Full,
    #[cfg(feature = "redis")]
    Queued(u64),
}

/// A client for the Redis at `url`: `redis://` or, with the `tls` feature, `rediss://`
/// trusting `ca` (PEM) or, without it, the system's roots.
#[cfg(feature = "redis")]
fn client(url: &str, ca: Option<&[u8]>) -> redis::RedisResult<redis::Client> {
    #[cfg(feature = "tls")]
    if let Some(ca) = ca {
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.to_vec()),
        };
        return redis::Client::build_with_tls(url, certificates);
    }
    if ca.is_some() {
        return Err(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "a Redis CA needs wsgate built with the tls feature",
        )));
    }
    redis::Client::open(url)
}

/// A multiplexed connection whose connect and every reply are bounded by `timeout` (the
/// client's own defaults would cut a reply at 500 ms whatever `--redis-timeout` says).
#[cfg(feature = "redis")]
async fn connect(
    client: &redis::Client,
    timeout: std::time::Duration,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    within(timeout, client.get_multiplexed_async_connection_with_config(&config)).await
}

/// `future`, or a timeout error after `timeout`: a Redis host that stops answering (rather
/// than refusing) would otherwise hold a handshake, or a link task, for minutes of TCP
/// retries.
#[cfg(feature = "redis")]
async fn within<T>(
    timeout: std::time::Duration,
    future: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(timeout, future).await.unwrap_or_else(|_| {
        Err(redis::RedisError::from(std::io::Error::from(
            std::io::ErrorKind::TimedOut,
        )))
    })
}
