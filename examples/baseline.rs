//! The comparison point for `scripts/bench.sh`: the same chat protocol as wsgate, written the
//! way a typical tokio-tungstenite server is, with **no authentication at all**.
//!
//! `accept_async` with default settings, a reader and a writer task per connection, a
//! broadcast channel of message structs per room, each recipient serializing its own copy,
//! one flush per message. It is the ceiling an unauthenticated server on this stack reaches
//! without care, and what wsgate is measured against.
//!
//! Run: `cargo run --release --example baseline -- 127.0.0.1:9090`
//!
//! With `--tls-cert cert.pem --tls-key key.pem` after the address it terminates TLS the usual
//! way: `tokio_rustls::TlsAcceptor::accept`, then `accept_hdr_async` over the TLS stream (no
//! handshake timeout, no budget), for the `wss://` comparison in `scripts/bench-tls.sh`.
//! The room is taken from the path `/ws/chat/{room}` via the request callback; the username
//! from `?user=` (no token is checked; any `token=` is ignored).

// The accept callback's signature (and its large error type) is tungstenite's, not ours.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

#[derive(Clone, Serialize)]
struct Event {
    r#type: &'static str,
    room: String,
    username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

#[derive(Deserialize)]
struct Incoming {
    message: String,
}

type Rooms = Arc<Mutex<HashMap<String, broadcast::Sender<Event>>>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).cloned().unwrap_or_else(|| "127.0.0.1:9090".to_owned());
    let tls = match (flag(&args, "--tls-cert"), flag(&args, "--tls-key")) {
        (Some(cert), Some(key)) => Some(acceptor(cert, key).map_err(std::io::Error::other)?),
        _ => None,
    };
    let listener = TcpListener::bind(&addr).await?;
    println!("baseline listening on {}", listener.local_addr()?);
    let rooms: Rooms = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let rooms = rooms.clone();
        match &tls {
            None => tokio::spawn(handle(stream, rooms)),
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        handle(stream, rooms).await;
                    }
                })
            }
        };
    }
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// A TLS acceptor for a PEM certificate chain and key.
fn acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, Box<dyn std::error::Error + Send + Sync>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(stream: S, rooms: Rooms) {
    let mut target = String::new();
    let callback = |request: &Request, response: Response| {
        target = request.uri().to_string();
        Ok(response)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let room = path.strip_prefix("/ws/chat/").unwrap_or("lobby").to_owned();
    let username = query
        .split('&')
        .find_map(|p| p.strip_prefix("user="))
        .unwrap_or("anonymous")
        .to_owned();

    let sender = rooms
        .lock()
        .unwrap()
        .entry(room.clone())
        .or_insert_with(|| broadcast::channel(1024).0)
        .clone();
    let mut receiver = sender.subscribe();
    let (mut write, mut read) = ws.split();
    let welcome = serde_json::json!({"type": "welcome", "room": room, "username": username,
        "message": format!("Welcome, {username}!")});
    if write.send(Message::text(welcome.to_string())).await.is_err() {
        return;
    }
    let _ = sender.send(Event {
        r#type: "join",
        room: room.clone(),
        username: username.clone(),
        message: None,
    });

    let writer = tokio::spawn(async move {
        loop {
            match receiver.recv().await {
                Ok(event) => {
                    let json = serde_json::to_string(&event).unwrap();
                    if write.send(Message::text(json)).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    while let Some(Ok(message)) = read.next().await {
        if let Message::Text(text) = message
            && let Ok(incoming) = serde_json::from_str::<Incoming>(&text)
        {
            let event = Event {
                r#type: "message",
                room: room.clone(),
                username: username.clone(),
                message: Some(incoming.message),
            };
            let _ = sender.send(event);
        }
    }
    writer.abort();
    let _ = sender.send(Event {
        r#type: "leave",
        room,
        username,
        message: None,
    });
}
