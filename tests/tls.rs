//! PROTOCOL.md §11 over real sockets (feature `tls`): `wss://` with every carrier, plain HTTP
//! and TLS crossing ports, silent sockets on the TLS port, the same-origin scheme, and the
//! binary's certificate reload on SIGHUP. The certificates are made here, at test time.
#![cfg(feature = "tls")]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStderr, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::{Connector, MaybeTlsStream};
use wsgate::tls::rustls::pki_types::pem::PemObject as _;
use wsgate::tls::rustls::{self, ClientConfig, RootCertStore};
use wsgate::tls::{Certificate, Tls};

/// A self-signed certificate for 127.0.0.1 and localhost, as PEM: (certificate, key).
fn self_signed() -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem())
}

fn der(pem: &str) -> rustls::pki_types::CertificateDer<'static> {
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// A client that trusts these certificates, with no session resumption: each handshake is a
/// full one and shows the certificate served at that moment.
fn client(trusted: &[&str]) -> Connector {
    let mut roots = RootCertStore::empty();
    for pem in trusted {
        roots.add(der(pem)).unwrap();
    }
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Connector::Rustls(Arc::new(config))
}

/// Writes the pair into `dir` as cert.pem and key.pem.
fn write_pair(dir: &Path, (cert, key): &(String, String)) {
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
}

/// A directory of its own for each call: the tests run in parallel in one process.
fn temp_dir(name: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("wsgate-tls-{name}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A server that serves `pair` over TLS.
async fn tls_server(pair: &(String, String), change: impl FnOnce(&mut wsgate::Config)) -> TestServer {
    let dir = temp_dir("server");
    write_pair(&dir, pair);
    let certificate = wsgate::tls::load(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    TestServer::start(config().with(|c| {
        c.tls = Some(Tls::new(certificate));
        change(c);
    }))
    .await
}

/// Opens `wss://addr{path}` with extra headers, trusting `trusted`.
async fn connect_wss(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)], trusted: &[&str]) -> Connected {
    let mut request = format!("wss://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    within(tokio_tungstenite::connect_async_tls_with_config(
        request,
        None,
        false,
        Some(client(trusted)),
    ))
    .await
}

/// The certificate the server presented to `client`.
fn served_to(client: &Client) -> Vec<u8> {
    match client.get_ref() {
        MaybeTlsStream::Rustls(tls) => tls.get_ref().1.peer_certificates().unwrap()[0].to_vec(),
        _ => panic!("not a TLS connection"),
    }
}

/// `GET path` over TLS; the whole response as text.
async fn get_tls(addr: std::net::SocketAddr, path: &str, trusted: &str) -> String {
    let Connector::Rustls(config) = client(&[trusted]) else {
        unreachable!()
    };
    let tcp = within(TcpStream::connect(addr)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = within(tokio_rustls::TlsConnector::from(config).connect(name, tcp))
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    within(tls.write_all(request.as_bytes())).await.unwrap();
    let mut response = Vec::new();
    let _ = within(tls.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

async fn metric_tls(addr: std::net::SocketAddr, sample: &str, trusted: &str) -> f64 {
    let body = get_tls(addr, "/metrics", trusted).await;
    body.lines()
        .find_map(|line| line.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {sample} in {body}"))
        .parse()
        .unwrap()
}

/// Waits, boundedly, until the pending budget holds only the scrape that reads it: every
/// socket before it has let go of its place.
async fn pending_settles(addr: std::net::SocketAddr, trusted: &str) {
    let until = Instant::now() + WAIT;
    loop {
        let pending = metric_tls(addr, "wsgate_pending_sockets", trusted).await;
        if pending <= 1.0 {
            return;
        }
        assert!(Instant::now() < until, "{pending} sockets still pending");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A carrier, a query string, request headers.
type Case = (&'static str, String, Vec<(&'static str, String)>);

#[tokio::test]
async fn wss_with_every_carrier_welcomes_and_chats_both_ways() {
    let pair = self_signed();
    let server = tls_server(&pair, |_| {}).await;
    let addr = server.addr;
    let trusted = [pair.0.as_str()];
    let origin = format!("https://{addr}");
    let cases: [Case; 4] = [
        (
            "header",
            String::new(),
            vec![("Authorization", format!("Bearer {}", token("h")))],
        ),
        (
            "subprotocol",
            String::new(),
            vec![("Sec-WebSocket-Protocol", format!("chat, bearer.{}", token("s")))],
        ),
        ("query", format!("?token={}", token("q")), vec![]),
        (
            "cookie",
            String::new(),
            vec![
                ("Cookie", format!("access_token={}", token("c"))),
                ("Origin", origin.clone()),
            ],
        ),
    ];
    for (carrier, query, headers) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let room = format!("/ws/chat/tls-{carrier}{query}");
        let (mut first, _) = connect_wss(addr, &room, &headers, &trusted)
            .await
            .unwrap_or_else(|e| panic!("{carrier}: {e}"));
        let welcome = next_json(&mut first).await;
        assert_eq!(welcome["type"], "welcome", "{carrier}");
        // A second member, then a message each way.
        let path = format!("/ws/chat/tls-{carrier}?token={}", token("other"));
        let (mut second, _) = connect_wss(addr, &path, &[], &trusted).await.unwrap();
        assert_eq!(next_json(&mut second).await["type"], "welcome");
        assert_eq!(next_json(&mut first).await["type"], "join");
        send(&mut first, r#"{"message":"from the first"}"#).await;
        let heard = next_json(&mut second).await;
        assert_eq!(heard["message"], "from the first", "{carrier}");
        send(&mut second, r#"{"message":"from the second"}"#).await;
        loop {
            let message = next_json(&mut first).await;
            if message["type"] == "message" && message["username"] == "other" {
                assert_eq!(message["message"], "from the second", "{carrier}");
                break;
            }
        }
    }
    assert_eq!(server.metrics.handshakes("accepted"), 8);
}

#[tokio::test]
async fn the_served_certificate_expiry_is_a_metric() {
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2040, 2, 29);
    let key = rcgen::KeyPair::generate().unwrap();
    let pair = (params.self_signed(&key).unwrap().pem(), key.serialize_pem());
    let server = tls_server(&pair, |_| {}).await;
    let not_after = metric_tls(server.addr, "wsgate_tls_cert_not_after_seconds", &pair.0).await;
    assert_eq!(not_after, 2_214_086_400.0, "2040-02-29 00:00:00 UTC");
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_told_at_once_and_holds_no_place() {
    let pair = self_signed();
    let server = tls_server(&pair, |_| {}).await;
    let started = Instant::now();
    let answer = server.get("/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("this port speaks TLS"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    pending_settles(server.addr, &pair.0).await;
    assert_eq!(
        metric_tls(server.addr, "wsgate_tls_handshake_failures_total", &pair.0).await,
        1.0
    );
}

#[tokio::test]
async fn tls_on_a_plain_port_fails_fast_and_holds_no_place() {
    let pair = self_signed();
    let server = TestServer::start(config()).await;
    let started = Instant::now();
    let path = format!("/ws/chat/lobby?token={}", token("alice"));
    let result = connect_wss(server.addr, &path, &[], &[&pair.0]).await;
    assert!(result.is_err(), "a TLS client got a connection from a plain port");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    let until = Instant::now() + WAIT;
    while server.metric("wsgate_pending_sockets").await > 1.0 {
        assert!(Instant::now() < until, "the TLS client's socket still holds a place");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn silent_tcp_on_the_tls_port_is_closed_at_the_handshake_timeout() {
    let pair = self_signed();
    let server = tls_server(&pair, |c| c.handshake_timeout = Duration::from_millis(500)).await;
    let started = Instant::now();
    // One that never says hello, one that stops in the middle of its hello.
    let mut silent = within(TcpStream::connect(server.addr)).await.unwrap();
    let mut stalled = within(TcpStream::connect(server.addr)).await.unwrap();
    within(stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))
        .await
        .unwrap();
    assert!(
        closed_by_server(&mut silent, WAIT).await,
        "the silent socket was never closed"
    );
    assert!(
        closed_by_server(&mut stalled, WAIT).await,
        "the stalled hello was never closed"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(3),
        "closed after {waited:?}, not at the 500 ms timeout"
    );
    pending_settles(server.addr, &pair.0).await;
}

#[tokio::test]
async fn silent_sockets_on_the_tls_port_cannot_keep_honest_clients_out() {
    const BUDGET: usize = 4;
    let pair = self_signed();
    let server = tls_server(&pair, |c| c.max_pending = BUDGET).await;
    let mut silent = Vec::new();
    for _ in 0..(4 * BUDGET) {
        silent.push(within(TcpStream::connect(server.addr)).await.unwrap());
    }
    for i in 0..5 {
        let path = format!("/ws/chat/lobby?token={}", token(&format!("honest{i}")));
        let (mut honest, _) = connect_wss(server.addr, &path, &[], &[&pair.0]).await.unwrap();
        assert_eq!(next_json(&mut honest).await["type"], "welcome");
        let pending = metric_tls(server.addr, "wsgate_pending_sockets", &pair.0).await;
        assert!(
            pending <= BUDGET as f64,
            "{pending} pending, over the budget of {BUDGET}"
        );
    }
    let mut evicted = 0;
    for socket in &mut silent {
        if closed_by_server(socket, Duration::from_millis(200)).await {
            evicted += 1;
        }
    }
    assert!(evicted >= 3 * BUDGET, "only {evicted} silent sockets were evicted");
}

#[tokio::test]
async fn over_tls_the_same_origin_is_https_only() {
    let pair = self_signed();
    let server = tls_server(&pair, |_| {}).await;
    let addr = server.addr;
    let cookie = format!("access_token={}", token("alice"));
    let https = format!("https://{addr}");
    let (mut client, _) = connect_wss(
        addr,
        "/ws/chat/lobby",
        &[("Cookie", &cookie), ("Origin", &https)],
        &[&pair.0],
    )
    .await
    .unwrap();
    assert_eq!(next_json(&mut client).await["type"], "welcome");
    // The same host over plain http: a page anyone on the path could have written.
    let http = format!("http://{addr}");
    let result = connect_wss(
        addr,
        "/ws/chat/lobby",
        &[("Cookie", &cookie), ("Origin", &http)],
        &[&pair.0],
    )
    .await;
    let response = refused(result);
    assert_eq!(response.status(), 403);
    assert!(body(&response).contains("over https"), "{}", body(&response));
    // A listed http origin is still allowed: the operator named it.
    drop(server);
    let listed = tls_server(&pair, |c| {
        c.origins = wsgate::OriginPolicy::List(vec!["http://app.example".into()])
    })
    .await;
    let (mut client, _) = connect_wss(
        listed.addr,
        "/ws/chat/lobby",
        &[("Cookie", &cookie), ("Origin", "http://app.example")],
        &[&pair.0],
    )
    .await
    .unwrap();
    assert_eq!(next_json(&mut client).await["type"], "welcome");
}

#[tokio::test]
async fn an_embedder_reloads_and_a_bad_pair_keeps_the_old_one() {
    let (first, second) = (self_signed(), self_signed());
    let dir = temp_dir("embed");
    write_pair(&dir, &first);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let tls = Tls::new(wsgate::tls::load(&cert, &key).unwrap());
    let server = TestServer::start(config().with(|c| c.tls = Some(tls.clone()))).await;
    let trusted = [first.0.as_str(), second.0.as_str()];
    let path = format!("/ws/chat/lobby?token={}", token("alice"));
    let (old, _) = connect_wss(server.addr, &path, &[], &trusted).await.unwrap();
    assert_eq!(served_to(&old), der(&first.0).to_vec());
    // The second certificate with the first one's key: refused, the first still served.
    std::fs::write(&cert, &second.0).unwrap();
    let refused = tls.reload(&cert, &key).unwrap_err();
    assert!(matches!(refused, wsgate::tls::TlsError::Refused(_)), "{refused}");
    let (still, _) = connect_wss(server.addr, &path, &[], &trusted).await.unwrap();
    assert_eq!(served_to(&still), der(&first.0).to_vec());
    // An embedder's own ServerConfig.
    let own = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![der(&second.0)],
            rustls::pki_types::PrivateKeyDer::from_pem_slice(second.1.as_bytes()).unwrap(),
        )
        .unwrap();
    tls.serve(Certificate::from(own));
    let (new, _) = connect_wss(server.addr, &path, &[], &trusted).await.unwrap();
    assert_eq!(served_to(&new), der(&second.0).to_vec());
}

/// The wsgate binary over TLS, with its stderr read line by line.
struct Binary {
    child: Child,
    stderr: tokio::io::Lines<BufReader<ChildStderr>>,
    addr: std::net::SocketAddr,
}

impl Binary {
    async fn start(dir: &Path) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .args(["serve", "--addr", "127.0.0.1:0", "--tls-cert"])
            .arg(dir.join("cert.pem"))
            .arg("--tls-key")
            .arg(dir.join("key.pem"))
            .env("WSGATE_SECRET", std::str::from_utf8(SECRET).unwrap())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut binary = Binary {
            child,
            stderr,
            addr: "0.0.0.0:0".parse().unwrap(),
        };
        binary.log_line("serving TLS").await;
        let listening = binary.log_line("listening").await;
        let addr = listening
            .split("addr=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        binary.addr = addr.parse().unwrap();
        binary
    }

    /// The next log line that contains `what`.
    async fn log_line(&mut self, what: &str) -> String {
        within(async {
            loop {
                let line = self.stderr.next_line().await.unwrap().expect("wsgate exited");
                if line.contains(what) {
                    return line;
                }
            }
        })
        .await
    }

    fn hang_up(&self) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

#[tokio::test]
async fn sighup_serves_a_new_pair_to_new_handshakes_and_keeps_a_broken_one_out() {
    let (first, second) = (self_signed(), self_signed());
    let dir = temp_dir("sighup");
    write_pair(&dir, &first);
    let mut wsgate = Binary::start(&dir).await;
    let trusted = [first.0.as_str(), second.0.as_str()];
    let path = |user: &str| format!("/ws/chat/reload?token={}", token(user));

    let (mut old, _) = connect_wss(wsgate.addr, &path("old"), &[], &trusted).await.unwrap();
    assert_eq!(served_to(&old), der(&first.0).to_vec());
    assert_eq!(next_json(&mut old).await["type"], "welcome");

    // A new valid pair: new handshakes get it, the open connection stays and still chats.
    write_pair(&dir, &second);
    wsgate.hang_up();
    let reloaded = wsgate.log_line("TLS certificate reloaded").await;
    assert!(
        reloaded.contains("not_after=") && reloaded.contains(" UTC"),
        "{reloaded}"
    );
    let (mut new, _) = connect_wss(wsgate.addr, &path("new"), &[], &trusted).await.unwrap();
    assert_eq!(served_to(&new), der(&second.0).to_vec());
    assert_eq!(next_json(&mut new).await["type"], "welcome");
    assert_eq!(next_json(&mut old).await["type"], "join");
    send(&mut old, r#"{"message":"still here"}"#).await;
    assert_eq!(next_json(&mut new).await["message"], "still here");

    // A broken pair: logged, and the second certificate is still served.
    std::fs::write(
        dir.join("key.pem"),
        "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    wsgate.hang_up();
    let failed = wsgate.log_line("TLS reload failed").await;
    assert!(failed.contains("ERROR"), "{failed}");
    let (mut after, _) = connect_wss(wsgate.addr, &path("after"), &[], &trusted).await.unwrap();
    assert_eq!(served_to(&after), der(&second.0).to_vec());
    assert_eq!(next_json(&mut after).await["type"], "welcome");
    send(&mut old, r#"{"message":"and still"}"#).await;
    assert_eq!(next_json(&mut after).await["type"], "message");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A certificate path that is a FIFO (which would block a reader forever), a directory, or a
/// huge file is refused at once, and the message an operator reads names a truncated PEM.
#[test]
fn files_that_would_block_or_flood_a_reload_are_refused_at_once() {
    let dir = temp_dir("hostile-files");
    write_pair(&dir, &self_signed());
    let key = dir.join("key.pem");
    let fifo = dir.join("fifo.pem");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let huge = dir.join("huge.pem");
    let mut big = std::fs::read(dir.join("cert.pem")).unwrap();
    big.resize(2 << 20, b'A');
    std::fs::write(&huge, big).unwrap();
    let truncated = dir.join("truncated.pem");
    let cert = std::fs::read_to_string(dir.join("cert.pem")).unwrap();
    std::fs::write(&truncated, &cert[..cert.len() / 2]).unwrap();
    for (path, says) in [
        (fifo, "not a regular file"),
        (dir.clone(), "not a regular file"),
        (huge, "larger than 1 MiB"),
        (truncated, "-----END CERTIFICATE-----"),
    ] {
        // On a thread of its own, so a load that blocks fails the test instead of hanging it.
        let (path_in, key_in) = (path.clone(), key.clone());
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(wsgate::tls::load(&path_in, &key_in)));
        let loaded = result.recv_timeout(Duration::from_secs(10)).expect("the load blocked");
        let error = loaded
            .err()
            .unwrap_or_else(|| panic!("{} was accepted", path.display()));
        assert!(error.to_string().contains(says), "{}: {error}", path.display());
    }
}

/// A client's link with a round trip of `delay`: a flight that answers the server (a write
/// after a read) leaves `delay` late. The first flight, the TLS hello, goes out with the
/// connect, as it does on a real link.
struct SlowLink {
    stream: TcpStream,
    delay: Duration,
    answered: bool,
    wait: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl tokio::io::AsyncRead for SlowLink {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.answered = true;
        }
        polled
    }
}

impl tokio::io::AsyncWrite for SlowLink {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if std::mem::take(&mut self.answered) {
            let delay = self.delay;
            self.wait = Some(Box::pin(tokio::time::sleep(delay)));
        }
        if let Some(wait) = &mut self.wait {
            std::task::ready!(wait.as_mut().poll(cx));
            self.wait = None;
        }
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_tls_client_on_a_slow_link_gets_in_during_a_silent_flood() {
    let pair = self_signed();
    let server = tls_server(&pair, |c| c.max_pending = 8).await;
    let addr = server.addr;
    let honest = async {
        let stream = within(TcpStream::connect(addr)).await.unwrap();
        let link = SlowLink {
            stream,
            delay: Duration::from_millis(200),
            answered: false,
            wait: None,
        };
        let path = format!("wss://{addr}/ws/chat/lobby?token={}", token("far"));
        let connected = tokio_tungstenite::client_async_tls_with_config(
            path.into_client_request().unwrap(),
            link,
            None,
            Some(client(&[&pair.0])),
        );
        match within(connected).await {
            Ok((mut ws, _)) => {
                let welcome = within(futures_util::StreamExt::next(&mut ws)).await;
                format!("{welcome:?}")
            }
            Err(e) => format!("refused: {e}"),
        }
    };
    // Silent sockets, one every 5 ms for 1.5 s: the 8 places cycle every 40 ms, far faster
    // than the client's 200 ms flights.
    let silent = async {
        let mut sockets = Vec::new();
        for _ in 0..300 {
            sockets.push(within(TcpStream::connect(addr)).await.unwrap());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sockets
    };
    let (welcome, sockets) = tokio::join!(honest, silent);
    assert!(sockets.len() > 100);
    assert!(welcome.contains("welcome"), "{welcome}");
}
