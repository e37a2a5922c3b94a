//! The gate: the ordered decision from a request head to an admitted connection, without a
//! socket. This is the heart of wsgate; everything else moves bytes.
//!
//! [`Gate::admit`] takes a parsed [`RequestHead`] and either returns an [`Admission`] (who,
//! which room, what to answer the upgrade with) or the [`Rejection`] to answer with. The
//! order of its steps is a security decision, and this is the one place it is written:
//!
//! 1. **Route**: the path is `/ws/chat/{room}` and the method `GET`. Other paths are not the
//!    gate's (the server answers `/healthz`, `/metrics` and the demo before asking it).
//! 2. **Room name**: 1–64 characters of `[A-Za-z0-9_.-]`, checked before anything reads it.
//!    With it, `since` (PROTOCOL.md §10): absent or one `<epoch>:<seq>`. Both describe what
//!    the request asks for, not who asks, so a malformed one is a `400` for anyone.
//! 3. **Upgrade headers** (RFC 6455 §4.2.1): a request that cannot become a WebSocket is a
//!    `400`, whatever its credential; checking it first means no token is verified for a
//!    request we could never accept.
//! 4. **Origin**: before authentication, so a page on another site is refused the same way
//!    whether or not the credential it carries is good (it learns nothing about the cookie),
//!    and a cookie is never honoured for a foreign page (cross-site WebSocket hijacking).
//!    The origin check needs to know *which* carrier holds the credential (cookies are held
//!    to a stricter rule), so the credential is located first but not yet looked at.
//! 5. **Credential**: the first carrier present, in PROTOCOL.md §2 order; two credentials in
//!    one carrier is an error rather than a guess.
//! 6. **Authenticator**: the credential becomes an [`Identity`] or a `401`. This is the only
//!    step that may wait (a session store); every cheaper refusal has happened already. A
//!    session cookie, which needs the store, first takes one of `max_deciding` places of its
//!    own (`503` when none is free): a slow or stalled store then holds those places only,
//!    never the ones that handshakes decided locally (JWTs) need. The username, whoever
//!    vouched for it, must pass the `sub` rule (`401` `username: …`).
//!    Then the revocation list: a valid credential that was revoked (by `jti`, by user, by
//!    session) is a `401` too.
//! 7. **Room authorization**: the identity's `rooms` must allow the room (`403`).
//!
//! What the gate does not do, because it needs the server's state: the budgets (a place
//! among the sockets not yet admitted before the head is read; after the gate, the identity's
//! connection count and connect rate, then a connection slot) and the answer in
//! `reject-with = close` mode. See `server.rs`.
//!
//! ```
//! use wsgate::Config;
//! use wsgate::auth::JwtAuthenticator;
//! use wsgate::gate::Gate;
//! use wsgate::head::RequestHead;
//! use wsgate::jwt::{Claims, Key, Validation, Verifier};
//! use wsgate::revocation::Revocations;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let key = Key::new(b"an example secret of at least 32 bytes!!").unwrap();
//! let token = key.sign(&Claims::new("alice", 4_000_000_000));
//! let authenticator = JwtAuthenticator::new(Verifier::new(vec![key], Validation::default()).unwrap());
//! let gate = Gate::new(&Config::default(), authenticator, Revocations::new(60, 86_400));
//!
//! let raw = format!(
//!     "GET /ws/chat/lobby?token={token} HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\n\
//!      Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
//! );
//! let (head, _) = RequestHead::parse(raw.as_bytes()).unwrap().unwrap();
//! let admission = gate.admit(&head).await.unwrap();
//! assert_eq!((admission.room.as_str(), admission.identity.username.as_str()), ("lobby", "alice"));
//! # });
//! ```

use std::sync::Arc;

use tokio::sync::Semaphore;
use tracing::debug;

use crate::auth::{Authenticator, Identity};
use crate::config::Config;
use crate::credentials::{Carrier, Carriers, percent_decode};
use crate::handshake::Upgrade;
use crate::head::RequestHead;
use crate::jwt::check_subject;
use crate::origin::{OriginPolicy, Transport};
use crate::rejection::Rejection;
use crate::revocation::Revocations;
use crate::room::{self, Since};

/// The path prefix of chat rooms: `/ws/chat/{room}`.
pub const CHAT_PATH: &str = "/ws/chat/";

/// A connection the gate lets in. Its `Debug` leaves out the session id.
pub struct Admission {
    /// Who it is.
    pub identity: Identity,
    /// The room it joins.
    pub room: String,
    /// Where its credential was found.
    pub carrier: Carrier,
    /// The accept key and subprotocol for the `101`.
    pub upgrade: Upgrade,
    /// Where a reconnecting client left off (`?since=`), to resume from.
    pub since: Option<Since>,
    /// The session id, when the credential was a session cookie: open connections are
    /// re-checked against it. A secret: never logged.
    pub(crate) session: Option<String>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("identity", &self.identity)
            .field("room", &self.room)
            .field("carrier", &self.carrier)
            .field("upgrade", &self.upgrade)
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}

/// The handshake decision: settings from [`Config`] plus an [`Authenticator`].
#[derive(Debug)]
pub struct Gate<A> {
    origins: OriginPolicy,
    /// TLS here means the same origin is an `https://` one.
    transport: Transport,
    carriers: Carriers,
    protocols: Vec<String>,
    authenticator: A,
    revocations: Revocations,
    /// Handshakes waiting on the session store (PROTOCOL.md §12).
    lookups: Arc<Semaphore>,
}

impl<A: Authenticator> Gate<A> {
    /// A gate with `config`'s origin policy, carrier names and subprotocols, refusing what
    /// `revocations` lists (the server's own list, which its handle revokes into).
    pub fn new(config: &Config, authenticator: A, revocations: Revocations) -> Gate<A> {
        Gate {
            origins: config.origins.clone(),
            transport: config.transport(),
            carriers: config.carriers.clone(),
            protocols: config.protocols.clone(),
            authenticator,
            revocations,
            lookups: Arc::new(Semaphore::new(config.max_deciding)),
        }
    }

    /// The authenticator.
    pub fn authenticator(&self) -> &A {
        &self.authenticator
    }

    /// Decides whether `head` may become a chat connection; see the module docs for the
    /// order of the steps and why.
    pub async fn admit(&self, head: &RequestHead) -> Result<Admission, Rejection> {
        // 1. Route.
        let room = step("route", head.path().strip_prefix(CHAT_PATH).ok_or(Rejection::NotFound))?;
        let get = if head.method() == "GET" {
            Ok(())
        } else {
            Err(Rejection::MethodNotAllowed)
        };
        step("method", get)?;
        // 2. Room name.
        step("room name", room::check_name(room))?;
        let since = step("since", since(head))?;
        // 3. Upgrade headers.
        let upgrade = step("upgrade headers", Upgrade::check(head, &self.protocols))?;
        // 4. Origin, for the carrier the credential is in.
        let found = self.carriers.find(head);
        let carrier = found.as_ref().ok().and_then(|c| c.as_ref().map(|c| c.carrier()));
        step("origin", self.origins.check_via(head, carrier, self.transport))?;
        // 5. Credential.
        let missing = || Rejection::MissingCredential(self.carriers.missing_hint(head));
        let credential = step(
            "credential",
            found.map_err(Rejection::from).and_then(|c| c.ok_or_else(missing)),
        )?;
        // 6. Authenticator, then the revocation list: a credential may be valid and yet
        //    withdrawn (a logout, a leaked token).
        let lookup = match credential.carrier() {
            Carrier::SessionCookie => Some(step(
                "deciding place",
                self.lookups
                    .try_acquire()
                    .map_err(|_| Rejection::Unavailable("too many session lookups in progress".into())),
            )?),
            _ => None,
        };
        let identity = step(
            "authenticator",
            self.authenticator.authenticate(&credential, head).await,
        )?;
        drop(lookup);
        // The `sub` rule for every username, whoever vouched for it (a token, a session
        // store, an embedder's authenticator): it is shown to every member and logged.
        let named = check_subject(&identity.username)
            .map_err(|e| Rejection::InvalidCredential(format!("username: {e}").into()));
        step("username", named)?;
        let session = (credential.carrier() == Carrier::SessionCookie).then(|| credential.secret().to_owned());
        let revoked = match self.revocations.check(&identity, session.as_deref()) {
            None => Ok(()),
            Some(close) => Err(Rejection::Revoked(close.code_and_reason().1)),
        };
        step("revocation", revoked)?;
        // 7. Room authorization.
        let allowed = match identity.may_join(room) {
            true => Ok(()),
            false => Err(Rejection::Forbidden("room not allowed by this credential".into())),
        };
        step("room authorization", allowed)?;
        Ok(Admission {
            identity,
            room: room.to_owned(),
            carrier: credential.carrier(),
            upgrade,
            since,
            session,
        })
    }
}

/// The `since` query parameter (PROTOCOL.md §10): absent, or exactly one well-formed value.
fn since(head: &RequestHead) -> Result<Option<Since>, Rejection> {
    let mut found = None;
    for pair in head.query().unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(name).as_deref() != Some("since") {
            continue;
        }
        if found.is_some() {
            return Err(Rejection::BadRequest("since must be given once".into()));
        }
        let value = percent_decode(value).unwrap_or_default();
        found = Some(Since::parse(&value)?);
    }
    Ok(found)
}

/// One step's outcome, logged at debug level (`RUST_LOG=wsgate=debug`) so an operator can see
/// where a handshake stopped. The verdict's text never holds a credential (the refused
/// `Origin`, the one request value it may quote, comes escaped).
fn step<T>(name: &'static str, outcome: Result<T, Rejection>) -> Result<T, Rejection> {
    match &outcome {
        Ok(_) => debug!(step = name, "gate step passed"),
        Err(rejection) => debug!(step = name, reason = %rejection, "gate step refused"),
    }
    outcome
}
