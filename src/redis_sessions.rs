//! Sessions kept in Redis by the web application that owns them (feature `redis`): the
//! `sessionid` cookie is looked up there, at the handshake and on every session recheck.

use std::fmt;
use std::time::Duration;

use redis::AsyncCommands;

use crate::auth::{Identity, SessionStore, StoreError};

/// The longest any Redis call may take. A Redis host that stops answering (rather than
/// refusing) would otherwise hold a handshake, or the relay, for minutes of TCP retries.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// `future`, or a timeout error after [`REDIS_TIMEOUT`].
pub(crate) async fn bounded<T>(
    future: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(REDIS_TIMEOUT, future).await.unwrap_or_else(|_| {
        Err(redis::RedisError::from(std::io::Error::from(
            std::io::ErrorKind::TimedOut,
        )))
    })
}

/// Sessions that a web application writes to Redis: key `PREFIX + session id`, value a JSON
/// identity such as `{"username":"carol","rooms":["support-*"],"expires_at":1790000000}`
/// (`rooms` and `expires_at` optional; `expires_at` in Unix seconds). Give the key a Redis TTL
/// too, so ended sessions do not pile up.
///
/// ```no_run
/// # #[cfg(feature = "redis")]
/// # fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use wsgate::auth::JwtAuthenticator;
/// use wsgate::jwt::{Key, Validation, Verifier};
/// use wsgate::relay::RedisSessionStore;
///
/// let sessions = RedisSessionStore::new("redis://127.0.0.1:6379", "myapp:session:")?;
/// let verifier = Verifier::new(vec![Key::new(b"an example secret of at least 32 bytes!!")?], Validation::default())?;
/// let authenticator = JwtAuthenticator::with_sessions(verifier, sessions);
/// # Ok(()) }
/// ```
pub struct RedisSessionStore {
    client: redis::Client,
    prefix: String,
    /// One multiplexed connection, made on first use and remade after a failure.
    connection: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
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
    /// Sessions under `prefix` in the Redis at `url`. Fails only on an unusable URL.
    pub fn new(url: &str, prefix: &str) -> Result<RedisSessionStore, redis::RedisError> {
        Ok(RedisSessionStore {
            client: redis::Client::open(url)?,
            prefix: prefix.to_owned(),
            connection: tokio::sync::Mutex::new(None),
        })
    }
}

impl SessionStore for RedisSessionStore {
    async fn load(&self, id: &str) -> Result<Option<Identity>, StoreError> {
        if id.len() > MAX_SESSION_ID {
            return Ok(None);
        }
        let failed = |e: redis::RedisError| StoreError(e.to_string());
        let mut slot = self.connection.lock().await;
        let mut conn = match slot.as_ref() {
            Some(conn) => conn.clone(),
            None => {
                let conn = bounded(self.client.get_multiplexed_async_connection())
                    .await
                    .map_err(failed)?;
                *slot = Some(conn.clone());
                conn
            }
        };
        drop(slot);
        let value: Option<String> = match bounded(conn.get(format!("{}{id}", self.prefix))).await {
            Ok(value) => value,
            Err(e) => {
                *self.connection.lock().await = None;
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
