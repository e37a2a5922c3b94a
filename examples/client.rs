//! A client that connects with each way of carrying a token and prints what happens, renews
//! its token in-band (`refresh`) without reconnecting, drops a connection and resumes it
//! (`?since=`) without losing a message, then shows a tampered token being refused.
//!
//! Run against a dev-mode server (`cargo run --release`), which hands out tokens itself:
//!     cargo run --example client -- ws://127.0.0.1:8080
//! or against any server whose secret you hold:
//!     WSGATE_SECRET=... cargo run --example client -- ws://host:port
//!
//! With `follow` it stays in the room and prints what is said until Ctrl-C, reconnecting by
//! itself after a drop (with backoff) and resuming where it left off:
//!     cargo run --example client -- ws://127.0.0.1:8080 follow

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wsgate::jwt::{Claims, Key, unix_now};

type Error = Box<dyn std::error::Error>;
type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

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
    let room = format!("{base}/ws/chat/client-demo");
    if std::env::args().nth(2).as_deref() == Some("follow") {
        return follow(&room, authority).await;
    }
    let token = token_for("alice", authority).await?;

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

    // Renew the credential on an open connection: no reconnect, a later expiry (the connection
    // starts with a two-minute token).
    let short = token_lasting("alice", authority, 120).await?;
    match refresh_once(&format!("{room}?token={short}"), &token_for("alice", authority).await?).await {
        Ok(summary) => println!("{:<14} ok       {summary}", "refresh"),
        Err(e) => println!("{:<14} FAILED   {e}", "refresh"),
    }

    // Drop a connection, miss a few messages, come back with ?since= and get exactly those.
    match resume_once(&room, authority).await {
        Ok(summary) => println!("{:<14} ok       {summary}", "resume"),
        Err(e) => println!("{:<14} FAILED   {e}", "resume"),
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

/// Where a client is in a room's history (PROTOCOL.md §10): the `epoch` of its last welcome
/// and the highest `seq` it has processed. Sent back as `?since=epoch:seq`, it gets what it
/// missed.
struct Position {
    epoch: String,
    seq: u64,
}

/// What a welcome said about the frames missed while away.
enum Start {
    /// A first connection: nothing to resume.
    Fresh,
    /// Everything missed follows, in order: this many frames, up to the welcome's `seq`.
    Recovered(u64),
    /// History no longer holds it all: some frames are lost for good.
    NotRecovered,
}

/// How the server refused or ended a connection: whether to try again depends on it.
enum Ended {
    /// An HTTP status instead of the upgrade.
    Refused(u16),
    /// A close frame's code and reason.
    Closed(u16, String),
}

impl Ended {
    /// The credential (401, 4401), the room (403, 4403), the request (400) or a client that
    /// did not read (1008): a retry would end the same way, so a person must act.
    fn is_final(&self) -> bool {
        matches!(
            self,
            Ended::Refused(400 | 401 | 403) | Ended::Closed(4401 | 4403 | 1008, _)
        )
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Refused(status) => write!(f, "HTTP {status}"),
            Ended::Closed(code, reason) => write!(f, "closed {code} {reason}"),
        }
    }
}

// What `main` prints when `follow` gives up.
impl std::fmt::Debug for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}: not reconnecting")
    }
}

impl std::error::Error for Ended {}

/// A room connection that remembers its position and resumes from it after a drop.
struct Resuming {
    room: String,
    position: Option<Position>,
}

impl Resuming {
    fn new(room: &str) -> Self {
        Self {
            room: room.to_owned(),
            position: None,
        }
    }

    /// Connects (with `since` once there is a position) and reads the welcome.
    async fn connect(&mut self, token: &str) -> Result<(Socket, Start), Error> {
        let since = match &self.position {
            Some(p) => format!("&since={}:{}", p.epoch, p.seq),
            None => String::new(),
        };
        let url = format!("{}?token={token}{since}", self.room);
        let (mut ws, _) = match timeout(WAIT, tokio_tungstenite::connect_async(url)).await? {
            Ok(connected) => connected,
            Err(WsError::Http(response)) => return Err(Ended::Refused(response.status().as_u16()).into()),
            Err(e) => return Err(e.into()),
        };
        let welcome: Value = serde_json::from_str(&next_text(&mut ws).await?)?;
        let (epoch, seq) = (
            welcome["epoch"].as_str().unwrap_or_default(),
            welcome["seq"].as_u64().unwrap_or(0),
        );
        let start = match (welcome["recovered"].as_bool(), &mut self.position) {
            // Keep our seq: the frames after it are on their way.
            (Some(true), Some(position)) => {
                position.epoch = epoch.to_owned();
                Start::Recovered(seq.saturating_sub(position.seq))
            }
            (recovered, _) => {
                self.position = Some(Position {
                    epoch: epoch.to_owned(),
                    seq,
                });
                if recovered.is_some() {
                    Start::NotRecovered
                } else {
                    Start::Fresh
                }
            }
        };
        Ok((ws, start))
    }

    /// Records a frame's `seq`; false for one already processed (a resume never repeats one,
    /// but a client that keeps a position should not count on it).
    fn is_new(&mut self, frame: &Value) -> bool {
        let Some(position) = &mut self.position else {
            return true;
        };
        if frame["type"] == "lagged" {
            // Frames were lost, and with `missed: null` the room's seqs may start over (Redis
            // lost the room): what comes next is new whatever its seq.
            position.seq = 0;
            return true;
        }
        let Some(seq) = frame["seq"].as_u64() else {
            return true; // error, expiring, refreshed: no seq
        };
        if seq <= position.seq {
            return false;
        }
        position.seq = seq;
        true
    }
}

/// Alice joins, her connection drops, Bob says three things, Alice resumes and gets them.
async fn resume_once(room: &str, authority: &str) -> Result<String, Error> {
    let mut alice = Resuming::new(room);
    let (ws, _) = alice.connect(&token_for("alice", authority).await?).await?;
    drop(ws); // no close frame: as far as the server can tell, the network went away

    let (mut bob, _) = timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("{room}?token={}", token_for("bob", authority).await?)),
    )
    .await??;
    next_text(&mut bob).await?; // the welcome
    for i in 1..=3 {
        bob.send(Message::text(
            serde_json::json!({ "message": format!("missed {i}") }).to_string(),
        ))
        .await?;
    }
    // Once Bob has his three back, they are in the room's history.
    let mut echoed = 0;
    while echoed < 3 {
        if next_text(&mut bob).await?.contains(r#""type":"message""#) {
            echoed += 1;
        }
    }

    let (mut ws, start) = alice.connect(&token_for("alice", authority).await?).await?;
    let Start::Recovered(missed) = start else {
        return Err("the server did not recover what was missed".into());
    };
    let mut texts = Vec::new();
    for _ in 0..missed {
        let frame: Value = serde_json::from_str(&next_text(&mut ws).await?)?;
        if alice.is_new(&frame) && frame["type"] == "message" {
            texts.push(frame["message"].as_str().unwrap_or_default().to_owned());
        }
    }
    ws.close(None).await?;
    bob.close(None).await?;
    Ok(format!(
        "recovered {missed} missed frames (joins and leaves too), messages {texts:?}"
    ))
}

/// Who `follow` is, so its own comings and goings stand apart from the other rows'.
const FOLLOWER: &str = "follower";

/// Stays in the room printing what is said; after a drop, reconnects with backoff (0.5 s
/// doubling to 10 s, jittered) and resumes. Stops on a close that a retry cannot fix.
async fn follow(room: &str, authority: &str) -> Result<(), Error> {
    let mut follower = Resuming::new(room);
    let mut backoff = Duration::from_millis(500);
    loop {
        // A fresh token on every attempt: an old one may have expired while we were away.
        let connected = match token_for(FOLLOWER, authority).await {
            Ok(token) => follower.connect(&token).await,
            Err(e) => Err(e),
        };
        match connected {
            Ok((mut ws, start)) => {
                backoff = Duration::from_millis(500);
                match start {
                    Start::Fresh => println!("connected to {room}"),
                    Start::Recovered(n) => println!("reconnected: recovered {n} missed frames"),
                    Start::NotRecovered => println!("reconnected: could not recover, some messages were missed"),
                }
                let why = loop {
                    // The server pings a quiet connection every 20 s: a minute of silence is a
                    // network that went away without a word.
                    let frame = match timeout(Duration::from_secs(60), ws.next()).await {
                        Ok(Some(Ok(Message::Text(text)))) => text,
                        Ok(Some(Ok(Message::Close(Some(frame))))) => {
                            break Some(Ended::Closed(frame.code.into(), frame.reason.to_string()));
                        }
                        Ok(Some(Ok(Message::Close(None)) | Err(_)) | None) | Err(_) => break None,
                        Ok(Some(Ok(_))) => continue, // pings (answered for us), pongs
                    };
                    let Ok(frame) = serde_json::from_str::<Value>(&frame) else {
                        continue;
                    };
                    if !follower.is_new(&frame) {
                        continue;
                    }
                    let text = |name: &str| frame[name].as_str().unwrap_or_default().to_owned();
                    match frame["type"].as_str().unwrap_or_default() {
                        "message" => println!("{}: {}", text("username"), text("message")),
                        "join" => println!("{} joined", text("username")),
                        "leave" => println!("{} left", text("username")),
                        // Renew in-band before the token runs out, as the refresh row shows.
                        "expiring" => {
                            if let Ok(token) = token_for(FOLLOWER, authority).await {
                                let refresh = serde_json::json!({ "type": "refresh", "token": token });
                                ws.send(Message::text(refresh.to_string())).await.ok();
                            }
                        }
                        _ => println!("{frame}"),
                    }
                };
                match why {
                    Some(ended) if ended.is_final() => return Err(ended.into()),
                    Some(ended) => println!("connection lost ({ended}); reconnecting"),
                    None => println!("connection lost (no close frame); reconnecting"),
                }
            }
            Err(e) if e.downcast_ref::<Ended>().is_some_and(Ended::is_final) => return Err(e),
            Err(e) => println!("could not connect ({e})"),
        }
        let jittered = backoff.mul_f64(0.5 + f64::from(getrandom::u32()? % 1000) / 2000.0);
        println!("retrying in {:.1} s", jittered.as_secs_f64());
        sleep(jittered).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn next_text<S>(ws: &mut S) -> Result<String, Error>
where
    S: StreamExt<Item = Result<Message, WsError>> + Unpin,
{
    loop {
        match timeout(WAIT, ws.next()).await? {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(Message::Close(Some(frame)))) => {
                return Err(Ended::Closed(frame.code.into(), frame.reason.to_string()).into());
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => return Err("connection closed".into()),
        }
    }
}

/// A token from WSGATE_SECRET if set, else from a dev-mode server's `/dev/token`.
async fn token_for(sub: &str, authority: &str) -> Result<String, Error> {
    token_lasting(sub, authority, 600).await
}

/// [`token_for`], valid for `ttl` seconds.
async fn token_lasting(sub: &str, authority: &str, ttl: i64) -> Result<String, Error> {
    if let Ok(secret) = std::env::var("WSGATE_SECRET") {
        return Ok(Key::new(secret.as_bytes())?.sign(&Claims::new(sub, unix_now() + ttl)));
    }
    let mut stream = timeout(WAIT, TcpStream::connect(authority)).await??;
    let request =
        format!("GET /dev/token?sub={sub}&ttl={ttl} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    timeout(WAIT, stream.read_to_string(&mut response)).await??;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.trim().to_owned()),
        _ => Err("no WSGATE_SECRET, and the server hands out no dev tokens (is it in dev mode?)".into()),
    }
}
