//! One accepted socket, from its first byte to its last: with TLS, the TLS handshake; read
//! the head (bounded in size and time, and evictable while it waits), answer the plain-HTTP
//! routes, ask the gate, take the budgets that need to know who it is, then refuse or upgrade
//! and run the connection. Everything after the TLS handshake is one code path over any
//! `AsyncRead + AsyncWrite` stream.
//!
//! The server's accept loop (`server.rs`) makes one [`Socket`] per accepted connection and
//! spawns [`Socket::serve`]; everything the sockets share is in `State` (`state.rs`).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, timeout_at};
use tracing::{debug, info, warn};

use crate::auth::Authenticator;
use crate::config::{Config, RejectMode};
use crate::connection::{self, Connection};
use crate::credentials::Carrier;
use crate::gate::{Admission, CHAT_PATH};
use crate::handshake::Upgrade;
use crate::head::RequestHead;
use crate::http::{self, ReadError, Request, Response, Unread};
use crate::identities::Seat;
use crate::metrics::Gauges;
use crate::pending::{Counted, Slot};
use crate::rejection::Rejection;
use crate::shutdown::{Running, Shutdown};
use crate::state::State;

/// One accepted socket, from the first byte to the last; `S` is TCP (counted for the pending
/// budget's eviction by progress), or TLS over it.
pub(crate) struct Socket<A, S = Counted<TcpStream>> {
    pub(crate) stream: S,
    pub(crate) peer: SocketAddr,
    pub(crate) state: Arc<State<A>>,
    /// Its place in the pending budget, given up once upgraded.
    pub(crate) slot: Slot,
    pub(crate) shutdown: Shutdown,
    /// Dropped when the task ends; see the `shutdown` module.
    pub(crate) _running: Running,
}

impl<A: Authenticator> Socket<A> {
    /// Not an `async fn`: one would keep its own copy of the socket (its argument) for the
    /// whole connection beside the one `serve_http` moves on with, 768 bytes per connection.
    pub(crate) fn serve(self) -> impl Future<Output = ()> + Send + 'static {
        let _ = self.stream.get_ref().set_nodelay(true);
        // One deadline for the TLS handshake, the head and the decision: a slow client and a
        // slow authenticator hold a pending place for the same bounded time.
        let deadline = Instant::now() + self.state.config.handshake_timeout;
        // Boxed: the TLS path's state (rustls' connection, the TLS stream under the whole
        // connection loop) is several KiB, and unboxed it would size every plain socket's
        // task as well.
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.state.config.tls {
            let acceptor = tls.acceptor();
            return futures_util::future::Either::Left(Box::pin(self.serve_tls(acceptor, deadline)));
        }
        #[cfg(feature = "tls")]
        return futures_util::future::Either::Right(self.serve_http(deadline));
        #[cfg(not(feature = "tls"))]
        self.serve_http(deadline)
    }

    /// The TLS handshake, in the socket's pending place: evictable like a socket that has not
    /// sent its head, so a client that opens TCP and never says hello costs no more than one
    /// that never sends a head (slowloris, slot exhaustion). Then the same HTTP path.
    #[cfg(feature = "tls")]
    async fn serve_tls(mut self, acceptor: tokio_rustls::TlsAcceptor, deadline: Instant) {
        // Plain HTTP on a TLS port is a misconfigured client or link: tell it in plain HTTP
        // rather than leave it with a reset. Peeking reads nothing, so TLS starts clean.
        let mut first = [0u8; 1];
        let peeked = tokio::select! {
            peeked = timeout_at(deadline, self.stream.get_ref().peek(&mut first)) => peeked,
            _ = &mut self.slot.evicted => return debug!(peer = %self.peer, "evicted by a newer socket"),
            _ = self.shutdown.wait() => return,
        };
        match peeked {
            Ok(Ok(1..)) if first[0] == crate::tls::HANDSHAKE_RECORD => {}
            Ok(Ok(1..)) => {
                self.state.metrics.tls_failed();
                let rejection = Rejection::BadRequest("this port speaks TLS: use https:// or wss://".into());
                return self.refuse(None, rejection, Unread::Maybe).await;
            }
            Ok(_) => return,
            Err(_) => {
                self.state.metrics.tls_failed();
                return debug!(peer = %self.peer, "TLS handshake timeout, dropped");
            }
        }
        let Socket {
            stream,
            peer,
            state,
            mut slot,
            mut shutdown,
            _running,
        } = self;
        let accepted = tokio::select! {
            accepted = timeout_at(deadline, acceptor.accept(stream)) => accepted,
            _ = &mut slot.evicted => return debug!(%peer, "evicted by a newer socket"),
            _ = shutdown.wait() => return,
        };
        let stream = match accepted {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                state.metrics.tls_failed();
                return debug!(%peer, error = %e, "TLS handshake failed");
            }
            Err(_) => {
                state.metrics.tls_failed();
                return debug!(%peer, "TLS handshake timeout, dropped");
            }
        };
        // Boxed, so the connection's future holds a pointer rather than rustls' state (a few
        // KiB) in each of its await points.
        let socket = Socket {
            stream: Box::new(stream),
            peer,
            state,
            slot,
            shutdown,
            _running,
        };
        socket.serve_http(deadline).await
    }
}

impl<A: Authenticator, S: AsyncRead + AsyncWrite + Unpin> Socket<A, S> {
    /// Reads the head, before `deadline`, and carries on from there.
    async fn serve_http(mut self, deadline: Instant) {
        let state = self.state.clone();
        let config = &state.config;
        let read = tokio::select! {
            read = timeout_at(deadline, http::read_request(&mut self.stream)) => read,
            _ = &mut self.slot.evicted => return debug!(peer = %self.peer, "evicted by a newer socket"),
            _ = self.shutdown.wait() => return,
        };
        if !self.slot.head_read() {
            return; // evicted just as the head arrived
        }
        let request = match read {
            Ok(Ok(request)) => request,
            Ok(Err(ReadError::Head(e))) => return self.refuse(None, Rejection::from(e), Unread::Maybe).await,
            Ok(Err(ReadError::Gone)) => return,
            Err(_) => return debug!(peer = %self.peer, "handshake timeout, dropped"),
        };
        if !request.head.path().starts_with(CHAT_PATH) {
            let gauges = Gauges {
                rooms_active: state.rooms.active(),
                rooms_kept: state.rooms.kept(),
                pending_sockets: state.pending.len(),
                queued_bytes: state.rooms.queued_bytes(),
                revocations: state.cluster.revocations().len(),
                control_pending: state.cluster.pending(),
                tls: config.transport() == crate::origin::Transport::Tls,
                tls_not_after: tls_not_after(config),
            };
            let answer = crate::routes::answer(&request.head, self.peer, config, &state.metrics, &gauges);
            return match answer {
                Ok(response) => http::respond(&mut self.stream, &response, request.unread()).await,
                Err(rejection) => self.refuse(Some(&request.head), rejection, request.unread()).await,
            };
        }
        let admitted = match timeout_at(deadline, state.gate.admit(&request.head)).await {
            Ok(admitted) => admitted,
            Err(_) => Err(Rejection::Unavailable("authentication took too long".into())),
        };
        // Then the budgets that need to know who it is, or that only upgrades use: the
        // identity's seat, then a connection slot (health checks and scrapes never need one).
        let admitted = admitted.and_then(|admission| {
            let seat = state.identities.enter(&admission.identity.username)?;
            let permit = state
                .connections
                .clone()
                .try_acquire_owned()
                .map_err(|_| Rejection::Overloaded)?;
            Ok((admission, seat, permit))
        });
        match admitted {
            Ok((admission, seat, permit)) => self.upgrade(request, admission, (seat, permit)).await,
            Err(rejection) if config.reject_with == RejectMode::Close && rejection.close_code().is_some() => {
                self.upgrade_and_close(request, rejection).await
            }
            Err(rejection) => {
                let unread = request.unread();
                self.refuse(Some(&request.head), rejection, unread).await
            }
        }
    }

    /// Upgrades and runs the chat connection; `places` hold its identity seat and connection
    /// slot until the end.
    async fn upgrade(self, request: Request, admission: Admission, places: (Seat, OwnedSemaphorePermit)) {
        let Socket {
            stream,
            peer,
            state,
            slot,
            shutdown,
            _running,
        } = self;
        let Request { head, leftover } = request;
        let config = &state.config;
        let Ok(ws) = admission
            .upgrade
            .accept(stream, leftover, config.max_message_size)
            .await
        else {
            return;
        };
        // Admitted: from here the connection budgets hold it, not the pending one.
        drop(slot);
        state.metrics.accepted();
        let room = &admission.room;
        let user = &admission.identity.username;
        info!(%peer, room, ?user, carrier = %admission.carrier, "handshake accepted");
        // The client sent its token as a subprotocol but offered nothing we can echo: a
        // browser fails such a connection on its side, so say why here.
        if admission.carrier == Carrier::Subprotocol && admission.upgrade.protocol().is_none() {
            state.metrics.without_protocol();
            if let Some(suppressed) = state.advice_log.allow() {
                warn!(
                    %peer,
                    suppressed,
                    "client offered only a bearer. subprotocol, so none is echoed and browsers fail the connection; browsers need [\"chat\", \"bearer.<jwt>\"]"
                );
            }
        }
        drop(head);

        let mut ws = ws;
        let revocations = state.cluster.revocations();
        let (registration, revoked) = match revocations.register(&admission.identity, admission.session.as_deref()) {
            Ok(registered) => registered,
            Err(close) => return connection::close_with(&mut ws, close.frame()).await,
        };
        let _open = state.metrics.connection_opened();
        // Built in a block so that what went into it is gone before the connection's long
        // await: a future keeps room for every local still in scope there.
        let (connection, greeting) = {
            let seat = &places.0;
            let replay = &mut |bytes| seat.replay(bytes);
            let entered = state.rooms.enter(room, user, admission.since.as_ref(), replay).await;
            let connection = Connection {
                ws,
                membership: entered.membership,
                identity: admission.identity,
                config,
                metrics: &state.metrics,
                authenticator: state.gate.authenticator(),
                registration,
                revoked,
            };
            (connection, Box::new((entered.position, entered.missed)))
        };
        connection.run(shutdown, greeting).await;
        debug!(%peer, "connection closed");
        drop(places);
    }

    /// `reject-with = close`: upgrade, then close at once with the rejection's close code, so a
    /// browser script can read why.
    async fn upgrade_and_close(self, request: Request, rejection: Rejection) {
        let state = &self.state;
        let what = "handshake rejected (closing after upgrade)";
        log_refusal(state, self.peer, Some(&request.head), &rejection, what);
        state.metrics.rejected(&rejection);
        let code = rejection
            .close_code()
            .expect("close mode is only chosen for a rejection with a close code");
        // The gate checked the upgrade headers before it could refuse with a close code.
        let Ok(upgrade) = Upgrade::check(&request.head, &state.config.protocols) else {
            return;
        };
        let max_message_size = state.config.max_message_size;
        let Socket { stream, mut slot, .. } = self;
        // From here it only waits for the client's side of the close: evictable again.
        slot.linger();
        let close = async {
            if let Ok(mut ws) = upgrade.accept(stream, request.leftover, max_message_size).await {
                connection::close_with(&mut ws, crate::close::frame(code, rejection.to_string())).await;
            }
        };
        tokio::select! {
            _ = close => {}
            _ = &mut slot.evicted => {}
        }
    }

    /// Answers with plain HTTP and closes.
    async fn refuse(mut self, head: Option<&RequestHead>, rejection: Rejection, unread: Unread) {
        log_refusal(&self.state, self.peer, head, &rejection, "handshake rejected");
        self.state.metrics.rejected(&rejection);
        // Answered, it only lingers so the answer is not lost to a reset: evictable again, or
        // a flood of complete but refused requests would hold every pending place.
        self.slot.linger();
        let response = Response::rejection(&rejection);
        tokio::select! {
            _ = http::respond(&mut self.stream, &response, unread) => {}
            _ = &mut self.slot.evicted => {}
        }
    }
}

/// The served certificate's expiry in Unix seconds, for `/metrics`.
fn tls_not_after(config: &Config) -> Option<i64> {
    #[cfg(feature = "tls")]
    return config
        .tls
        .as_ref()
        .and_then(|tls| tls.not_after())
        .map(|expiry| expiry.0);
    #[cfg(not(feature = "tls"))]
    {
        let _ = config;
        None
    }
}

/// A log line for a refusal, at most a few per second per reason. The path is logged quoted
/// and escaped (`?`) and cut short, never the query string (it may hold a token).
pub(crate) fn log_refusal<A>(
    state: &State<A>,
    peer: SocketAddr,
    head: Option<&RequestHead>,
    rejection: &Rejection,
    what: &str,
) {
    let Some(suppressed) = state.refusal_log[rejection.label() as usize].allow() else {
        return;
    };
    let path: String = head.map(|h| h.path().chars().take(64).collect()).unwrap_or_default();
    let status = rejection.status().as_u16();
    info!(%peer, ?path, status, reason = %rejection, suppressed, "{what}");
}
