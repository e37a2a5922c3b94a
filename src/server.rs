//! The listener, the accept loop, the connection limit and shutdown: the only file that
//! touches sockets before a connection is admitted.
//!
//! Two budgets, visible here, because a socket costs memory and a file descriptor long before
//! anyone knows who is on the other end:
//! - sockets not yet admitted hold a place in the `pending` budget, where a new socket evicts
//!   the oldest silent one, so sockets that never authenticate cannot lock honest users out;
//! - upgraded connections hold a `Semaphore` permit (`max_connections`), moved into the
//!   connection's task and released when it ends, and a seat among their identity's
//!   connections (`identities`).
//!
//! The `shutdown` module announces shutdown and tells when every task has finished.
//!
//! Each accepted socket gets a task running `Socket::serve` (`socket.rs`): read the head
//! (bounded in size and time), answer the plain-HTTP routes, ask the [`Gate`](crate::gate::Gate), then either
//! refuse or upgrade and hand over to the connection loop.
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
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::admin;
use crate::auth::{Authenticator, JwtAuthenticator};
use crate::close::Close;
use crate::config::{Config, ConfigError};
use crate::handle::Handle;
use crate::http::Response;
use crate::jwt::Verifier;
use crate::pending;
use crate::rejection::Rejection;
use crate::shutdown::{Coordinator, Running, Shutdown};
use crate::socket::{Socket, log_refusal};
use crate::state::State;

/// How long shutdown waits for connections to close before giving up on them (PROTOCOL.md
/// §5 promises an exit within 5 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// How long the accept loop pauses after a failed accept. Usually the process is out of file
/// descriptors; the connection stays in the kernel's backlog, so retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

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
    /// The admin API's listener, when `config.admin_addr` is set. A std listener so that
    /// [`Server::from_listener`] can bind it without being async.
    admin: Option<std::net::TcpListener>,
    state: Arc<State<A>>,
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
        let listener = listen(addr).map_err(|error| ServeError::Bind { addr, error })?;
        Server::from_listener(listener, config, authenticator)
    }

    /// Serves on a listener you already hold (from systemd socket activation, a test, or a
    /// port you picked); `config.addr` is not used.
    pub fn from_listener(listener: TcpListener, config: Config, authenticator: A) -> Result<Server<A>, ServeError> {
        config.validate()?;
        let admin = match config.admin_addr {
            None => None,
            Some(addr) => {
                let bound = std::net::TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|()| l));
                Some(bound.map_err(|error| ServeError::Bind { addr, error })?)
            }
        };
        let state = Arc::new(State::new(config, authenticator)?);
        Ok(Server { listener, admin, state })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.state.config.addr)
    }

    /// The address the admin API is bound to, if it has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The server's counters; the handle stays readable while and after it runs.
    pub fn metrics(&self) -> Arc<crate::metrics::Metrics> {
        self.state.metrics.clone()
    }

    /// A handle to revoke credentials, end sessions, publish notices and stop the server
    /// from your own code, while it runs.
    pub fn handle(&self) -> Handle {
        self.state.handle()
    }

    /// Serves until `shutdown` completes, then stops accepting, closes every connection with
    /// `1001` and returns once they are gone (or after a few seconds' grace).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let coordinator = Coordinator::new();
        // Every background task starts under the coordinator, so none outlives `run`.
        self.state.cluster.start(&self.state.rooms, &coordinator);
        tokio::pin!(shutdown);
        let (sweep_stop, sweep_running) = coordinator.task();
        tokio::spawn(sweep(self.state.clone(), sweep_stop, sweep_running));
        let config = &self.state.config;
        if let (Some(admin), Some(key)) = (&self.admin, &config.admin_key) {
            match admin.try_clone().and_then(TcpListener::from_std) {
                Ok(admin) => {
                    let (stop, running) = coordinator.task();
                    let limits = admin::Limits {
                        handshake_timeout: config.handshake_timeout,
                        max_message_size: config.max_message_size,
                    };
                    tokio::spawn(admin::serve(admin, key.clone(), self.handle(), limits, stop, running));
                }
                Err(e) => warn!(error = %e, "the admin API could not start"),
            }
        }
        info!(addr = %self.local_addr(), "listening");
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.state.stop.notified() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        // A place in the pending budget, maybe by evicting the silent or
                        // slowest socket. With none to be had, refuse at once: no task, no
                        // waiting for a head, the descriptor closed right here.
                        let Some(slot) = self.state.pending.enter(pending::sent(&stream)) else {
                            self.refuse_at_once(&stream, peer);
                            continue;
                        };
                        let (shutdown, running) = coordinator.task();
                        let state = self.state.clone();
                        // Every byte read from it counts as its progress (TLS handshake, head).
                        let stream = slot.counted(stream);
                        let socket = Socket { stream, peer, state, slot, shutdown, _running: running };
                        tokio::spawn(socket.serve());
                    }
                    Err(e) => {
                        if let Some(suppressed) = self.state.accept_log.allow() {
                            warn!(error = %e, suppressed, "accept failed; backing off");
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
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

impl<A> Server<A> {
    /// `503` without reading anything: one non-blocking write into a fresh socket's empty send
    /// buffer, then close.
    fn refuse_at_once(&self, stream: &TcpStream, peer: SocketAddr) {
        let rejection = Rejection::Overloaded;
        // A TLS client cannot read a plain-HTTP 503 (it sees a protocol error): it is just
        // closed, as a full accept queue would.
        if self.state.config.transport() == crate::origin::Transport::Plain {
            let _ = stream.try_write(&Response::rejection(&rejection).to_bytes());
        }
        // Read what already arrived (without waiting): closing with unread input makes the
        // kernel send a reset, which could destroy the 503 before the client reads it.
        let mut sink = [0u8; 2048];
        for _ in 0..4 {
            if !matches!(stream.try_read(&mut sink), Ok(1..)) {
                break;
            }
        }
        self.state.metrics.rejected(&rejection);
        log_refusal(
            &self.state,
            peer,
            None,
            &rejection,
            "pending budget full, refused at once",
        );
    }
}

/// Once a second: frees the rooms kept for history that expired, and re-checks the sessions
/// of open connections, one slot of them, so each is checked once per `session_recheck` and a
/// node with many session connections spreads its store lookups evenly instead of sending
/// them all at once. A gone or expired session closes its connection with `4401 session
/// ended`; a store error keeps it.
async fn sweep<A: Authenticator>(state: Arc<State<A>>, mut shutdown: Shutdown, _running: Running) {
    let slots = state.config.session_recheck.as_secs().max(1);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let revocations = state.cluster.revocations();
    for slot in (0..slots).cycle() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        state.rooms.sweep(tokio::time::Instant::now());
        let recheck = async {
            for (id, session) in revocations.sessions_in_slot(slot, slots) {
                match state.gate.authenticator().session_alive(&session).await {
                    Ok(true) => {}
                    Ok(false) => revocations.end(id, Close::SessionEnded),
                    Err(e) => debug!(error = %e, "session recheck failed; the connection stays"),
                }
            }
        };
        // With a stalled store each lookup waits its deadline: shutdown must not.
        tokio::select! {
            () = recheck => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// The kernel's queue of connections not yet accepted. The default (128) overflows under a
/// flood of connects, and an honest client whose SYN is dropped waits a second to retry.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with a deep accept queue.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As std's and tokio's `bind` do: a restarted server can bind while old sockets linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
