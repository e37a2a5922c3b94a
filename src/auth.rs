//! Who is connecting: the [`Authenticator`] trait, the [`Identity`] it produces, session
//! stores, and the built-in [`JwtAuthenticator`] (PROTOCOL.md §2–§3).
//!
//! The gate (`crate::gate`) finds the credential, applies the origin policy, then asks an
//! [`Authenticator`] for an [`Identity`], and finally checks the room with
//! [`Identity::may_join`]. The origin check sits *outside* the authenticator on purpose: a
//! custom authenticator cannot forget it, so a cookie is never honoured for a page on another
//! site (cross-site WebSocket hijacking).
//!
//! ```
//! use wsgate::auth::{Authenticator, JwtAuthenticator};
//! use wsgate::credentials::{Carrier, Credential};
//! use wsgate::head::RequestHead;
//! use wsgate::jwt::{Claims, Key, Validation, Verifier};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let key = Key::new(b"an example secret of at least 32 bytes!!").unwrap();
//! let token = key.sign(&Claims::new("alice", 4_000_000_000));
//! let auth = JwtAuthenticator::new(Verifier::new(vec![key], Validation::default()).unwrap());
//!
//! let (head, _) = RequestHead::parse(b"GET /ws/chat/lobby HTTP/1.1\r\n\r\n").unwrap().unwrap();
//! let identity = auth.authenticate(&Credential::new(Carrier::Query, token), &head).await.unwrap();
//! assert_eq!(identity.username, "alice");
//! assert!(identity.may_join("lobby"));
//! # });
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};

use crate::credentials::{Carrier, Credential};
use crate::head::RequestHead;
use crate::jwt::{Claims, Verifier, unix_now};
use crate::rejection::Rejection;

/// An authenticated user: what the rest of the server knows about a connection's owner.
///
/// Also the JSON form of a session in a shared store:
/// `{"username":"carol","rooms":["support-*"],"expires_at":1790000000}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// Shown to other members; never taken from the client's messages.
    pub username: String,
    /// Rooms this identity may join (exact names or `prefix*`); `None`: every room.
    #[serde(default)]
    pub rooms: Option<Vec<String>>,
    /// When the credential expires (Unix seconds): a token's `exp`. The server tells the
    /// client this, warns it before, and closes with `4401` once it plus the leeway has passed.
    /// `None`: never.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// When the credential was issued (a token's `iat`): a revocation of the user reaches the
    /// credentials issued before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<i64>,
    /// The credential's own id (a token's `jti`), by which it can be revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl Identity {
    /// An identity for `username` that may join every room and does not expire.
    pub fn new(username: impl Into<String>) -> Identity {
        Identity {
            username: username.into(),
            rooms: None,
            expires_at: None,
            issued_at: None,
            jti: None,
        }
    }

    /// The identity a verified token stands for.
    pub fn from_claims(claims: Claims) -> Identity {
        Identity {
            username: claims.sub,
            rooms: claims.rooms,
            expires_at: Some(claims.exp),
            issued_at: claims.iat,
            jti: claims.jti,
        }
    }

    /// Whether this identity may join `room`: no `rooms` list, an exact entry, or an entry
    /// `prefix*` that `room` starts with.
    pub fn may_join(&self, room: &str) -> bool {
        let Some(rooms) = &self.rooms else { return true };
        rooms.iter().any(|allowed| match allowed.strip_suffix('*') {
            Some(prefix) => room.starts_with(prefix),
            None => allowed == room,
        })
    }

    /// Whether the identity has expired at `now` (Unix seconds).
    pub fn is_expired_at(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// Turns a credential into an [`Identity`], or refuses it.
///
/// Async so that an implementation can ask a database or another service. The server has
/// already applied the origin policy when this is called; room authorization comes after.
/// Implement it with an `async fn`:
///
/// ```
/// use wsgate::auth::{Authenticator, Identity};
/// use wsgate::credentials::Credential;
/// use wsgate::head::RequestHead;
/// use wsgate::rejection::Rejection;
///
/// struct ApiKeys;
///
/// impl Authenticator for ApiKeys {
///     async fn authenticate(&self, credential: &Credential, _head: &RequestHead) -> Result<Identity, Rejection> {
///         match credential.secret() {
///             "key-for-bob-0123456789" => Ok(Identity::new("bob")),
///             _ => Err(Rejection::InvalidCredential("unknown API key".into())),
///         }
///     }
/// }
/// ```
pub trait Authenticator: Send + Sync + 'static {
    /// The identity behind `credential`, found in `head`.
    fn authenticate(
        &self,
        credential: &Credential,
        head: &RequestHead,
    ) -> impl Future<Output = Result<Identity, Rejection>> + Send;

    /// The identity behind `token`, sent in-band by an open connection to renew its credential
    /// (`{"type":"refresh","token":…}`). The connection then checks that it is the same user
    /// and still allowed in its room. By default refresh is not supported.
    fn refresh(&self, token: &str) -> impl Future<Output = Result<Identity, Rejection>> + Send {
        let _ = token;
        async {
            Err(Rejection::InvalidCredential(
                "in-band refresh is not supported here".into(),
            ))
        }
    }

    /// Whether session `id`, which an open connection came in with, still exists: the server
    /// asks every `session_recheck` and closes the connection (`4401 session ended`) on
    /// `Ok(false)`. An error keeps the connection (the store may be briefly down). By
    /// default sessions are never re-checked.
    fn session_alive(&self, id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let _ = id;
        async { Ok(true) }
    }
}

/// A session store failed (not "no such session", which is `Ok(None)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session store error: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// Where `sessionid` cookies are resolved: session id → identity.
pub trait SessionStore: Send + Sync + 'static {
    /// The identity of session `id`, or `None` if there is no such session. Expiry is checked
    /// by the caller against [`Identity::expires_at`].
    fn load(&self, id: &str) -> impl Future<Output = Result<Option<Identity>, StoreError>> + Send;
}

/// An in-process [`SessionStore`]. Cloning it gives another handle to the same sessions, so an
/// embedder can keep one to log users in and out while the server holds the other.
///
/// ```
/// use wsgate::auth::{Identity, MemorySessionStore};
///
/// let sessions = MemorySessionStore::default();
/// sessions.insert("3f1c9a7e5b2d4c6f", Identity::new("carol"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemorySessionStore {
    sessions: Arc<RwLock<HashMap<String, Identity>>>,
}

impl MemorySessionStore {
    /// Adds or replaces session `id`. Set `identity.expires_at` to end it automatically.
    pub fn insert(&self, id: impl Into<String>, identity: Identity) {
        self.write().insert(id.into(), identity);
    }

    /// Ends session `id` (a logout). Connections already open stay open until they expire.
    pub fn remove(&self, id: &str) -> Option<Identity> {
        self.write().remove(id)
    }

    /// Drops every expired session; returns how many were dropped.
    pub fn purge_expired(&self) -> usize {
        let now = unix_now();
        let mut sessions = self.write();
        let before = sessions.len();
        sessions.retain(|_, identity| !identity.is_expired_at(now));
        before - sessions.len()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Identity>> {
        // A panic while holding the lock cannot leave a HashMap half-updated in a way that
        // matters here, so a poisoned lock is still usable.
        self.sessions.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl SessionStore for MemorySessionStore {
    async fn load(&self, id: &str) -> Result<Option<Identity>, StoreError> {
        let sessions = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        Ok(sessions.get(id).cloned())
    }
}

/// The built-in authenticator: HS256 tokens from any token carrier, and session ids from the
/// session cookie through a [`SessionStore`].
#[derive(Debug, Clone)]
pub struct JwtAuthenticator<S = MemorySessionStore> {
    verifier: Verifier,
    sessions: S,
}

impl JwtAuthenticator<MemorySessionStore> {
    /// Tokens checked by `verifier`; sessions from a new, empty in-memory store.
    pub fn new(verifier: Verifier) -> JwtAuthenticator<MemorySessionStore> {
        JwtAuthenticator {
            verifier,
            sessions: MemorySessionStore::default(),
        }
    }
}

impl<S: SessionStore> JwtAuthenticator<S> {
    /// Tokens checked by `verifier`; sessions resolved by `sessions`.
    pub fn with_sessions(verifier: Verifier, sessions: S) -> JwtAuthenticator<S> {
        JwtAuthenticator { verifier, sessions }
    }

    /// The token verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The session store.
    pub fn sessions(&self) -> &S {
        &self.sessions
    }
}

impl<S: SessionStore> Authenticator for JwtAuthenticator<S> {
    async fn authenticate(&self, credential: &Credential, _head: &RequestHead) -> Result<Identity, Rejection> {
        if credential.carrier() == Carrier::SessionCookie {
            let identity = self.sessions.load(credential.secret()).await.map_err(|e| {
                tracing::warn!(error = %e, "session lookup failed");
                Rejection::Unavailable("session store unavailable".into())
            })?;
            return match identity {
                Some(identity) if !identity.is_expired_at(unix_now()) => Ok(identity),
                _ => Err(Rejection::InvalidCredential("unknown or expired session".into())),
            };
        }
        let claims = self.verifier.verify(credential.secret())?;
        Ok(Identity::from_claims(claims))
    }

    async fn refresh(&self, token: &str) -> Result<Identity, Rejection> {
        Ok(Identity::from_claims(self.verifier.verify(token)?))
    }

    async fn session_alive(&self, id: &str) -> Result<bool, StoreError> {
        let identity = self.sessions.load(id).await?;
        Ok(identity.is_some_and(|identity| !identity.is_expired_at(unix_now())))
    }
}
