//! Sessions kept in Redis by the web application that owns them (feature `redis`): the
//! `sessionid` cookie is looked up there, at the handshake and on every session recheck.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use redis::AsyncCommands;

use super::within;
use crate::auth::{Identity, SessionStore, StoreError};
use crate::config::DEFAULT_REDIS_TIMEOUT;

/// Sessions that a web application writes to Redis: key `PREFIX + session id`, value a JSON
/// identity such as `{"username":"carol","rooms":["support-*"],"expires_at":1790000000}`
/// (`rooms` and `expires_at` optional; `expires_at` in Unix seconds). Give the key a Redis TTL
/// too, so ended sessions do not pile up.
///
/// Every lookup has a deadline ([`RedisSessionStore::with_timeout`], 1 s by default): a
/// Redis that accepts connections and never answers makes session-cookie handshakes fail
/// with `503` within it (PROTOCOL.md §12) instead of holding their places.
///
/// ```no_run
/// # #[cfg(feature = "redis")]
/// # fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use wsgate::auth::JwtAuthenticator;
/// use wsgate::jwt::{Key, Validation, Verifier};
/// use wsgate::cluster::RedisSessionStore;
///
/// let sessions = RedisSessionStore::new("redis://127.0.0.1:6379", "myapp:session:")?;
/// let verifier = Verifier::new(vec![Key::new(b"an example secret of at least 32 bytes!!")?], Validation::default())?;
/// let authenticator = JwtAuthenticator::with_sessions(verifier, sessions);
/// # Ok(()) }
/// ```
pub struct RedisSessionStore {
    client: redis::Client,
    prefix: String,
    /// The deadline of each call.
    timeout: Duration,
    /// One multiplexed connection, made on first use and remade after a failure. The lock
    /// is never held across an await: with a stalled Redis, lookups would otherwise queue
    /// behind each other's connect and each wait a multiple of the deadline.
    connection: Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl fmt::Debug for RedisSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSessionStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Session ids longer than this are not looked up: no real one is, and a key is built from it.
const MAX_SESSION_ID: usize = 256;

impl RedisSessionStore {
    /// Sessions under `prefix` in the Redis at `url` (`redis://`, or `rediss://` with the
    /// `tls` feature and the system's roots). Fails only on an unusable URL.
    pub fn new(url: &str, prefix: &str) -> Result<RedisSessionStore, redis::RedisError> {
        RedisSessionStore::with_ca(url, prefix, None)
    }

    /// [`RedisSessionStore::new`] for a `rediss://` Redis whose certificate chains to `ca`
    /// (PEM), when given (`--redis-ca`). Needs the `tls` feature.
    pub fn with_ca(url: &str, prefix: &str, ca: Option<&[u8]>) -> Result<RedisSessionStore, redis::RedisError> {
        Ok(RedisSessionStore {
            client: super::client(url, ca)?,
            prefix: prefix.to_owned(),
            timeout: DEFAULT_REDIS_TIMEOUT,
            connection: Mutex::new(None),
        })
    }

    /// The same store with another deadline per Redis call (`--redis-timeout`).
    #[must_use]
    pub fn with_timeout(self, timeout: Duration) -> RedisSessionStore {
        RedisSessionStore { timeout, ..self }
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Option<redis::aio::MultiplexedConnection>> {
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SessionStore for RedisSessionStore {
    async fn load(&self, id: &str) -> Result<Option<Identity>, StoreError> {
        if id.len() > MAX_SESSION_ID {
            return Ok(None);
        }
        let failed = |e: redis::RedisError| StoreError(e.to_string());
        let cached = self.cached().clone();
        let mut conn = match cached {
            Some(conn) => conn,
            None => {
                let conn = super::connect(&self.client, self.timeout).await.map_err(failed)?;
                *self.cached() = Some(conn.clone());
                conn
            }
        };
        let value: Option<String> = match within(self.timeout, conn.get(format!("{}{id}", self.prefix))).await {
            Ok(value) => value,
            Err(e) => {
                *self.cached() = None;
                return Err(failed(e));
            }
        };
        value
            .map(|json| {
                serde_json::from_str(&json).map_err(|e| StoreError(format!("session is not a JSON identity: {e}")))
            })
            .transpose()
    }
}
