//! The WebSocket side of the opening handshake (RFC 6455 §4.2): check that a request is a
//! valid upgrade, then write the `101` ourselves and hand the socket to tokio-tungstenite.
//!
//! Doing this by hand rather than with tungstenite's accept callback is what lets the gate
//! await an async authenticator, lets every refusal be a real HTTP response, and keeps bytes a
//! client pipelined right after its head.

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::credentials::select_protocol;
use crate::head::RequestHead;
use crate::rejection::Rejection;

/// Bytes a connection's writes are batched into before a flush.
const WRITE_BUFFER: usize = 8 * 1024;

/// A request that may be upgraded: its accept key and the subprotocol to echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    accept_key: String,
    protocol: Option<String>,
}

impl Upgrade {
    /// RFC 6455 §4.2.1: everything a server must see before it may upgrade, and the
    /// subprotocol to answer with (the first offered one in `supported`, never a `bearer.`
    /// entry).
    pub fn check(head: &RequestHead, supported: &[String]) -> Result<Upgrade, Rejection> {
        let bad = |why: &'static str| Err(Rejection::BadRequest(why.into()));
        if !head.is_http11() {
            return bad("a WebSocket upgrade needs HTTP/1.1");
        }
        if head.host().is_none() {
            return bad("exactly one Host header is required (RFC 9112 section 3.2)");
        }
        if !head.list("upgrade").any(|t| t.eq_ignore_ascii_case("websocket")) {
            return bad("expected Upgrade: websocket");
        }
        if !head.list("connection").any(|t| t.eq_ignore_ascii_case("upgrade")) {
            return bad("expected Connection: Upgrade");
        }
        let mut versions = head.headers("sec-websocket-version");
        if (versions.next().map(str::trim), versions.next()) != (Some("13"), None) {
            return Err(Rejection::UnsupportedVersion);
        }
        let mut keys = head.headers("sec-websocket-key");
        let key = match (keys.next().map(str::trim), keys.next()) {
            (Some(key), None)
                if base64::engine::general_purpose::STANDARD
                    .decode(key)
                    .is_ok_and(|k| k.len() == 16) =>
            {
                key
            }
            _ => return bad("Sec-WebSocket-Key must be one base64 value of 16 bytes"),
        };
        Ok(Upgrade {
            accept_key: derive_accept_key(key.as_bytes()),
            protocol: select_protocol(head, supported).map(str::to_owned),
        })
    }

    /// The subprotocol the `101` will carry, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Writes the `101` and turns the socket into a WebSocket stream, keeping `leftover`, the
    /// bytes that arrived after the head.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        leftover: Vec<u8>,
        max_message_size: usize,
    ) -> std::io::Result<WebSocketStream<S>> {
        let mut response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
            self.accept_key
        );
        if let Some(protocol) = &self.protocol {
            response.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
        }
        response.push_str("\r\n");
        stream.write_all(response.as_bytes()).await?;
        let config = websocket_config(max_message_size);
        Ok(WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(config)).await)
    }
}

/// tungstenite settings sized for chat: a small read buffer (the default allocates 128 KiB
/// per connection up front and zero-fills it on every read), batched writes, bounded buffers.
pub fn websocket_config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(WRITE_BUFFER)
        // A broadcast frame can be up to ~6x a client message (JSON escapes control characters
        // as \u00XX); the sink flushes once past WRITE_BUFFER, so one such frame on top is the
        // most it ever holds. `Config::validate` caps the size so this cannot overflow.
        .max_write_buffer_size(WRITE_BUFFER + 6 * max_message_size + 4096)
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}
