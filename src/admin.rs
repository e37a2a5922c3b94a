//! The admin API (PROTOCOL.md §9): revoke credentials and publish notices over HTTP, on its
//! own listener (`--admin-addr`), never on the public port, and only with the admin key.
//!
//! A thin layer over [`Handle`]: each request is one head and one small JSON body, read under
//! the same limits as the public port (8 KiB head, the handshake timeout) plus a 64 KiB body
//! cap, answered, and closed. At most [`MAX_ADMIN_SOCKETS`] sockets are held at once, in a
//! pending budget of their own: as on the public port, a new socket evicts the oldest one
//! still sending its request, so idle sockets cannot keep the key holder out.
//!
//! The key is compared in constant time: both sides are hashed with SHA-256 and the digests
//! compared byte by byte without an early exit, so neither the key's bytes nor its length
//! leak through timing.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncRead;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout_at};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tracing::{info, warn};

use crate::cluster::{Reach, Revoked};
use crate::config::AdminKey;
use crate::handle::Handle;
use crate::head::RequestHead;
use crate::http::{self, Response, Unread};
use crate::pending::{self, Pending, Slot};
use crate::revocation::{Revoke, json_error};
use crate::room;
use crate::shutdown::{Running, Shutdown};

/// The largest request body.
pub const MAX_BODY: usize = 64 * 1024;

/// Admin sockets served at once; more are closed at once.
const MAX_ADMIN_SOCKETS: usize = 64;

/// Serves the admin API on `listener` until shutdown.
pub(crate) async fn serve(
    listener: TcpListener,
    key: AdminKey,
    handle: Handle,
    limits: Limits,
    mut shutdown: Shutdown,
    running: Running,
) {
    let sockets = Pending::new(MAX_ADMIN_SOCKETS);
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "admin API listening");
    }
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "admin accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        let Some(slot) = sockets.enter(pending::sent(&stream)) else {
            continue; // every place is answering: dropped, which closes the socket
        };
        let (key, handle) = (key.clone(), handle.clone());
        // Each answer holds the API's `Running`: `run` returns only once they are done too.
        tokio::spawn(answer(stream, peer, key, handle, limits, slot, running.clone()));
    }
}

/// The public port's limits that the admin port shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub handshake_timeout: Duration,
    pub max_message_size: usize,
}

async fn answer(
    mut stream: TcpStream,
    peer: SocketAddr,
    key: AdminKey,
    handle: Handle,
    limits: Limits,
    mut slot: Slot,
    _running: Running,
) {
    let deadline = Instant::now() + limits.handshake_timeout;
    // The head and the body are read while a newer socket may still evict this one, the one
    // with the least progress first (as on the public port).
    let mut counted = slot.counted(&mut stream);
    let read = async {
        let request = timeout_at(deadline, http::read_request(&mut counted))
            .await
            .ok()?
            .ok()?;
        // The route and the key are checked on the head: a request without the key is
        // answered without its body being read, so a keyless body never counts as progress.
        let routed = match route(&request.head, &key) {
            Ok(route) => read_body(&mut counted, &request.head, request.leftover.clone(), deadline)
                .await
                .map(|body| (route, body)),
            Err(refusal) => Err(refusal),
        };
        Some((request, routed))
    };
    let read = tokio::select! {
        read = read => read,
        _ = &mut slot.evicted => None,
    };
    let Some((request, routed)) = read else { return };
    if !slot.head_read() {
        return;
    }
    let decided = routed.and_then(|(route, body)| decide(route, body.as_deref(), &handle, limits));
    let response = match decided {
        Ok(Decided::Answer(response)) => response,
        // Waits at most the Redis timeout, still within this socket's place.
        Ok(Decided::Revoke(revoke)) => revoked(handle.revoke_confirmed(&revoke).await),
        Err((status, why)) => plain(status, why),
    };
    info!(%peer, path = ?request.head.path(), status = response.status.as_u16(), "admin request");
    slot.linger();
    tokio::select! {
        _ = http::respond(&mut stream, &response, Unread::Maybe) => {}
        _ = &mut slot.evicted => {}
    }
}

type Refusal = (StatusCode, String);

/// The body announced by `Content-Length`, at most [`MAX_BODY`]; `None` for no body.
async fn read_body(
    stream: &mut (impl AsyncRead + Unpin),
    head: &RequestHead,
    mut body: Vec<u8>,
    deadline: Instant,
) -> Result<Option<Vec<u8>>, Refusal> {
    use tokio::io::AsyncReadExt;
    let bad = |why: &str| (StatusCode::BAD_REQUEST, why.to_owned());
    // RFC 9112 §6.1: Transfer-Encoding with Content-Length is an error; chunked bodies are not
    // needed for a few hundred bytes of JSON, so any Transfer-Encoding is refused.
    if head.header("transfer-encoding").is_some() {
        return Err(bad("Transfer-Encoding is not accepted: send one Content-Length"));
    }
    let mut lengths = head.headers("content-length");
    let length = match (lengths.next().map(str::trim), lengths.next()) {
        (None, _) => return Ok(None),
        (Some(length), None) if !length.is_empty() && length.bytes().all(|b| b.is_ascii_digit()) => {
            length.parse::<usize>().map_err(|_| bad("Content-Length too large"))?
        }
        _ => return Err(bad("one Content-Length of digits is required")),
    };
    if length > MAX_BODY {
        return Err(bad("body too large: at most 65536 bytes"));
    }
    body.truncate(length);
    body.reserve(length - body.len());
    while body.len() < length {
        let mut chunk = vec![0; length - body.len()];
        match timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n @ 1..)) => body.extend_from_slice(&chunk[..n]),
            _ => return Err(bad("the body did not arrive")),
        }
    }
    Ok(Some(body))
}

/// Route, key, body, in that order: an unknown path is `404` for anyone, a known one needs
/// the key before its body is even parsed.
/// The route, if the head names one and holds the key: checked before the body is read.
fn route(head: &RequestHead, key: &AdminKey) -> Result<Route, Refusal> {
    let route = match (head.method(), head.path()) {
        ("POST", "/admin/revoke") => Route::Revoke,
        ("POST", "/admin/publish") => Route::Publish,
        _ => return Err((StatusCode::NOT_FOUND, "not found".to_owned())),
    };
    let offered = head
        .header("authorization")
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim());
    if !offered.is_some_and(|offered| key.matches(offered.as_bytes())) {
        return Err((StatusCode::UNAUTHORIZED, "the admin key is missing or wrong".to_owned()));
    }
    Ok(route)
}

/// What a keyed request to `route` with `body` does.
fn decide(route: Route, body: Option<&[u8]>, handle: &Handle, limits: Limits) -> Result<Decided, Refusal> {
    let body = body.ok_or((StatusCode::BAD_REQUEST, "a JSON body is required".to_owned()))?;
    let bad = |why: String| (StatusCode::BAD_REQUEST, why);
    match route {
        Route::Revoke => {
            let revoke = Revoke::parse(body).map_err(bad)?;
            Ok(Decided::Revoke(revoke))
        }
        Route::Publish => {
            let PublishBody { room, message } =
                serde_json::from_slice(body).map_err(|e| bad(json_error(&e, r#"expected {"room":…,"message":…}"#)))?;
            room::check_name(&room).map_err(|e| bad(e.to_string()))?;
            if message.len() > limits.max_message_size {
                return Err(bad(format!(
                    "message too long: at most {} bytes",
                    limits.max_message_size
                )));
            }
            handle.publish(&room, &message);
            Ok(Decided::Answer(json(StatusCode::ACCEPTED, "{}".to_owned())))
        }
    }
}

enum Route {
    Revoke,
    Publish,
}

/// What a request that passed the checks asks for.
enum Decided {
    Answer(Response),
    /// Revoke, then answer with how far it reached.
    Revoke(Revoke),
}

/// `200` once stored in Redis (or with no other nodes), `202` while it waits in the control
/// outbox, `503` when the outbox is full (PROTOCOL.md §12). It applies on this node in every
/// case, and `closed` counts this node's connections.
fn revoked(Revoked { closed, reach }: Revoked) -> Response {
    let status = match reach {
        Reach::Pending => StatusCode::ACCEPTED,
        Reach::OutboxFull => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    let body = match reach.as_str() {
        Some(cluster) => format!(r#"{{"closed":{closed},"cluster":"{cluster}"}}"#),
        None => format!(r#"{{"closed":{closed}}}"#),
    };
    let mut response = json(status, body);
    if reach == Reach::OutboxFull {
        response.headers.push(("Retry-After", "1".to_owned()));
    }
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    room: String,
    message: String,
}

fn json(status: StatusCode, body: String) -> Response {
    Response {
        status,
        content_type: "application/json",
        headers: Vec::new(),
        body,
    }
}

fn plain(status: StatusCode, why: String) -> Response {
    let mut headers = Vec::new();
    if status == StatusCode::UNAUTHORIZED {
        headers.push(("WWW-Authenticate", r#"Bearer realm="wsgate-admin""#.to_owned()));
    }
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        headers,
        body: format!("{why}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_must_be_long_and_match_exactly() {
        assert!(AdminKey::new(b"short").is_none());
        let key = AdminKey::new(b"an admin key of at least 32 bytes!!").unwrap();
        assert!(key.matches(b"an admin key of at least 32 bytes!!"));
        assert!(!key.matches(b"an admin key of at least 32 bytes!?"));
        assert!(!key.matches(b""));
        assert!(!format!("{key:?}").contains("admin key"));
    }

    #[test]
    fn revoke_bodies_are_strict() {
        assert!(matches!(
            Revoke::parse(br#"{"jti":"a","exp":1}"#),
            Ok(Revoke::Jti { .. })
        ));
        assert!(matches!(Revoke::parse(br#"{"user":"alice"}"#), Ok(Revoke::User { .. })));
        assert!(matches!(
            Revoke::parse(br#"{"session":"s"}"#),
            Ok(Revoke::Session { .. })
        ));
        for bad in [
            &br#"{"jti":"a"}"#[..],
            br#"{"user":"alice","session":"s"}"#,
            br#"{"user":"alice","extra":1}"#,
            br#"{"user":""}"#,
            br#"{}"#,
            br#"[]"#,
            br#"not json"#,
        ] {
            assert!(Revoke::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
