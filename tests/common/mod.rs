//! Helpers for the socket tests: a server on 127.0.0.1:0, clients, raw HTTP, and a bound on
//! every wait so a hang fails the test instead of blocking CI.
#![allow(dead_code)]

#[cfg(feature = "redis")]
pub mod redis_server;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wsgate::auth::Authenticator;
use wsgate::jwt::{Claims, Key, unix_now};
use wsgate::metrics::Metrics;
use wsgate::{Config, Server};

pub const SECRET: &[u8] = b"integration-test-secret-0123456789ab";

/// The longest any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a connection attempt gives: the client and the server's response, or why not.
pub type Connected = Result<(Client, Response<Option<Vec<u8>>>), WsError>;

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future).await.expect("timed out")
}

pub fn key() -> Key {
    Key::new(SECRET).unwrap()
}

pub fn token(sub: &str) -> String {
    key().sign(&Claims::new(sub, unix_now() + 600))
}

pub fn token_for_rooms(sub: &str, rooms: &[&str]) -> String {
    let mut claims = Claims::new(sub, unix_now() + 600);
    claims.rooms = Some(rooms.iter().map(|r| r.to_string()).collect());
    key().sign(&claims)
}

pub fn config() -> Config {
    Config::default().with(|c| {
        c.addr = "127.0.0.1:0".parse().unwrap();
        c.keys = vec![key()];
    })
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub handle: wsgate::Handle,
    /// The admin API's address, when configured.
    pub admin: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        let server = Server::bind(config).await.unwrap();
        TestServer::run(server)
    }

    pub async fn start_with<A: Authenticator>(config: Config, authenticator: A) -> TestServer {
        TestServer::run(Server::bind_with(config, authenticator).await.unwrap())
    }

    fn run<A: Authenticator>(server: Server<A>) -> TestServer {
        let addr = server.local_addr();
        let metrics = server.metrics();
        let handle = server.handle();
        let admin = server.admin_addr();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            metrics,
            handle,
            admin,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            within(task).await.unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Connects to `path` with extra request headers.
    pub async fn connect(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(Client, Response<Option<Vec<u8>>>), WsError> {
        let mut request = self.url(path).into_client_request().unwrap();
        for (name, value) in headers {
            let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
            request
                .headers_mut()
                .append(name, HeaderValue::from_str(value).unwrap());
        }
        within(tokio_tungstenite::connect_async(request)).await
    }

    /// Connects to room `room` with a query-string token for `user` and reads the welcome.
    pub async fn join(&self, room: &str, user: &str) -> Client {
        let (mut client, _) = self
            .connect(&format!("/ws/chat/{room}?token={}", token(user)), &[])
            .await
            .unwrap();
        let welcome = next_json(&mut client).await;
        assert_eq!(welcome["type"], "welcome");
        client
    }

    /// Sends raw bytes and returns what the server answers: everything until it closes, or
    /// just the head of a `101` (after which the connection stays open).
    pub async fn raw(&self, request: &[u8]) -> String {
        let mut stream = within(TcpStream::connect(self.addr)).await.unwrap();
        within(stream.write_all(request)).await.unwrap();
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match within(stream.read(&mut buf)).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
            if response.starts_with(b"HTTP/1.1 101 ") && response.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        String::from_utf8_lossy(&response).into_owned()
    }

    pub async fn get(&self, path: &str) -> String {
        self.raw(format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr).as_bytes())
            .await
    }

    /// The value of one sample in `/metrics`, e.g. `wsgate_handshakes_total{result="accepted"}`.
    pub async fn metric(&self, sample: &str) -> f64 {
        let body = self.get("/metrics").await;
        body.lines()
            .find_map(|line| line.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no sample {sample} in {body}"))
            .parse()
            .unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Sends one request to the admin API at `addr` and returns the whole response.
pub async fn admin_request(addr: SocketAddr, method: &str, path: &str, key: Option<&str>, body: &str) -> String {
    let mut stream = within(TcpStream::connect(addr)).await.unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    within(stream.write_all(head.as_bytes())).await.unwrap();
    // A body larger than the cap may be refused before it is all written.
    let _ = within(stream.write_all(body.as_bytes())).await;
    let mut response = Vec::new();
    let _ = within(stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// Polls `/metrics` until `sample` satisfies `done` (bounded by [`WAIT`]); returns its value.
pub async fn await_metric(server: &TestServer, sample: &str, done: impl Fn(f64) -> bool) -> f64 {
    let started = std::time::Instant::now();
    loop {
        let value = server.metric(sample).await;
        if done(value) {
            return value;
        }
        assert!(started.elapsed() < WAIT, "{sample} stayed at {value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A WebSocket upgrade request head for `path` with extra header lines.
pub fn upgrade_request(addr: SocketAddr, path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// The next text message as JSON, skipping pings and pongs.
pub async fn next_json(client: &mut Client) -> serde_json::Value {
    loop {
        match within(client.next()).await {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Waits for the server's close frame, skipping anything before it.
pub async fn close_frame(client: &mut Client) -> CloseFrame {
    loop {
        match within(client.next()).await {
            Some(Ok(Message::Close(Some(frame)))) => return frame,
            Some(Ok(Message::Close(None))) => panic!("close without a code"),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

pub async fn send(client: &mut Client, json: &str) {
    within(client.send(Message::text(json))).await.unwrap();
}

/// The HTTP status of a refused WebSocket connection attempt, and its response.
pub fn refused(result: Connected) -> Response<Option<Vec<u8>>> {
    match result {
        Err(WsError::Http(response)) => *response,
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok((_, response)) => panic!("expected a refusal, got {}", response.status()),
    }
}

/// The body of a refusal as text.
pub fn body(response: &Response<Option<Vec<u8>>>) -> String {
    String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned()
}

/// Joins `room` as `user` over a socket with a 4 KiB receive buffer and reads only the
/// welcome: a member whose backlog the kernel cannot hide once it stops reading.
pub async fn stalled_member(server: &TestServer, room: &str, user: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = within(socket.connect(server.addr)).await.unwrap();
    let url = server.url(&format!("/ws/chat/{room}?token={}", token(user)));
    let request = url.into_client_request().unwrap();
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (mut client, _) = within(tokio_tungstenite::client_async(request, stream)).await.unwrap();
    assert_eq!(next_json(&mut client).await["type"], "welcome");
    client
}

/// A stalled member (see [`stalled_member`]) in room `slow` while another sends 150 messages
/// of `size` bytes, then reads to the end: every `seq` must follow the one before, or the `lagged`
/// before it must account for the gap exactly. Returns whether it lagged. The server's rate
/// limit must allow a burst of 150 messages.
pub async fn stall_then_read_everything(server: &TestServer, size: usize) -> bool {
    let mut stalled = stalled_member(server, "slow", "stalled").await;
    let mut sender = server.join("slow", "sender").await;
    let big = format!(r#"{{"message":"{}"}}"#, "x".repeat(size));
    for _ in 0..150 {
        send(&mut sender, &big).await;
        while next_json(&mut sender).await["type"] != "message" {}
    }
    send(&mut sender, r#"{"message":"end"}"#).await;
    let seq = |m: &serde_json::Value| m["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {m}"));
    let (mut previous, mut lagged) = (None::<u64>, false);
    loop {
        let message = next_json(&mut stalled).await;
        if message["type"] == "lagged" {
            lagged = true;
            let missed = message["missed"].as_u64().unwrap();
            let next = next_json(&mut stalled).await;
            assert_eq!(seq(&next), previous.unwrap() + missed + 1, "{next}");
            previous = Some(seq(&next));
            continue;
        }
        if let Some(previous) = previous {
            assert_eq!(seq(&message), previous + 1, "{message}");
        }
        previous = Some(seq(&message));
        if message["message"] == "end" {
            return lagged;
        }
    }
}

/// Whether the server closed `socket` within `wait` (EOF or reset).
pub async fn closed_by_server(socket: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(wait, socket.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Sends `{"message":"0"}` … `{"message":"<total - 1>"}` from `publisher` as fast as the socket
/// takes them, in the background, while its echoes are read and dropped elsewhere so it never
/// stalls. Await the handle for the last one to be sent; keep what it returns to keep the
/// publisher in the room.
pub fn publish_in_background(
    publisher: Client,
    total: usize,
) -> JoinHandle<futures_util::stream::SplitSink<Client, Message>> {
    let (mut sink, mut echoes) = publisher.split();
    tokio::spawn(async move { while let Some(Ok(_)) = echoes.next().await {} });
    tokio::spawn(async move {
        for i in 0..total {
            sink.send(Message::text(format!(r#"{{"message":"{i}"}}"#)))
                .await
                .unwrap();
        }
        sink
    })
}

/// Sends `request` in three pieces 0.75 s apart (a slow link) and returns what came back, or
/// `evicted while sending` when the server let go of the socket first.
pub async fn send_slowly(addr: SocketAddr, request: &str) -> String {
    let mut socket = within(TcpStream::connect(addr)).await.unwrap();
    let bytes = request.as_bytes();
    let third = bytes.len() / 3;
    for (i, piece) in [&bytes[..third], &bytes[third..2 * third], &bytes[2 * third..]]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(750)).await;
        }
        if socket.write_all(piece).await.is_err() {
            return "evicted while sending".to_owned();
        }
    }
    let mut response = vec![0; 512];
    let n = within(socket.read(&mut response)).await.unwrap_or(0);
    String::from_utf8_lossy(&response[..n]).into_owned()
}
