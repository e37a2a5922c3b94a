//! Plain HTTP/1.1 on a socket, as much as wsgate needs before a connection becomes a
//! WebSocket: read one bounded request head, write one response, close without losing it.
//!
//! Generic over the stream (`AsyncRead + AsyncWrite`), so the same code serves plain TCP and
//! any wrapped stream.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::http::StatusCode;

use crate::head::{HeadError, MAX_HEAD_BYTES, RequestHead};
use crate::rejection::Rejection;

/// How long a refusal waits for a client to stop sending before closing anyway.
const LINGER: Duration = Duration::from_secs(1);

/// The most bytes a lingering close reads and discards.
const LINGER_BYTES: usize = 64 * 1024;

/// A complete plain-HTTP answer; the connection closes after it.
#[derive(Debug)]
pub struct Response {
    /// The status; its canonical reason phrase goes on the status line.
    pub status: StatusCode,
    /// `Content-Type` of the body.
    pub content_type: &'static str,
    /// Headers besides `Content-Type`, `Content-Length`, `Connection` and `Cache-Control`.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: String,
}

impl Response {
    /// `200 OK` with `body`.
    pub fn ok(content_type: &'static str, body: impl Into<String>) -> Response {
        Response {
            status: StatusCode::OK,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// The one-line plain-text answer to a rejection, with the headers it needs.
    pub fn rejection(rejection: &Rejection) -> Response {
        Response {
            status: rejection.status(),
            content_type: "text/plain; charset=utf-8",
            headers: rejection.headers(),
            body: format!("{rejection}\n"),
        }
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or("Unknown"),
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

/// Why reading a head ended without one.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed or the socket failed: nothing to answer.
    Gone,
    /// The bytes are not an acceptable head: answer with this.
    Head(HeadError),
}

/// A request head and the bytes the client sent after it (already the WebSocket stream's).
pub struct Request {
    /// The parsed head.
    pub head: RequestHead,
    /// Bytes read past the head.
    pub leftover: Vec<u8>,
}

/// Whether the client may still be sending when we answer. Closing a socket with unread
/// input makes the kernel send a reset, which can destroy the response before it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unread {
    /// We read a complete head and nothing after it: close at once.
    Nothing,
    /// More may come (pipelined bytes, an oversized head): drain a moment before closing.
    Maybe,
}

impl Request {
    /// Whether anything followed the head.
    pub fn unread(&self) -> Unread {
        if self.leftover.is_empty() {
            Unread::Nothing
        } else {
            Unread::Maybe
        }
    }
}

/// The first byte of a TLS connection (a handshake record, RFC 8446 §5.1).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Reads one request head (at most [`MAX_HEAD_BYTES`]). The caller bounds the time.
pub async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Request, ReadError> {
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
        // A TLS hello on a plain port: answer at once (the client fails fast on the answer)
        // rather than wait for a blank line that never comes.
        if len == 0 && buf[0] == TLS_HANDSHAKE_RECORD {
            return Err(ReadError::Head(HeadError::Malformed(
                "a TLS handshake on a plain port: use http:// or ws://",
            )));
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
            Ok(Some((head, head_len))) => {
                let leftover = buf[head_len..len].to_vec();
                return Ok(Request { head, leftover });
            }
            Ok(None) => continue,
            Err(e) => return Err(ReadError::Head(e)),
        }
    }
}

/// Writes `response` and closes the socket, lingering first when the client may still be
/// sending.
pub async fn respond<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, response: &Response, unread: Unread) {
    let _ = stream.write_all(&response.to_bytes()).await;
    match unread {
        Unread::Nothing => {
            let _ = stream.shutdown().await;
        }
        Unread::Maybe => linger_close(stream).await,
    }
}

/// Half-closes, then reads (and discards) what the client still sends, for at most a second
/// and 64 KiB, so our response is not destroyed by a reset.
pub async fn linger_close<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 512];
    let drain = async {
        let mut total = 0usize;
        while let Ok(n @ 1..) = stream.read(&mut sink).await {
            total += n;
            if total > LINGER_BYTES {
                break;
            }
        }
    };
    let _ = timeout(LINGER, drain).await;
}
