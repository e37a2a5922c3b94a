//! The opening handshake, by hand: read the request head, route it, decide, then either answer
//! with plain HTTP or write the `101` ourselves and hand the socket to tokio-tungstenite.
//!
//! Doing this ourselves rather than with tungstenite's accept callback is what lets us
//! (a) await an async authenticator, (b) answer `/healthz`, `/metrics` and every refusal with
//! a real HTTP response, and (c) keep bytes a client pipelined right after its head.
//!
//! The decision, in order (SPEC §1–§4):
//! route and method → room name → upgrade headers → origin → credential → authenticator →
//! room authorization. Origin comes before authentication so a page on another site is
//! refused the same way whether or not its credential is any good.

use std::time::Duration;

use std::net::SocketAddr;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::auth::{Authenticator, Identity};
use crate::config::{Config, RejectMode};
use crate::credentials::{Credential, select_protocol};
use crate::head::{HeadError, MAX_HEAD_BYTES, RequestHead};
use crate::rejection::Rejection;
use crate::server::Shared;

/// The path prefix of chat rooms: `/ws/chat/{room}`.
pub const CHAT_PATH: &str = "/ws/chat/";

/// The demo page, compiled in: one file, no external assets, no build step.
const DEMO_PAGE: &str = include_str!("demo.html");

/// The demo page may run its own inline script and talk to this origin only; nothing may
/// frame it, and no URL (which may carry a `?token=`) leaks through `Referer`.
const DEMO_HEADERS: [(&str, &str); 3] = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
    ),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
];

/// What to do with a request whose head has been read.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Answer `200` with this and close.
    Respond(Response),
    /// Refuse with plain HTTP and close.
    Reject(Rejection),
    /// Upgrade and run the chat connection.
    Upgrade {
        room: String,
        identity: Identity,
        credential: Credential,
        protocol: Option<String>,
    },
    /// `reject-with = close`: upgrade, then close at once with the rejection's close code.
    UpgradeAndClose {
        rejection: Rejection,
        protocol: Option<String>,
    },
}

/// A complete plain-HTTP answer.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Response {
    fn ok(content_type: &'static str, body: String) -> Response {
        Response {
            status: 200,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    /// The one-line plain-text answer to a rejection, with the headers SPEC §4 asks for.
    pub(crate) fn rejection(rejection: &Rejection) -> Response {
        let mut headers = Vec::new();
        if let Some(challenge) = rejection.www_authenticate() {
            headers.push(("WWW-Authenticate", challenge));
        }
        match rejection {
            Rejection::Overloaded => headers.push(("Retry-After", "1".to_owned())),
            Rejection::MethodNotAllowed => headers.push(("Allow", "GET".to_owned())),
            // RFC 6455 §4.4: say which version we speak.
            Rejection::BadRequest(why) if why.contains("Sec-WebSocket-Version") => {
                headers.push(("Sec-WebSocket-Version", "13".to_owned()))
            }
            _ => {}
        }
        let body = format!("{rejection}\n");
        Response {
            status: rejection.status(),
            content_type: "text/plain; charset=utf-8",
            headers,
            body,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&self.body);
        out.into_bytes()
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Why reading a head ended without one.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed or the socket failed: nothing to answer.
    Gone,
    /// The bytes are not an acceptable head: answer with this.
    Head(HeadError),
}

/// Reads one request head (at most [`MAX_HEAD_BYTES`]); returns it with the bytes that came
/// after it, which belong to the WebSocket stream. The caller bounds the time.
pub(crate) async fn read_head(stream: &mut TcpStream) -> Result<(RequestHead, Vec<u8>), ReadError> {
    // Grown on demand and dropped after the handshake, so an idle connection does not keep it.
    let mut buf = vec![0; 1024];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize((buf.len() * 2).min(MAX_HEAD_BYTES), 0);
        }
        let n = stream.read(&mut buf[len..]).await.map_err(|_| ReadError::Gone)?;
        if n == 0 {
            return Err(ReadError::Gone);
        }
        let start = len.saturating_sub(3);
        len += n;
        // Parse only once the blank line may have arrived: a client dribbling one byte at a
        // time must not make us re-parse the whole head per byte.
        let fresh = &buf[start..len];
        let may_be_complete = fresh.windows(2).any(|w| w == b"\n\n") || fresh.windows(3).any(|w| w == b"\n\r\n");
        if !may_be_complete && len < MAX_HEAD_BYTES {
            continue;
        }
        match RequestHead::parse(&buf[..len]) {
            Ok(Some((head, head_len))) => return Ok((head, buf[head_len..len].to_vec())),
            Ok(None) => continue,
            Err(e) => return Err(ReadError::Head(e)),
        }
    }
}

/// Decides what to do with `head` from `peer` (everything but the connection limit, which
/// the server checks before).
pub(crate) async fn decide<A: Authenticator>(head: &RequestHead, peer: SocketAddr, shared: &Shared<A>) -> Decision {
    let config = &shared.config;
    let room = match head.path() {
        "/" if config.demo && head.method() == "GET" => {
            let mut page = Response::ok("text/html; charset=utf-8", DEMO_PAGE.to_owned());
            page.headers
                .extend(DEMO_HEADERS.iter().map(|(n, v)| (*n, (*v).to_owned())));
            return Decision::Respond(page);
        }
        "/dev/token" if config.dev_tokens && head.method() == "GET" => return dev_token(head, peer, config),
        "/healthz" if head.method() == "GET" => return Decision::Respond(Response::ok("text/plain", "ok\n".into())),
        "/metrics" if head.method() == "GET" => {
            let body = shared.metrics.render(shared.rooms.active());
            return Decision::Respond(Response::ok("text/plain; version=0.0.4; charset=utf-8", body));
        }
        "/healthz" | "/metrics" => return reject(Rejection::MethodNotAllowed),
        "/" if config.demo => return reject(Rejection::MethodNotAllowed),
        "/dev/token" if config.dev_tokens => return reject(Rejection::MethodNotAllowed),
        path => match path.strip_prefix(CHAT_PATH) {
            None => return reject(Rejection::NotFound),
            Some(_) if head.method() != "GET" => return reject(Rejection::MethodNotAllowed),
            Some(room) if !is_valid_room(room) => {
                return reject(Rejection::BadRequest(
                    "room must be 1-64 characters of [A-Za-z0-9_.-]".into(),
                ));
            }
            Some(room) => room,
        },
    };
    if let Err(rejection) = check_upgrade(head) {
        return reject(rejection);
    }
    let protocol = select_protocol(head, &config.protocols).map(str::to_owned);

    let found = config.carriers.find(head);
    let carrier = found.as_ref().ok().and_then(|c| c.as_ref().map(Credential::carrier));
    // Origin failures are always HTTP, in either reject mode: a cross-site page is not a user
    // who needs a readable close code.
    if let Err(rejection) = config.origins.check(head, carrier) {
        return reject(rejection);
    }
    let result = async {
        let credential = found?.ok_or(Rejection::MissingCredential)?;
        let identity = shared.authenticator.authenticate(&credential, head).await?;
        if !identity.may_join(room) {
            return Err(Rejection::Forbidden("room not allowed by this credential".into()));
        }
        Ok((identity, credential))
    };
    match result.await {
        Ok((identity, credential)) => Decision::Upgrade {
            room: room.to_owned(),
            identity,
            credential,
            protocol,
        },
        Err(rejection) if config.reject_with == RejectMode::Close && rejection.close_code().is_some() => {
            Decision::UpgradeAndClose { rejection, protocol }
        }
        Err(rejection) => reject(rejection),
    }
}

/// A token for `?sub=NAME`, one hour, any room. Only a client on this machine that addresses
/// us by a loopback name gets one: checking `Host` too stops DNS rebinding, where a web page
/// on an attacker's domain that resolves to 127.0.0.1 would otherwise count as "local".
fn dev_token(head: &RequestHead, peer: SocketAddr, config: &Config) -> Decision {
    let host_is_loopback = head.header("host").is_some_and(is_loopback_host);
    if !peer.ip().is_loopback() || !host_is_loopback {
        return reject(Rejection::Forbidden("dev tokens are for this machine only".into()));
    }
    let sub = head
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("sub="));
    let sub = sub.and_then(crate::credentials::percent_decode).unwrap_or_default();
    if sub.is_empty() || sub.chars().count() > crate::jwt::MAX_SUBJECT_CHARS {
        return reject(Rejection::BadRequest("sub must be 1-128 characters".into()));
    }
    let Some(key) = config.keys.first() else {
        return reject(Rejection::NotFound);
    };
    let token = key.sign(&crate::jwt::Claims::new(sub, crate::jwt::unix_now() + 3600));
    Decision::Respond(Response::ok("text/plain; charset=utf-8", token))
}

/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn reject(rejection: Rejection) -> Decision {
    Decision::Reject(rejection)
}

/// SPEC §1: 1–64 characters of `[A-Za-z0-9_.-]`.
pub fn is_valid_room(room: &str) -> bool {
    (1..=64).contains(&room.len()) && room.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// RFC 6455 §4.2.1: everything a server must see before it may upgrade.
fn check_upgrade(head: &RequestHead) -> Result<(), Rejection> {
    let bad = |why: &'static str| Err(Rejection::BadRequest(why.into()));
    if !head.is_http11() {
        return bad("a WebSocket upgrade needs HTTP/1.1");
    }
    if !head.list("upgrade").any(|t| t.eq_ignore_ascii_case("websocket")) {
        return bad("expected Upgrade: websocket");
    }
    if !head.list("connection").any(|t| t.eq_ignore_ascii_case("upgrade")) {
        return bad("expected Connection: Upgrade");
    }
    let mut versions = head.headers("sec-websocket-version");
    if (versions.next().map(str::trim), versions.next()) != (Some("13"), None) {
        return bad("Sec-WebSocket-Version must be 13");
    }
    let mut keys = head.headers("sec-websocket-key");
    let key_ok = match (keys.next(), keys.next()) {
        (Some(key), None) => base64::engine::general_purpose::STANDARD
            .decode(key.trim())
            .is_ok_and(|k| k.len() == 16),
        _ => false,
    };
    if !key_ok {
        return bad("Sec-WebSocket-Key must be one base64 value of 16 bytes");
    }
    Ok(())
}

/// Writes `response` and closes the socket. `consumed_all`: we have read everything the
/// client sent (a complete head, nothing after it), so closing cannot reset the connection;
/// otherwise the close lingers until the client is done.
pub(crate) async fn respond(stream: &mut TcpStream, response: &Response, consumed_all: bool) {
    let _ = stream.write_all(&response.to_bytes()).await;
    if consumed_all {
        let _ = stream.shutdown().await;
    } else {
        linger_close(stream).await;
    }
}

/// Half-closes, then reads (and discards) what the client still sends for a moment. Closing a
/// socket with unread input makes the kernel send a reset, which can destroy the response we
/// just wrote before the client reads it.
pub(crate) async fn linger_close(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 512];
    let drain = async {
        let mut total = 0usize;
        while let Ok(n @ 1..) = stream.read(&mut sink).await {
            total += n;
            if total > 64 * 1024 {
                break;
            }
        }
    };
    let _ = timeout(Duration::from_secs(1), drain).await;
}

/// Writes the `101` for `head` and turns the socket into a WebSocket stream, keeping the bytes
/// that arrived after the head.
pub(crate) async fn upgrade(
    mut stream: TcpStream,
    head: &RequestHead,
    leftover: Vec<u8>,
    protocol: Option<&str>,
    config: &Config,
) -> std::io::Result<WebSocketStream<TcpStream>> {
    let key = head.header("sec-websocket-key").unwrap_or_default().trim();
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        derive_accept_key(key.as_bytes())
    );
    if let Some(protocol) = protocol {
        response.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
    }
    response.push_str("\r\n");
    stream.write_all(response.as_bytes()).await?;
    Ok(WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(websocket_config(config))).await)
}

/// tungstenite settings sized for chat: small read buffer (the default allocates 128 KiB per
/// connection up front), batched writes, and bounded buffers.
pub(crate) fn websocket_config(config: &Config) -> WebSocketConfig {
    const WRITE_BUFFER: usize = 8 * 1024;
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(WRITE_BUFFER)
        // A broadcast frame can be up to ~6x a client message (JSON escapes control characters
        // as \u00XX); the sink flushes once past WRITE_BUFFER, so one such frame on top is the
        // most it ever holds.
        .max_write_buffer_size(WRITE_BUFFER + 6 * config.max_message_size + 4096)
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_message_size))
}
