//! One client's life after the upgrade (PROTOCOL.md §5): a single task with one `select!`
//! loop that reads the client's frames, writes the room's messages, pings, and watches the
//! clock.
//!
//! One task rather than a reader and a writer keeps a connection's memory small and its
//! shutdown simple. Writes are batched: everything waiting in the room channel is fed, then
//! flushed once. A client that cannot take our writes only ever blocks its own task, and
//! the room channel tells it afterwards how much it missed.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::oneshot;
use tokio::time::{Instant, interval_at, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::auth::{Authenticator, Identity};
use crate::bucket::TokenBucket;
use crate::close::Close;
use crate::config::Config;
use crate::jwt::unix_now;
use crate::messages::{self, Incoming};
use crate::metrics::Metrics;
use crate::revocation::Registration;
use crate::room::{Membership, Position};
use crate::shutdown::Shutdown;

/// Most messages written per flush, so a busy room cannot starve the rest of the loop.
const MAX_BATCH: usize = 64;

/// Most bytes taken from the room per flush (one larger message is always taken whole): what
/// a slow member has taken stays in memory until its socket takes it.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// How long a closing handshake may take before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// An upgraded, admitted connection and what it needs to run.
pub(crate) struct Connection<'a, S, A> {
    /// The socket.
    pub ws: WebSocketStream<S>,
    /// Who is connected; `username` goes into every message they send.
    pub identity: Identity,
    /// The room; dropping it (when `run` returns) leaves the room.
    pub membership: Membership,
    /// Limits and timers.
    pub config: &'a Config,
    /// Counters.
    pub metrics: &'a Metrics,
    /// Checks the tokens of in-band refreshes.
    pub authenticator: &'a A,
    /// This connection's entry among the open connections a revocation can reach.
    pub registration: Registration,
    /// Fires with the close a revocation (or an ended session) calls for.
    pub revoked: oneshot::Receiver<Close>,
}

/// What a client's text frame asks for.
enum Request {
    /// Answer the client alone (an error).
    Reply(Message),
    /// Renew the credential with this token.
    Refresh(String),
    /// Nothing more to do (a chat message was broadcast).
    Done,
}

/// How a `refresh` ended.
enum Refreshed {
    /// Accepted: the connection now expires at this `exp`.
    Until(i64),
    /// Refused; the connection keeps its old expiry.
    Refused(String),
    /// A valid token for the same user that no longer allows this room.
    RoomWithdrawn,
}

/// The next thing the connection's one expiry timer waits for.
#[derive(Clone, Copy)]
enum Expiry {
    /// Tell the client its credential expires at `exp`.
    Warn { at: Instant, exp: i64 },
    /// Close: `exp` plus the leeway has passed.
    Close { at: Instant },
}

impl<S: AsyncRead + AsyncWrite + Unpin, A: Authenticator> Connection<'_, S, A> {
    /// Runs until the client leaves, breaks a rule, expires, or the server shuts down. The
    /// welcome reports the `Position`; the messages follow it: what a resumed client missed
    /// (with Redis; on one node the membership reads them from the room's history). Boxed:
    /// a future keeps its arguments for its whole life, and these are needed only at first.
    pub async fn run(mut self, mut shutdown: Shutdown, greeting: Box<(Position, Vec<Message>)>) {
        let (position, missed) = *greeting;
        let config = self.config;
        let identity = &self.identity;
        let welcome = position.welcome(self.membership.room(), &identity.username, identity.expires_at);
        let welcome = messages::text(&welcome);
        drop(position);
        let greeted = async {
            self.ws.feed(welcome).await?;
            self.deliver(0, missed).await
        };
        // Boxed: once per connection, and its state would otherwise be part of the whole
        // connection's future.
        if !matches!(timeout(config.write_timeout, Box::pin(greeted)).await, Ok(Ok(()))) {
            return;
        }

        let mut ping = interval_at(Instant::now() + config.ping_interval, config.ping_interval);
        let mut last_heard = Instant::now();
        let mut bucket = TokenBucket::new(config.rate_limit, config.rate_burst);

        // Built once and pinned, not per loop turn: each would otherwise register (and drop)
        // a timer or a waiter on the shared shutdown channel every time a message wakes us.
        // One timer serves both the `expiring` warning and the close; a refresh resets it.
        let mut warned = false;
        let mut expiry = self.next_expiry(warned);
        let timer = sleep_until(expiry.map_or_else(far_future, Expiry::at));
        let shutting_down = shutdown.wait();
        tokio::pin!(timer, shutting_down);

        // Empty (no allocation) between deliveries: an idle connection holds no batch space.
        let mut batch = Vec::new();
        let close = loop {
            tokio::select! {
                _ = &mut shutting_down => break Some(Close::Shutdown.frame()),
                // A revocation, or the end of the session this connection came in with.
                revocation = &mut self.revoked => match revocation {
                    Ok(close) => break Some(close.frame()),
                    Err(_) => break None,
                },
                _ = &mut timer, if expiry.is_some() => match expiry {
                    Some(Expiry::Warn { exp, .. }) => {
                        warned = true;
                        expiry = self.next_expiry(warned);
                        timer.as_mut().reset(expiry.map_or_else(far_future, Expiry::at));
                        if !self.write(messages::expiring(exp)).await {
                            break None;
                        }
                    }
                    _ => break Some(Close::Expired.frame()),
                },
                _ = ping.tick() => {
                    let quiet = last_heard.elapsed();
                    if quiet >= config.idle_timeout {
                        break Some(Close::Idle.frame());
                    }
                    // Only quiet connections are pinged: any frame from the client already
                    // proves it is there, and a busy room should not pay for pings.
                    if quiet >= config.ping_interval
                        && !self.write(Message::Ping(Default::default())).await
                    {
                        break None;
                    }
                }
                frame = self.ws.next() => {
                    last_heard = Instant::now();
                    let request = match frame {
                        None => break None,
                        Some(Err(e)) => break close_for_error(&e),
                        Some(Ok(Message::Text(t))) if bucket.take(Instant::now()) => self.handle_text(&t),
                        Some(Ok(Message::Text(_))) => Request::Reply(messages::error("rate limited")),
                        Some(Ok(Message::Binary(_))) => break Some(Close::Binary.frame()),
                        Some(Ok(Message::Close(_))) => {
                            // tungstenite has queued its reply; send it and stop.
                            let _ = timeout(CLOSE_TIMEOUT, self.ws.flush()).await;
                            break None;
                        }
                        Some(Ok(_)) => Request::Done, // ping (answered by tungstenite), pong, raw frame
                    };
                    let reply = match request {
                        Request::Done => None,
                        Request::Reply(reply) => Some(reply),
                        // Boxed, as the close below: rare paths whose state would otherwise be
                        // part of every idle connection's future.
                        Request::Refresh(token) => match Box::pin(self.refresh(&token)).await {
                            Refreshed::Until(exp) => {
                                warned = false;
                                expiry = self.next_expiry(warned);
                                timer.as_mut().reset(expiry.map_or_else(far_future, Expiry::at));
                                Some(messages::refreshed(exp))
                            }
                            Refreshed::Refused(why) => Some(messages::error(&format!("refresh refused: {why}"))),
                            Refreshed::RoomWithdrawn => break Some(Close::RoomWithdrawn.frame()),
                        },
                    };
                    if let Some(reply) = reply
                        && !self.write(reply).await
                    {
                        break None;
                    }
                }
                missed = self.membership.recv(&mut batch, MAX_BATCH, MAX_BATCH_BYTES) => {
                    // Nested select: a write to a client that has stopped reading can wait up
                    // to the write timeout, and shutdown must not wait with it.
                    let delivery = timeout(config.write_timeout, self.deliver(missed, std::mem::take(&mut batch)));
                    tokio::select! {
                        result = delivery => match result {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => break None,
                            // The client has taken none of our bytes for the write timeout:
                            // close it rather than hold its share of memory any longer.
                            Err(_) => break Some(Close::NotReading.frame()),
                        },
                        _ = &mut shutting_down => break Some(Close::Shutdown.frame()),
                    }
                }
            }
        };
        if let Some(frame) = close {
            Box::pin(close_with(&mut self.ws, frame)).await;
        }
    }

    /// A text frame from the client: a chat message (validated, then serialized once for the
    /// whole room) or a typed request.
    fn handle_text(&self, text: &str) -> Request {
        const NOT_A_MESSAGE: &str = "expected a JSON object with a string \"message\"";
        let error = |why: &str| Request::Reply(messages::error(why));
        // serde would also read a struct from a JSON array (`["hi"]`); only an object is a
        // message.
        if !text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{') {
            let is_json = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
            return error(if is_json { NOT_A_MESSAGE } else { "invalid JSON" });
        }
        let incoming = match serde_json::from_str::<Incoming>(text) {
            Ok(incoming) => incoming,
            Err(e) if e.is_syntax() || e.is_eof() => return error("invalid JSON"),
            Err(_) => return error(NOT_A_MESSAGE),
        };
        match (incoming.r#type.as_deref(), incoming.message, incoming.token) {
            (None, Some(message), _) => {
                self.metrics.received();
                match self.membership.say(&message) {
                    Ok(()) => Request::Done,
                    Err(refused) => error(&refused.to_string()),
                }
            }
            (None, None, _) => error(NOT_A_MESSAGE),
            (Some("refresh"), _, Some(token)) => Request::Refresh(token.into_owned()),
            (Some("refresh"), _, None) => error("refresh refused: expected a string \"token\""),
            (Some(_), _, _) => error("unknown type"),
        }
    }

    /// Checks a refresh token: every token rule, the same user, and still this room. Only an
    /// accepted one changes the connection's identity.
    async fn refresh(&mut self, token: &str) -> Refreshed {
        if self.registration.session {
            // A session-cookie connection lives as long as its session: a token's `exp` must
            // not let it outlive a logout in the application that owns the session.
            return Refreshed::Refused("renew the session, not a token".to_owned());
        }
        let fresh = match self.authenticator.refresh(token).await {
            Ok(fresh) => fresh,
            Err(rejection) => return Refreshed::Refused(rejection.to_string()),
        };
        if fresh.username != self.identity.username {
            return Refreshed::Refused("the token is for another user".to_owned());
        }
        if let Some(revoked) = self.registration.check(&fresh) {
            return Refreshed::Refused(revoked.code_and_reason().1.to_owned());
        }
        if !fresh.may_join(self.membership.room()) {
            return Refreshed::RoomWithdrawn;
        }
        let Some(exp) = fresh.expires_at else {
            return Refreshed::Refused("the token has no exp".to_owned());
        };
        // Only an accepted refresh moves the connection's revocation entry to the new token.
        self.registration.refreshed(&fresh);
        self.identity = fresh;
        Refreshed::Until(exp)
    }

    /// The expiry timer's next stop: the warning, `refresh_window` before `exp`, unless
    /// `warned`; then the close, at `exp` plus the leeway. `None`: the credential never
    /// expires.
    fn next_expiry(&self, warned: bool) -> Option<Expiry> {
        let exp = self.identity.expires_at?;
        let window = i64::try_from(self.config.refresh_window.as_secs()).unwrap_or(i64::MAX);
        let leeway = i64::try_from(self.config.validation.leeway).unwrap_or(i64::MAX);
        Some(match warned {
            false => Expiry::Warn {
                at: deadline(exp.saturating_sub(window)),
                exp,
            },
            true => Expiry::Close {
                at: deadline(exp.saturating_add(leeway)),
            },
        })
    }

    /// Writes what filled a gap of `missed` messages (from Redis history), or else a
    /// `lagged` notice for them, in their place in the stream; then `batch`, then flushes
    /// once.
    async fn deliver(&mut self, missed: u64, mut batch: Vec<Message>) -> Result<(), WsError> {
        if missed > 0 {
            match Box::pin(self.membership.repair()).await {
                Some(found) => batch.splice(0..0, found).for_each(drop),
                None => {
                    self.metrics.lagged(missed);
                    self.ws.feed(messages::lagged(Some(missed))).await?;
                }
            }
        }
        let delivered = batch.len() as u64;
        for message in batch {
            self.ws.feed(message).await?;
        }
        self.ws.flush().await?;
        self.metrics.delivered(delivered);
        Ok(())
    }

    /// Sends one message; `false` if the connection is unusable or stalled past the write
    /// timeout.
    async fn write(&mut self, message: Message) -> bool {
        matches!(
            timeout(self.config.write_timeout, self.ws.send(message)).await,
            Ok(Ok(()))
        )
    }
}

/// The close frame for a read error, when the client is still there to be told.
fn close_for_error(error: &WsError) -> Option<CloseFrame> {
    match error {
        WsError::Capacity(_) => Some(Close::TooBig.frame()),
        WsError::Utf8(_) => Some(Close::InvalidUtf8.frame()),
        WsError::Protocol(_) => Some(Close::ProtocolError.frame()),
        _ => None,
    }
}

/// Sends `frame`, waits briefly for the client's reply, then lets the socket go. If the stream
/// broke (the rest of an oversized frame is still arriving), the raw bytes are drained so that
/// closing does not reset the connection and destroy the close frame before the client reads it.
pub(crate) async fn close_with<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, frame: CloseFrame) {
    let _ = timeout(CLOSE_TIMEOUT, async {
        ws.close(Some(frame)).await?;
        loop {
            match ws.next().await {
                Some(Ok(_)) => continue,
                None => return Ok(()),
                Some(Err(_)) => break,
            }
        }
        let mut sink = [0u8; 512];
        while ws.get_mut().read(&mut sink).await? > 0 {}
        Ok::<(), WsError>(())
    })
    .await;
}

/// The instant Unix time `at` falls on, by the monotonic clock. Clamped to a year ahead, so
/// a far-future `exp` cannot overflow `Instant` (which would panic).
fn deadline(at: i64) -> Instant {
    let left = u64::try_from(at.saturating_sub(unix_now())).unwrap_or(0);
    Instant::now() + Duration::from_secs(left).min(YEAR)
}

const YEAR: Duration = Duration::from_secs(86_400 * 365);

fn far_future() -> Instant {
    Instant::now() + YEAR
}

impl Expiry {
    fn at(self) -> Instant {
        match self {
            Expiry::Warn { at, .. } | Expiry::Close { at } => at,
        }
    }
}
