//! PROTOCOL.md §4's budgets over real sockets: sockets that never authenticate, one identity
//! holding or churning connections, memory held for members that never read, presence
//! floods, log floods and log injection.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use wsgate::auth::{Authenticator, Identity};
use wsgate::credentials::Credential;
use wsgate::head::RequestHead;
use wsgate::rejection::Rejection;
use wsgate::{OriginPolicy, RejectMode};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test]
async fn silent_sockets_cannot_keep_honest_clients_out() {
    const BUDGET: usize = 8;
    const SILENT: usize = 40;
    let server = TestServer::start(config().with(|c| c.max_pending = BUDGET)).await;
    let fds_before = open_fds();
    let mut silent = Vec::new();
    for _ in 0..SILENT {
        silent.push(within(TcpStream::connect(server.addr)).await.unwrap());
    }
    // Every honest client gets in, each time evicting the oldest silent socket.
    let mut honest = Vec::new();
    for i in 0..10 {
        honest.push(server.join("lobby", &format!("honest{i}")).await);
        assert!(server.metric("wsgate_pending_sockets").await <= BUDGET as f64);
    }
    let mut evicted = 0;
    for socket in &mut silent {
        if closed_by_server(socket, Duration::from_millis(200)).await {
            evicted += 1;
        }
    }
    // At most the budget's worth of silent sockets is still held by the server.
    assert!(
        evicted >= SILENT - BUDGET,
        "only {evicted} of {SILENT} silent sockets were evicted"
    );
    // Descriptors: our own 40 + 10 client sockets, the server's 10 connections and at most
    // the budget of pending ones (without eviction the server would hold all 40).
    let grown = open_fds() - fds_before;
    assert!(grown <= SILENT + 20 + BUDGET + 4, "{grown} more descriptors open");
}

/// Lets every authentication wait until the test releases it.
struct Held(Arc<Semaphore>);

impl Authenticator for Held {
    async fn authenticate(&self, _: &Credential, _: &RequestHead) -> Result<Identity, Rejection> {
        self.0.acquire().await.unwrap().forget();
        Ok(Identity::new("alice"))
    }
}

#[tokio::test]
async fn a_budget_full_of_requests_being_decided_answers_503_at_once() {
    let release = Arc::new(Semaphore::new(0));
    let server = TestServer::start_with(config().with(|c| c.max_pending = 2), Held(release.clone())).await;
    let path = format!("/ws/chat/lobby?token={}", token("alice"));
    let request = upgrade_request(server.addr, &path, "");
    let mut deciding = Vec::new();
    for _ in 0..2 {
        let mut socket = within(TcpStream::connect(server.addr)).await.unwrap();
        within(socket.write_all(request.as_bytes())).await.unwrap();
        deciding.push(socket);
    }
    // Wait until both heads are being decided (neither can be evicted any more).
    let mut answered = String::new();
    for _ in 0..100 {
        let mut late = within(TcpStream::connect(server.addr)).await.unwrap();
        // Nothing sent: the answer must come without waiting for a head.
        let mut buf = Vec::new();
        within(late.read_to_end(&mut buf)).await.unwrap();
        answered = String::from_utf8_lossy(&buf).into_owned();
        if answered.starts_with("HTTP/1.1 503 ") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        answered.starts_with("HTTP/1.1 503 ") && answered.contains("Retry-After: 1\r\n"),
        "{answered}"
    );
    // Released, both are upgraded.
    release.add_permits(2);
    for socket in &mut deciding {
        let mut buf = [0u8; 12];
        within(socket.read_exact(&mut buf)).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 101");
    }
}

#[tokio::test]
async fn one_identity_is_capped_and_rate_limited() {
    let server = TestServer::start(config().with(|c| {
        c.max_connections_per_user = 2;
        c.user_connect_rate = 1;
        c.user_connect_burst = 3;
    }))
    .await;
    let first = server.join("a", "alice").await;
    let second = server.join("b", "alice").await;
    let path = format!("/ws/chat/c?token={}", token("alice"));
    let response = refused(server.connect(&path, &[]).await);
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(
        body(&response).contains("too many open connections"),
        "{}",
        body(&response)
    );
    let _bob = server.join("a", "bob").await;

    // Two connects used, one left in the burst; then the rate.
    drop((first, second));
    let _third = server.join("a", "alice").await;
    let response = refused(server.connect(&path, &[]).await);
    assert_eq!(response.status(), 429);
    assert!(body(&response).contains("too often"), "{}", body(&response));
    assert_eq!(
        server
            .metric(r#"wsgate_handshake_rejections_total{reason="too_many_for_identity"}"#)
            .await,
        2.0
    );

    // Close mode: 4429, which a browser script can read.
    let server = TestServer::start(config().with(|c| {
        c.max_connections_per_user = 1;
        c.reject_with = RejectMode::Close;
    }))
    .await;
    let _only = server.join("a", "carol").await;
    let (mut client, _) = server
        .connect(&format!("/ws/chat/a?token={}", token("carol")), &[])
        .await
        .unwrap();
    assert_eq!(u16::from(close_frame(&mut client).await.code), 4429);
}

#[tokio::test]
async fn memory_for_members_that_never_read_stays_within_the_budget() {
    const ROOMS: usize = 8;
    const BUDGET: usize = 4 << 20;
    let server = TestServer::start(config().with(|c| {
        c.max_queued_bytes = BUDGET;
        c.write_timeout = Duration::from_secs(1);
        c.rate_limit = 1000;
        c.rate_burst = 1000;
    }))
    .await;
    let rss_before = rss_kib();
    let big = format!(r#"{{"message":"{}"}}"#, "x".repeat(60_000));
    let mut stalled = Vec::new();
    let mut senders = Vec::new();
    for room in 0..ROOMS {
        let room = format!("r{room}");
        // A member that never reads a byte after its welcome, with a small receive buffer so
        // the kernel cannot hide the backlog.
        stalled.push(stalled_member(&server, &room, &format!("stalled-{room}")).await);
        senders.push(server.join(&room, &format!("sender-{room}")).await);
    }
    let mut peak = 0.0f64;
    for round in 0..150 {
        for sender in &mut senders {
            send(sender, &big).await;
        }
        // Senders read their own echoes so only the stalled members fall behind.
        for sender in &mut senders {
            loop {
                if next_json(sender).await["type"] == "message" {
                    break;
                }
            }
        }
        if round % 10 == 9 {
            peak = peak.max(server.metric("wsgate_queued_bytes").await);
        }
    }
    // The whole budget, plus the newest message each room always keeps.
    let bound = (BUDGET + ROOMS * big.len() * 2) as f64;
    assert!(peak > 0.0 && peak <= bound, "queued {peak} bytes, budget {BUDGET}");
    // And the process: the budget, each stalled member's bounded write buffer (~400 KiB),
    // and slack for the allocator and the test's own clients. Without the byte budget each
    // room would hold 256 x 60 KB, about 120 MB here.
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(grown < 40 * 1024, "RSS grew by {grown} KiB");
    // The stalled members took none of our writes: they are closed (1008), their memory freed.
    let mut active = f64::MAX;
    for _ in 0..200 {
        active = server.metric("wsgate_connections_active").await;
        if active <= ROOMS as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(active, ROOMS as f64, "stalled members were not closed");
    // Each stalled stream ends: with 1008 if the close frame got through the backlog, else
    // with the reset that follows the close timeout.
    for member in &mut stalled {
        loop {
            match within(member.next()).await {
                Some(Ok(Message::Close(Some(frame)))) => {
                    assert_eq!(u16::from(frame.code), 1008);
                    break;
                }
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => break,
            }
        }
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn presence_stops_above_the_limit_and_churn_is_rate_limited() {
    let server = TestServer::start(config().with(|c| {
        c.presence_limit = 3;
        c.user_connect_rate = 1000;
        c.user_connect_burst = 1000;
    }))
    .await;
    let mut watcher = server.join("big", "watcher").await;
    let _b = server.join("big", "b").await;
    let _c = server.join("big", "c").await;
    assert_eq!(next_json(&mut watcher).await["username"], "b");
    assert_eq!(next_json(&mut watcher).await["username"], "c");
    let mut d = server.join("big", "d").await;
    send(&mut d, r#"{"message":"marker"}"#).await;
    let got = next_json(&mut watcher).await;
    assert_eq!(
        (got["type"].as_str(), got["message"].as_str()),
        (Some("message"), Some("marker")),
        "{got}"
    );

    // Churn in a small room: far fewer notices than connects.
    let mut quiet = server.join("small", "quiet").await;
    let started = std::time::Instant::now();
    for _ in 0..100 {
        let churner = server.join("small", "churner").await;
        drop(churner);
    }
    let mut last = server.join("small", "last").await;
    send(&mut last, r#"{"message":"end"}"#).await;
    let mut notices = 0;
    loop {
        let got = next_json(&mut quiet).await;
        if got["message"] == "end" {
            break;
        }
        notices += 1;
    }
    let allowed = 50 + 10 * (started.elapsed().as_secs() as usize + 1);
    assert!(notices <= allowed, "{notices} presence notices for 100 churns");
    assert!(notices < 200, "nothing was limited");
}

#[tokio::test]
async fn origin_star_never_covers_cookies() {
    let server = TestServer::start(config().with(|c| c.origins = OriginPolicy::Any)).await;
    let evil = [("Origin", "https://evil.example")];
    let cookie = format!("access_token={}", token("alice"));
    let response = refused(server.connect("/ws/chat/lobby", &[evil[0], ("Cookie", &cookie)]).await);
    assert_eq!(response.status(), 403);
    let response = refused(
        server
            .connect("/ws/chat/lobby", &[("Origin", "null"), ("Cookie", &cookie)])
            .await,
    );
    assert_eq!(response.status(), 403);
    // A token the page holds itself is fine from any page.
    let path = format!("/ws/chat/lobby?token={}", token("alice"));
    assert!(server.connect(&path, &evil).await.is_ok());
    // And a cookie from the same origin still works.
    let same = format!("http://{}", server.addr);
    assert!(
        server
            .connect("/ws/chat/lobby", &[("Origin", &same), ("Cookie", &cookie)])
            .await
            .is_ok()
    );
}

/// Log output of this test's thread, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Accepts anything, as a user whose name a careless session store let through.
struct Named(&'static str);

impl Authenticator for Named {
    async fn authenticate(&self, credential: &Credential, _: &RequestHead) -> Result<Identity, Rejection> {
        match credential.secret() {
            "good" => Ok(Identity::new(self.0)),
            _ => Err(Rejection::InvalidCredential("unknown key".into())),
        }
    }
}

#[tokio::test]
async fn logs_are_escaped_and_throttled() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // The test's runtime is single-threaded, so the server's tasks log through this too.
    let _guard = tracing::subscriber::set_default(subscriber);

    let forged = "root\n2026-11-29T00:00:00Z  INFO wsgate: handshake accepted user=admin\u{1b}[2J";
    let server = TestServer::start_with(config(), Named(forged)).await;
    // Such a username is refused outright (the `sub` rule holds for every authenticator)...
    let refusal = refused(server.connect("/ws/chat/lobby?token=good", &[]).await);
    assert_eq!(refusal.status(), 401);

    let started = std::time::Instant::now();
    for _ in 0..60 {
        let _ = server.connect("/ws/chat/lobby?token=bad", &[]).await;
    }
    // One more after a pause reports how many were left out.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _ = server.connect("/ws/chat/lobby?token=bad", &[]).await;

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(!log.contains("\n2026-11-29T00:00:00Z"), "a forged line:\n{log}");
    // ... and never reaches the log as written.
    assert!(!log.contains('\u{1b}'), "a raw escape:\n{log}");
    let refusals = log.lines().filter(|l| l.contains("handshake rejected")).count();
    let allowed = 5 * (started.elapsed().as_secs() as usize + 2);
    assert!(refusals <= allowed, "{refusals} refusal lines for 61 refusals");
    assert!(
        log.lines()
            .any(|l| l.contains("handshake rejected") && !l.contains("suppressed=0")),
        "no line says how many were left out:\n{log}"
    );
}

#[tokio::test]
async fn a_slow_authenticator_is_bounded_by_the_handshake_timeout() {
    let never = Arc::new(Semaphore::new(0));
    let server = TestServer::start_with(
        config().with(|c| c.handshake_timeout = Duration::from_millis(300)),
        Held(never),
    )
    .await;
    let response = refused(
        server
            .connect(&format!("/ws/chat/lobby?token={}", token("a")), &[])
            .await,
    );
    assert_eq!(response.status(), 503);
    assert!(body(&response).contains("took too long"), "{}", body(&response));
    let mut socket = within(TcpStream::connect(server.addr)).await.unwrap();
    assert!(
        closed_by_server(&mut socket, Duration::from_secs(2)).await,
        "a silent socket outlived the timeout"
    );
}

#[tokio::test]
async fn refused_requests_that_linger_cannot_hold_the_pending_places() {
    const BUDGET: usize = 4;
    let server = TestServer::start(config().with(|c| c.max_pending = BUDGET)).await;
    // Complete requests that are refused, each with a byte after the head (so the server
    // lingers up to a second before closing) and never read: the attack that held every
    // place for a second at a time.
    let mut lingering = Vec::new();
    for i in 0..BUDGET {
        let mut socket = within(TcpStream::connect(server.addr)).await.unwrap();
        let request = match i % 2 {
            0 => upgrade_request(server.addr, "/ws/chat/lobby?token=not.a.token", ""),
            _ => "\u{16}\u{3}\u{1} garbage\n\n".to_owned(),
        };
        within(socket.write_all(format!("{request}x").as_bytes()))
            .await
            .unwrap();
        lingering.push(socket);
    }
    // Once all are refused (and lingering), honest clients still get in, at once.
    let refused = || async {
        server.metric(r#"wsgate_handshakes_total{result="bad_request"}"#).await
            + server
                .metric(r#"wsgate_handshakes_total{result="unauthenticated"}"#)
                .await
    };
    for _ in 0..200 {
        if refused().await >= BUDGET as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let started = std::time::Instant::now();
    for i in 0..BUDGET {
        let _honest = server.join("lobby", &format!("honest{i}")).await;
    }
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "the test ran past the linger time"
    );
    assert_eq!(
        server.metric(r#"wsgate_handshakes_total{result="overloaded"}"#).await,
        0.0
    );
}

/// Opens a socket every `every` for `duration` (at most 400), each sending `first` and then
/// nothing; returns them, still open.
async fn flood(addr: std::net::SocketAddr, every: Duration, duration: Duration, first: &[u8]) -> Vec<TcpStream> {
    let started = std::time::Instant::now();
    let mut sockets = Vec::new();
    while started.elapsed() < duration && sockets.len() < 400 {
        let mut socket = within(TcpStream::connect(addr)).await.unwrap();
        if !first.is_empty() {
            let _ = socket.write_all(first).await;
        }
        sockets.push(socket);
        tokio::time::sleep(every).await;
    }
    sockets
}

#[tokio::test]
async fn a_head_sent_slowly_gets_in_during_a_flood_of_silent_or_dripping_sockets() {
    let server = TestServer::start(config().with(|c| c.max_pending = 8)).await;
    let request = upgrade_request(server.addr, &format!("/ws/chat/lobby?token={}", token("slow")), "");
    // Silent sockets, then sockets that each send one byte and stop (they have "progress",
    // but less for their age than a client that keeps sending).
    for first in [&b""[..], b"G"] {
        let (status, flooded) = tokio::join!(
            async {
                send_slowly(server.addr, &request)
                    .await
                    .lines()
                    .next()
                    .unwrap_or("closed")
                    .to_owned()
            },
            flood(
                server.addr,
                Duration::from_millis(6),
                Duration::from_millis(2_500),
                first
            ),
        );
        assert!(flooded.len() > 100, "the flood was too small to fill the budget");
        assert_eq!(status, "HTTP/1.1 101 Switching Protocols", "flood sending {first:?}");
    }
}
