//! The listener, the accept loop, the connection limit and shutdown.
//!
//! Plain tokio primitives, all visible here: a `Semaphore` bounds open sockets (the permit
//! moves into the connection's task and is released when the task ends); a `watch` channel
//! announces shutdown; an `mpsc` channel whose senders live in the tasks tells, by closing,
//! that every task has finished.
//!
//! ```no_run
//! use wsgate::{Config, Server};
//! use wsgate::jwt::Key;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config {
//!     addr: "127.0.0.1:0".parse()?,
//!     keys: vec![Key::new(b"an example secret of at least 32 bytes!!")?],
//!     ..Config::default()
//! };
//! let server = Server::bind(config).await?;
//! println!("listening on {}", server.local_addr());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::auth::{Authenticator, JwtAuthenticator};
use crate::config::{Config, ConfigError};
use crate::connection;
use crate::handshake::{self, Decision, ReadError, Response};
use crate::jwt::Verifier;
use crate::metrics::Metrics;
use crate::rejection::Rejection;
use crate::room::Rooms;

/// How long shutdown waits for connections to close before giving up on them (SPEC §5 asks
/// for an exit within 5 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// What every connection task shares: one handle, no globals.
pub(crate) struct Shared<A> {
    pub config: Config,
    pub authenticator: A,
    pub rooms: Rooms,
    pub metrics: Arc<Metrics>,
}

/// The server could not start.
#[derive(Debug)]
pub enum ServeError {
    /// The configuration is unusable.
    Config(ConfigError),
    /// The address could not be bound (in use, not local, no permission).
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        error: std::io::Error,
    },
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::Config(e) => write!(f, "invalid configuration: {e}"),
            ServeError::Bind { addr, error } => write!(f, "cannot listen on {addr}: {error}"),
        }
    }
}

impl std::error::Error for ServeError {}

impl From<ConfigError> for ServeError {
    fn from(e: ConfigError) -> ServeError {
        ServeError::Config(e)
    }
}

/// A bound wsgate server. Build it with [`Server::bind`] (the built-in JWT authenticator over
/// `config.keys`) or [`Server::bind_with`] (your own [`Authenticator`]), then [`Server::run`].
pub struct Server<A = JwtAuthenticator> {
    listener: TcpListener,
    shared: Arc<Shared<A>>,
    limit: Arc<Semaphore>,
}

impl Server<JwtAuthenticator> {
    /// Binds `config.addr`, authenticating with HS256 tokens signed by `config.keys`.
    pub async fn bind(config: Config) -> Result<Server<JwtAuthenticator>, ServeError> {
        let verifier =
            Verifier::new(config.keys.clone(), config.validation.clone()).map_err(|e| ConfigError(e.to_string()))?;
        Server::bind_with(config, JwtAuthenticator::new(verifier)).await
    }
}

impl<A: Authenticator> Server<A> {
    /// Binds `config.addr`, authenticating with `authenticator`. `config.keys` is not used.
    pub async fn bind_with(config: Config, authenticator: A) -> Result<Server<A>, ServeError> {
        config.validate()?;
        let addr = config.addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| ServeError::Bind { addr, error })?;
        let limit = Arc::new(Semaphore::new(config.max_connections));
        let metrics = Arc::new(Metrics::default());
        #[cfg(feature = "redis")]
        let rooms = match &config.redis_url {
            Some(url) => {
                let relay = crate::relay::Relay::new(url, metrics.clone())
                    .map_err(|e| ConfigError(format!("redis URL {url:?}: {e}")))?;
                let rooms = Rooms::with_bridge(config.room_buffer, Some(relay.clone()));
                relay.start(rooms.downgrade());
                rooms
            }
            None => Rooms::new(config.room_buffer),
        };
        #[cfg(not(feature = "redis"))]
        let rooms = Rooms::new(config.room_buffer);
        let shared = Arc::new(Shared {
            config,
            authenticator,
            rooms,
            metrics,
        });
        Ok(Server {
            listener,
            shared,
            limit,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.shared.config.addr)
    }

    /// The server's counters; the handle stays readable while and after it runs.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting, closes every connection with
    /// `1001` and returns once they are gone (or after a few seconds' grace).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop, stopped) = watch::channel(false);
        let (done, mut all_done) = mpsc::channel::<()>(1);
        tokio::pin!(shutdown);
        info!(addr = %self.local_addr(), "listening");
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        // No permit: still answered (503), but without holding a slot.
                        let permit = self.limit.clone().try_acquire_owned().ok();
                        let shared = self.shared.clone();
                        let stopped = stopped.clone();
                        let done = done.clone();
                        tokio::spawn(async move {
                            serve_socket(stream, peer, permit, &shared, stopped).await;
                            drop(done);
                        });
                    }
                    Err(e) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(self.listener);
        info!("shutting down");
        let _ = stop.send(true);
        drop(done);
        if timeout(SHUTDOWN_GRACE, all_done.recv()).await.is_err() {
            warn!("connections still open after the shutdown grace period");
        }
    }
}

/// One accepted socket, from the first byte to the last.
async fn serve_socket<A: Authenticator>(
    mut stream: TcpStream,
    peer: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
    shared: &Shared<A>,
    mut stopped: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let config = &shared.config;
    let read = tokio::select! {
        read = timeout(config.handshake_timeout, handshake::read_head(&mut stream)) => read,
        _ = stopped.changed() => return,
    };
    let (head, leftover) = match read {
        Ok(Ok(read)) => read,
        Ok(Err(ReadError::Head(e))) => return refuse(&mut stream, peer, "-", Rejection::from(e), false, shared).await,
        Ok(Err(ReadError::Gone)) => return,
        Err(_) => {
            debug!(%peer, "handshake timeout, dropped");
            return;
        }
    };
    // The path is logged, never the query string (it may hold a token); long paths are cut.
    let path: String = head.path().chars().take(64).collect();
    let consumed_all = leftover.is_empty();
    // Only upgrades need a slot; health checks and scrapes must work on a full server.
    if permit.is_none() && head.path().starts_with(handshake::CHAT_PATH) {
        return refuse(&mut stream, peer, &path, Rejection::Overloaded, consumed_all, shared).await;
    }
    let (room, identity, credential, protocol) = match handshake::decide(&head, peer, shared).await {
        Decision::Respond(response) => return handshake::respond(&mut stream, &response, consumed_all).await,
        Decision::Reject(rejection) => return refuse(&mut stream, peer, &path, rejection, consumed_all, shared).await,
        Decision::UpgradeAndClose { rejection, protocol } => {
            shared.metrics.rejected(&rejection);
            info!(%peer, path, status = rejection.status(), reason = %rejection, "handshake rejected (closing after upgrade)");
            if let Ok(mut ws) = handshake::upgrade(stream, &head, leftover, protocol.as_deref(), config).await {
                let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
                    code: rejection.close_code().unwrap_or(4401).into(),
                    reason: rejection.close_reason().into(),
                };
                connection::close_with(&mut ws, frame).await;
            }
            return;
        }
        Decision::Upgrade {
            room,
            identity,
            credential,
            protocol,
        } => (room, identity, credential, protocol),
    };
    let Ok(ws) = handshake::upgrade(stream, &head, leftover, protocol.as_deref(), config).await else {
        return;
    };
    shared.metrics.accepted();
    info!(%peer, room, user = %identity.username, carrier = %credential.carrier(), "handshake accepted");
    drop((head, credential));

    let membership = shared.rooms.join(&room, &identity.username);
    shared.metrics.connection_opened();
    connection::run(ws, identity, membership, shared, stopped).await;
    shared.metrics.connection_closed();
    debug!(%peer, room, "connection closed");
    drop(permit);
}

async fn refuse<A>(
    stream: &mut TcpStream,
    peer: SocketAddr,
    path: &str,
    rejection: Rejection,
    consumed_all: bool,
    shared: &Shared<A>,
) {
    shared.metrics.rejected(&rejection);
    info!(%peer, path, status = rejection.status(), reason = %rejection, "handshake rejected");
    handshake::respond(stream, &Response::rejection(&rejection), consumed_all).await;
}
