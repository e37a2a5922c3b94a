//! A client that connects with each way of carrying a token and prints what happens, renews
//! its token in-band (`refresh`) without reconnecting, then shows a tampered token being
//! refused.
//!
//! Run against a dev-mode server (`cargo run --release`), which hands out tokens itself:
//!     cargo run --example client -- ws://127.0.0.1:8080
//! or against any server whose secret you hold:
//!     WSGATE_SECRET=... cargo run --example client -- ws://host:port

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use wsgate::jwt::{Claims, Key, unix_now};

type Error = Box<dyn std::error::Error>;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), Error> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:8080".to_owned());
    let authority = base
        .strip_prefix("ws://")
        .ok_or("the server URL must start with ws://")?
        .trim_end_matches('/');
    let token = token_for("alice", authority).await?;
    let room = format!("{base}/ws/chat/client-demo");

    // (carrier, URL, headers). A browser could only do the last three; Origin is what a
    // browser would send, and the cookie carrier requires it.
    let origin = format!("http://{authority}");
    type Case = (&'static str, String, Vec<(&'static str, String)>);
    let cases: [Case; 4] = [
        (
            "authorization",
            room.clone(),
            vec![("Authorization", format!("Bearer {token}"))],
        ),
        (
            "subprotocol",
            room.clone(),
            vec![("Sec-WebSocket-Protocol", format!("chat, bearer.{token}"))],
        ),
        ("query", format!("{room}?token={token}"), vec![]),
        (
            "cookie",
            room.clone(),
            vec![("Cookie", format!("access_token={token}")), ("Origin", origin.clone())],
        ),
    ];
    for (carrier, url, headers) in cases {
        match chat_once(&url, &headers, &format!("hello via {carrier}")).await {
            Ok(summary) => println!("{carrier:<14} ok       {summary}"),
            Err(e) => println!("{carrier:<14} FAILED   {e}"),
        }
    }

    // Renew the credential on an open connection: no reconnect, a new expiry.
    match refresh_once(&format!("{room}?token={token}"), &token_for("alice", authority).await?).await {
        Ok(summary) => println!("{:<14} ok       {summary}", "refresh"),
        Err(e) => println!("{:<14} FAILED   {e}", "refresh"),
    }

    // One changed character in the signature.
    let mut tampered = token.clone().into_bytes();
    let i = tampered.len() - 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered)?;
    match chat_once(&format!("{room}?token={tampered}"), &[], "should not arrive").await {
        Ok(summary) => println!("{:<14} ACCEPTED {summary} (this is a bug)", "tampered"),
        Err(e) => println!("{:<14} refused  {e}", "tampered"),
    }
    Ok(())
}

/// Connects, reads the welcome, sends one message and reads it back.
async fn chat_once(url: &str, headers: &[(&str, String)], text: &str) -> Result<String, Error> {
    let mut request = url.into_client_request()?;
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(HeaderName::from_bytes(name.as_bytes())?, HeaderValue::from_str(value)?);
    }
    let (mut ws, response) = match timeout(WAIT, tokio_tungstenite::connect_async(request)).await? {
        Ok(connected) => connected,
        Err(WsError::Http(response)) => {
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .trim()
                .to_owned();
            return Err(format!("HTTP {} {body}", response.status().as_u16()).into());
        }
        Err(e) => return Err(e.into()),
    };
    let protocol = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    let welcome = next_text(&mut ws).await?;
    ws.send(Message::text(serde_json::json!({ "message": text }).to_string()))
        .await?;
    // Others may come and go meanwhile (join/leave events): wait for our own message.
    let echo = loop {
        let next = next_text(&mut ws).await?;
        if next.contains(r#""type":"message""#) {
            break next;
        }
    };
    ws.close(None).await?;
    let field = |json: &str, name: &str| {
        serde_json::from_str::<serde_json::Value>(json)
            .ok()
            .and_then(|v| v[name].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    Ok(format!(
        "as {}, protocol {protocol}, echoed {:?}",
        field(&welcome, "username"),
        field(&echo, "message")
    ))
}

/// Connects, then sends `{"type":"refresh","token":…}` and reads the `refreshed` answer.
async fn refresh_once(url: &str, fresh: &str) -> Result<String, Error> {
    let (mut ws, _) = timeout(WAIT, tokio_tungstenite::connect_async(url)).await??;
    let welcome: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await?)?;
    let request = serde_json::json!({ "type": "refresh", "token": fresh }).to_string();
    ws.send(Message::text(request)).await?;
    let answer = loop {
        let next: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await?)?;
        match next["type"].as_str() {
            Some("refreshed") => break next,
            Some("error") => return Err(format!("refused: {}", next["error"]).into()),
            _ => continue, // expiring, join, leave
        }
    };
    ws.close(None).await?;
    Ok(format!("exp {} -> {}, same connection", welcome["exp"], answer["exp"]))
}

async fn next_text<S>(ws: &mut S) -> Result<String, Error>
where
    S: StreamExt<Item = Result<Message, WsError>> + Unpin,
{
    loop {
        match timeout(WAIT, ws.next()).await? {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(Message::Close(Some(frame)))) => {
                return Err(format!("closed {} {}", u16::from(frame.code), frame.reason).into());
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => return Err("connection closed".into()),
        }
    }
}

/// A token from WSGATE_SECRET if set, else from a dev-mode server's `/dev/token`.
async fn token_for(sub: &str, authority: &str) -> Result<String, Error> {
    if let Ok(secret) = std::env::var("WSGATE_SECRET") {
        return Ok(Key::new(secret.as_bytes())?.sign(&Claims::new(sub, unix_now() + 600)));
    }
    let mut stream = timeout(WAIT, TcpStream::connect(authority)).await??;
    let request = format!("GET /dev/token?sub={sub} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    timeout(WAIT, stream.read_to_string(&mut response)).await??;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.trim().to_owned()),
        _ => Err("no WSGATE_SECRET, and the server hands out no dev tokens (is it in dev mode?)".into()),
    }
}
