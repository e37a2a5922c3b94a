//! One client's life after the upgrade (SPEC §5): a single task with one `select!` loop that
//! reads the client's frames, writes the room's messages, pings, and watches the clock.
//!
//! One task rather than a reader and a writer keeps a connection's memory small and its
//! shutdown simple. Writes are batched: everything waiting in the room channel is fed, then
//! flushed once. A client that cannot take our writes only ever blocks its own task, and
//! the room channel tells it afterwards how much it missed.

use std::borrow::Cow;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::watch;
use tokio::time::{Instant, interval_at, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::auth::{Authenticator, Identity};
use crate::jwt::unix_now;
use crate::metrics::Metrics;
use crate::room::{Membership, text};
use crate::server::Shared;

/// Most messages written per flush, so a busy room cannot starve the rest of the loop.
const MAX_BATCH: usize = 64;

/// How long a closing handshake may take before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

type Ws = WebSocketStream<TcpStream>;

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow)]
    message: Cow<'a, str>,
}

#[derive(Serialize)]
struct Chat<'a> {
    r#type: &'static str,
    room: &'a str,
    username: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct Welcome<'a> {
    r#type: &'static str,
    room: &'a str,
    username: &'a str,
    message: String,
}

#[derive(Serialize)]
struct Lagged {
    r#type: &'static str,
    missed: u64,
}

#[derive(Serialize)]
struct ErrorReply<'a> {
    r#type: &'static str,
    error: &'a str,
}

fn error_reply(error: &str) -> Message {
    text(&ErrorReply { r#type: "error", error })
}

/// Runs a chat connection until the client leaves, breaks a rule, expires, or the server shuts
/// down. Leaving the room happens when `membership` is dropped at the end.
pub(crate) async fn run<A: Authenticator>(
    mut ws: Ws,
    identity: Identity,
    mut membership: Membership,
    shared: &Shared<A>,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = &shared.config;
    let metrics = &shared.metrics;
    let username = identity.username.as_str();
    let welcome = Welcome {
        r#type: "welcome",
        room: membership.room(),
        username,
        message: format!("Welcome, {username}!"),
    };
    if ws.send(text(&welcome)).await.is_err() {
        return;
    }

    let expiry = identity.expires_at.map(|at| {
        let left = u64::try_from(at.saturating_sub(unix_now())).unwrap_or(0);
        Instant::now() + Duration::from_secs(left)
    });
    let mut ping = interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    let mut last_heard = Instant::now();
    let mut bucket = TokenBucket::new(config.rate_limit, config.rate_burst);

    // Built once, not per loop turn: each would otherwise register (and drop) a timer or a
    // waiter on the shared shutdown channel every time a message wakes this connection.
    let expired = sleep_until(expiry.unwrap_or_else(far_future));
    let shutting_down = shutdown.changed();
    tokio::pin!(expired, shutting_down);

    let close = loop {
        tokio::select! {
            _ = &mut shutting_down => break Some(close_frame(1001, "server shutting down")),
            _ = &mut expired, if expiry.is_some() => {
                break Some(close_frame(4401, "token expired"));
            }
            _ = ping.tick() => {
                let quiet = last_heard.elapsed();
                if quiet >= config.idle_timeout {
                    break Some(close_frame(1001, "idle timeout"));
                }
                if quiet >= config.ping_interval && !write(&mut ws, Message::Ping(Default::default()), config.idle_timeout).await {
                    break None;
                }
            }
            frame = ws.next() => {
                last_heard = Instant::now();
                let reply = match frame {
                    None => break None,
                    Some(Err(e)) => break close_for_error(&e),
                    Some(Ok(Message::Text(t))) => {
                        if bucket.take(Instant::now()) {
                            handle_text(&t, username, &membership, metrics)
                        } else {
                            Some(error_reply("rate limited"))
                        }
                    }
                    Some(Ok(Message::Binary(_))) => break Some(close_frame(1003, "binary messages are not supported")),
                    Some(Ok(Message::Close(_))) => {
                        // tungstenite has queued its reply; send it and stop.
                        let _ = timeout(CLOSE_TIMEOUT, ws.flush()).await;
                        break None;
                    }
                    Some(Ok(_)) => None, // ping (answered by tungstenite), pong, raw frame
                };
                if let Some(reply) = reply
                    && !write(&mut ws, reply, config.idle_timeout).await
                {
                    break None;
                }
            }
            received = membership.receiver.recv() => {
                let delivery = deliver(&mut ws, received, &mut membership, metrics);
                tokio::select! {
                    result = timeout(config.idle_timeout, delivery) => match result {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break None,
                        // The client has taken nothing for a whole idle timeout.
                        Err(_) => break Some(close_frame(1008, "not reading")),
                    },
                    _ = &mut shutting_down => break Some(close_frame(1001, "server shutting down")),
                }
            }
        }
    };
    if let Some(frame) = close {
        close_with(&mut ws, frame).await;
    }
}

/// A chat message from the client: validated, then serialized once for the whole room.
/// Returns the reply for the sender alone, if any.
fn handle_text(text_in: &str, username: &str, membership: &Membership, metrics: &Metrics) -> Option<Message> {
    // serde would also read a struct from a JSON array (`["hi"]`); only an object is a message.
    if !text_in.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{') {
        return Some(error_reply(
            if serde_json::from_str::<serde::de::IgnoredAny>(text_in).is_ok() {
                "expected a JSON object with a string \"message\""
            } else {
                "invalid JSON"
            },
        ));
    }
    match serde_json::from_str::<Incoming>(text_in) {
        Ok(incoming) => {
            metrics.received();
            // `username` comes from the credential; any `username` the client sent is ignored.
            let chat = Chat {
                r#type: "message",
                room: membership.room(),
                username,
                message: &incoming.message,
            };
            membership.broadcast(text(&chat));
            None
        }
        Err(e) if e.is_syntax() || e.is_eof() => Some(error_reply("invalid JSON")),
        Err(_) => Some(error_reply("expected a JSON object with a string \"message\"")),
    }
}

/// Writes `first` and whatever else is already waiting (up to [`MAX_BATCH`]), then flushes
/// once. A lag becomes a `lagged` notice in its place in the stream.
async fn deliver(
    ws: &mut Ws,
    first: Result<Message, RecvError>,
    membership: &mut Membership,
    metrics: &Metrics,
) -> Result<(), WsError> {
    let mut next = Some(first);
    let mut delivered = 0;
    let mut batch = 0;
    while let Some(item) = next.take() {
        match item {
            Ok(message) => {
                ws.feed(message).await?;
                delivered += 1;
            }
            Err(RecvError::Lagged(missed)) => {
                metrics.lagged(missed);
                ws.feed(text(&Lagged {
                    r#type: "lagged",
                    missed,
                }))
                .await?;
            }
            // Cannot happen while we hold a sender; nothing to deliver either way.
            Err(RecvError::Closed) => break,
        }
        batch += 1;
        if batch < MAX_BATCH {
            next = match membership.receiver.try_recv() {
                Ok(message) => Some(Ok(message)),
                Err(TryRecvError::Lagged(missed)) => Some(Err(RecvError::Lagged(missed))),
                Err(TryRecvError::Empty | TryRecvError::Closed) => None,
            };
        }
    }
    ws.flush().await?;
    metrics.delivered(delivered);
    Ok(())
}

/// Sends one message; `false` if the connection is unusable or stalled past `limit`.
async fn write(ws: &mut Ws, message: Message, limit: Duration) -> bool {
    matches!(timeout(limit, ws.send(message)).await, Ok(Ok(())))
}

/// The close code for a read error, when the client is still there to be told.
fn close_for_error(error: &WsError) -> Option<CloseFrame> {
    match error {
        WsError::Capacity(_) => Some(close_frame(1009, "message too big")),
        WsError::Utf8(_) => Some(close_frame(1007, "invalid UTF-8")),
        WsError::Protocol(_) => Some(close_frame(1002, "protocol error")),
        _ => None,
    }
}

fn close_frame(code: u16, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }
}

/// Sends `frame`, waits briefly for the client's reply, then lets the socket go. If the stream
/// broke (the rest of an oversized frame is still arriving), the raw bytes are drained so that
/// closing does not reset the connection and destroy the close frame before the client reads it.
pub(crate) async fn close_with(ws: &mut Ws, frame: CloseFrame) {
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

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// A token bucket: `rate` messages per second on average, `burst` at once.
struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
