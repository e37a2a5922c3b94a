//! The listener, the accept loop, the connection limit and shutdown: the only file that
//! touches sockets before a connection is admitted.
//!
//! Plain tokio primitives, all visible here: a `Semaphore` bounds upgraded connections (the
//! permit moves into the connection's task and is released when the task ends); the
//! `shutdown` module announces shutdown and tells when every task has finished.
//!
//! Each accepted socket gets a task running [`Socket::serve`]: read the head (bounded in size
//! and time), answer the plain-HTTP routes, ask the [`Gate`], then either refuse or upgrade
//! and hand over to the connection loop.
//!
//! ```no_run
//! use wsgate::{Config, Server};
//! use wsgate::jwt::Key;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = Config::default();
//! config.addr = "127.0.0.1:0".parse()?;
//! config.keys = vec![Key::new(b"an example secret of at least 32 bytes!!")?];
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
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::auth::{Authenticator, JwtAuthenticator};
use crate::config::{Config, ConfigError, RejectMode};
use crate::connection::{self, Connection};
use crate::gate::{CHAT_PATH, Gate};
use crate::handshake::Upgrade;
use crate::head::RequestHead;
use crate::http::{self, ReadError, Request, Response, Unread};
use crate::jwt::Verifier;
use crate::metrics::Metrics;
use crate::rejection::Rejection;
use crate::room::Rooms;
use crate::shutdown::{Coordinator, Running, Shutdown};

/// How long shutdown waits for connections to close before giving up on them (PROTOCOL.md
/// §5 promises an exit within 5 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// What every socket's task shares: one handle, no globals.
struct Shared<A> {
    config: Config,
    gate: Gate<A>,
    rooms: Rooms,
    metrics: Arc<Metrics>,
    /// Upgraded connections; a socket without a permit may still get `/healthz`.
    connections: Arc<Semaphore>,
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
/// `config.keys`), [`Server::bind_with`] (your own [`Authenticator`]) or
/// [`Server::from_listener`] (a socket you already hold), then [`Server::run`].
pub struct Server<A = JwtAuthenticator> {
    listener: TcpListener,
    shared: Arc<Shared<A>>,
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
    /// Binds `config.addr`, authenticating with `authenticator`. `config.keys` is only used
    /// for dev tokens.
    pub async fn bind_with(config: Config, authenticator: A) -> Result<Server<A>, ServeError> {
        config.validate()?;
        let addr = config.addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| ServeError::Bind { addr, error })?;
        Server::from_listener(listener, config, authenticator)
    }

    /// Serves on a listener you already hold (from systemd socket activation, a test, or a
    /// port you picked); `config.addr` is not used.
    pub fn from_listener(listener: TcpListener, config: Config, authenticator: A) -> Result<Server<A>, ServeError> {
        config.validate()?;
        let metrics = Arc::new(Metrics::default());
        let rooms = rooms(&config, &metrics)?;
        let shared = Arc::new(Shared {
            gate: Gate::new(&config, authenticator),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            config,
            rooms,
            metrics,
        });
        Ok(Server { listener, shared })
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
        let coordinator = Coordinator::new();
        tokio::pin!(shutdown);
        info!(addr = %self.local_addr(), "listening");
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let (shutdown, running) = coordinator.task();
                        let socket = Socket { stream, peer, shared: self.shared.clone(), shutdown, _running: running };
                        tokio::spawn(socket.serve());
                    }
                    Err(e) => {
                        // Usually out of file descriptors. The socket stays in the backlog, so
                        // retrying at once would spin: back off instead.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(self.listener);
        info!("shutting down");
        if timeout(SHUTDOWN_GRACE, coordinator.shut_down()).await.is_err() {
            warn!("connections still open after the shutdown grace period");
        }
    }
}

/// The room registry, joined to the other nodes through Redis when configured.
fn rooms(config: &Config, metrics: &Arc<Metrics>) -> Result<Rooms, ConfigError> {
    #[cfg(feature = "redis")]
    if let Some(url) = &config.redis_url {
        let relay = crate::relay::Relay::new(url, metrics.clone())
            .map_err(|e| ConfigError(format!("redis URL {url:?}: {e}")))?;
        let rooms = Rooms::with_bridge(config.room_buffer, Some(relay.clone()));
        relay.start(rooms.downgrade());
        return Ok(rooms);
    }
    let _ = metrics;
    Ok(Rooms::new(config.room_buffer))
}

/// One accepted socket, from the first byte to the last.
struct Socket<A> {
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared<A>>,
    shutdown: Shutdown,
    /// Dropped when the task ends; see the `shutdown` module.
    _running: Running,
}

impl<A: Authenticator> Socket<A> {
    async fn serve(mut self) {
        let _ = self.stream.set_nodelay(true);
        let shared = self.shared.clone();
        let config = &shared.config;
        let read = tokio::select! {
            read = timeout(config.handshake_timeout, http::read_request(&mut self.stream)) => read,
            _ = self.shutdown.wait() => return,
        };
        let request = match read {
            Ok(Ok(request)) => request,
            Ok(Err(ReadError::Head(e))) => return self.refuse(None, Rejection::from(e), Unread::Maybe).await,
            Ok(Err(ReadError::Gone)) => return,
            Err(_) => return debug!(peer = %self.peer, "handshake timeout, dropped"),
        };
        if !request.head.path().starts_with(CHAT_PATH) {
            let rooms_active = shared.rooms.active();
            let answer = crate::routes::answer(&request.head, self.peer, config, &shared.metrics, rooms_active);
            return match answer {
                Ok(response) => http::respond(&mut self.stream, &response, request.unread()).await,
                Err(rejection) => self.refuse(Some(&request.head), rejection, request.unread()).await,
            };
        }
        // Only upgrades need a slot; health checks and scrapes must work on a full server.
        let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
            return self
                .refuse(Some(&request.head), Rejection::Overloaded, request.unread())
                .await;
        };
        match shared.gate.admit(&request.head).await {
            Ok(admission) => self.upgrade(request, admission, permit).await,
            Err(rejection) if config.reject_with == RejectMode::Close && rejection.close_code().is_some() => {
                self.upgrade_and_close(request, rejection).await
            }
            Err(rejection) => {
                let unread = request.unread();
                self.refuse(Some(&request.head), rejection, unread).await
            }
        }
    }

    /// Upgrades and runs the chat connection; `permit` holds its slot until the end.
    async fn upgrade(self, request: Request, admission: crate::gate::Admission, permit: OwnedSemaphorePermit) {
        let shared = &self.shared;
        let Request { head, leftover } = request;
        let config = &shared.config;
        let Ok(ws) = admission
            .upgrade
            .accept(self.stream, leftover, config.max_message_size)
            .await
        else {
            return;
        };
        shared.metrics.accepted();
        let (peer, room) = (self.peer, &admission.room);
        let user = &admission.identity.username;
        info!(%peer, room, ?user, carrier = %admission.carrier, "handshake accepted");
        drop(head);

        let _open = shared.metrics.connection_opened();
        let connection = Connection {
            ws,
            membership: shared.rooms.join(room, user),
            identity: admission.identity,
            config,
            metrics: &shared.metrics,
        };
        connection.run(self.shutdown).await;
        debug!(%peer, "connection closed");
        drop(permit);
    }

    /// `reject-with = close`: upgrade, then close at once with the rejection's close code, so a
    /// browser script can read why.
    async fn upgrade_and_close(self, request: Request, rejection: Rejection) {
        let shared = &self.shared;
        log_refusal(
            self.peer,
            Some(&request.head),
            &rejection,
            "handshake rejected (closing after upgrade)",
        );
        shared.metrics.rejected(&rejection);
        let code = rejection
            .close_code()
            .expect("close mode is only chosen for a rejection with a close code");
        // The gate checked the upgrade headers before it could refuse with a close code.
        let Ok(upgrade) = Upgrade::check(&request.head, &shared.config.protocols) else {
            return;
        };
        let max_message_size = shared.config.max_message_size;
        if let Ok(mut ws) = upgrade.accept(self.stream, request.leftover, max_message_size).await {
            connection::close_with(&mut ws, crate::close::frame(code, rejection.to_string())).await;
        }
    }

    /// Answers with plain HTTP and closes.
    async fn refuse(mut self, head: Option<&RequestHead>, rejection: Rejection, unread: Unread) {
        log_refusal(self.peer, head, &rejection, "handshake rejected");
        self.shared.metrics.rejected(&rejection);
        http::respond(&mut self.stream, &Response::rejection(&rejection), unread).await;
    }
}

/// One log line per refusal. The path is logged escaped and cut short, never the query
/// string (it may hold a token).
fn log_refusal(peer: SocketAddr, head: Option<&RequestHead>, rejection: &Rejection, what: &str) {
    let path: Option<String> = head.map(|h| h.path().chars().take(64).collect());
    let status = rejection.status().as_u16();
    info!(%peer, ?path, status, reason = %rejection, "{what}");
}
