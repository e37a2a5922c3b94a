//! Load generator for wsgate (and the baseline), loopback only, every run bounded in time.
//!
//! ```text
//! loadgen handshake --url ws://127.0.0.1:8080 --conns 50 --duration 10
//! loadgen reject    --url ws://127.0.0.1:8080 --conns 50 --duration 10
//! loadgen fanout    --url ws://127.0.0.1:8080 --rooms 1 --subs 1000 --pubs 1 --rate 0 --duration 10
//! loadgen idle      --url ws://127.0.0.1:8080 --conns 10000 --hold 10
//! loadgen fanout    --url ws://127.0.0.1:8080 --url2 ws://127.0.0.1:8081 ...   (members split over two nodes)
//! loadgen attack    --url ws://127.0.0.1:8080 --silent 512 --flood 8 --honest 20 --honest-rate 10 --duration 20
//! loadgen attack    --url ws://127.0.0.1:8080 --silent 2048 --honest 10 --honest-pace 750 --duration 10
//! loadgen history   --url ws://127.0.0.1:8080 --rooms 1000 --messages 100 --size 100 --hold 10
//! loadgen handshake --url wss://127.0.0.1:8443 --ca cert.pem --conns 50 --duration 10   (any scenario, over TLS)
//! ```
//!
//! With a `wss://` URL every connection does a full TLS handshake (no session resumption, the
//! worst case for the server, as a flood of new clients would be), trusting the PEM
//! certificate given with `--ca`.
//!
//! Tokens are minted from `WSGATE_SECRET` (the baseline ignores them); `reject` signs with a
//! different key. Every connection gets its own token `sub` (`u{loop}-{n}`, `s{room}-{n}`, …),
//! so the server's per-user limits (32 open, 2 connects/s per `sub`) never apply to a
//! scenario; a refusal of any kind (a `429` included) is an error, and `failures` names each
//! by its status (`"429"`, `"503"`), `"timeout"`, `"io:…"` or `"no welcome"`. `attack` measures
//! honest clients while silent sockets and a bad-token flood press on the pending budget (see
//! [`attack`]). `history` fills rooms with history and leaves them empty, for the server's
//! memory per kept room (see [`history`]).
//!
//! `--rate 0` means as fast as the room delivers: each publisher keeps at most 32 messages in
//! flight (sent but not yet echoed back to it) and stays within 128 messages of
//! its slowest subscriber, so a correct server loses nothing. Loss is always reported:
//! `expected` is messages sent × subscribers, `received` what the subscribers got, `lagged`
//! what the server told them they missed. Add `--json` for one JSON object on stdout.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{Barrier, Semaphore};
use tokio::time::timeout;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream, client_async_tls_with_config};
use wsgate::jwt::{Claims, Key, unix_now};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// With a `wss://` URL: the TLS client settings, trusting `--ca`.
static TLS: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();

const STEP: Duration = Duration::from_secs(10);

/// With `--rate 0`, how far (in messages) a publisher may run ahead of its slowest subscriber:
/// half the server's default room buffer, so nobody lags by design.
const WINDOW: u64 = 128;

struct Args {
    scenario: String,
    addr: SocketAddr,
    /// A second node (fanout only): odd-numbered subscribers connect there.
    addr2: Option<SocketAddr>,
    options: HashMap<String, String>,
    json: bool,
}

impl Args {
    fn number(&self, name: &str, default: u64) -> Result<u64, Error> {
        match self.options.get(name) {
            Some(v) => v.parse().map_err(|_| format!("--{name}: {v:?} is not a number").into()),
            None => Ok(default),
        }
    }
}

fn parse_args() -> Result<Args, Error> {
    let mut args = std::env::args().skip(1);
    let scenario = args
        .next()
        .ok_or("usage: loadgen handshake|reject|fanout|idle|attack|history --url ws://127.0.0.1:PORT [...]")?;
    let mut options = HashMap::new();
    let mut json = false;
    while let Some(arg) = args.next() {
        let name = arg.strip_prefix("--").ok_or_else(|| format!("unexpected {arg:?}"))?;
        if name == "json" {
            json = true;
            continue;
        }
        options.insert(
            name.to_owned(),
            args.next().ok_or_else(|| format!("--{name} needs a value"))?,
        );
    }
    let url = options
        .get("url")
        .cloned()
        .unwrap_or_else(|| "ws://127.0.0.1:8080".to_owned());
    let addr = authority(&url, "--url")?;
    let addr2 = match options.get("url2") {
        Some(url2) if url2.starts_with("wss://") != url.starts_with("wss://") => {
            return Err("--url and --url2 must both be ws:// or both wss://".into());
        }
        Some(url2) => Some(authority(url2, "--url2")?),
        None => None,
    };
    if url.starts_with("wss://") {
        let ca = options
            .get("ca")
            .ok_or("a wss:// URL needs --ca PATH: the server's certificate (PEM)")?;
        let config = tls_client(ca.as_ref()).map_err(|e| format!("--ca {ca}: {e}"))?;
        let _ = TLS.set(Arc::new(config));
    }
    // Load is only ever aimed at this machine.
    if !addr.ip().is_loopback() || addr2.is_some_and(|a| !a.ip().is_loopback()) {
        return Err("loadgen only targets loopback addresses (127.0.0.0/8, ::1)".into());
    }
    Ok(Args {
        scenario,
        addr,
        addr2,
        options,
        json,
    })
}

/// `ws://IP:PORT` or `wss://IP:PORT` as an address.
fn authority(url: &str, flag: &str) -> Result<SocketAddr, Error> {
    let authority = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .ok_or_else(|| format!("{flag} must start with ws:// or wss://"))?
        .trim_end_matches('/');
    authority
        .parse()
        .map_err(|_| format!("{flag} must be ws://IP:PORT or wss://IP:PORT").into())
}

/// A TLS client that trusts the PEM certificate at `ca`, with session resumption off.
fn tls_client(ca: &std::path::Path) -> Result<rustls::ClientConfig, Error> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// The URL of a room on `addr`, over TLS when the run is.
fn room_url(addr: SocketAddr, room: &str, query: &str) -> String {
    let scheme = if TLS.get().is_some() { "wss" } else { "ws" };
    format!("{scheme}://{addr}/ws/chat/{room}?{query}")
}

/// The WebSocket handshake (and the TLS one first, on a wss:// run) over `stream`.
async fn handshake(url: String, stream: TcpStream) -> Result<Ws, WsError> {
    let connector = TLS.get().map(|config| Connector::Rustls(config.clone()));
    let request = url.into_client_request()?;
    let (ws, _) = client_async_tls_with_config(request, stream, Some(client_config()), connector).await?;
    Ok(ws)
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("loadgen: {e}");
        std::process::exit(2);
    }
}

async fn run() -> Result<(), Error> {
    let args = parse_args()?;
    let secret = std::env::var("WSGATE_SECRET").unwrap_or_else(|_| "loadgen-default-secret-0123456789abcdef".into());
    let key = Arc::new(Key::new(secret.as_bytes())?);
    let report = match args.scenario.as_str() {
        "handshake" => handshakes(&args, key, false).await?,
        "reject" => {
            let wrong = Key::new(b"a-key-the-server-does-not-have-0123456789")?;
            handshakes(&args, Arc::new(wrong), true).await?
        }
        "fanout" => fanout(&args, key).await?,
        "idle" => idle(&args, key).await?,
        "attack" => attack(&args, key).await?,
        "history" => history(&args, key).await?,
        other => return Err(format!("unknown scenario {other:?}").into()),
    };
    if args.json {
        println!("{report}");
    } else {
        for (name, value) in report.as_object().into_iter().flatten() {
            println!("{name:>22}: {value}");
        }
    }
    Ok(())
}

fn client_config() -> WebSocketConfig {
    // The load generator's own memory should not crowd the server's.
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0)
}

fn token(key: &Key, sub: &str) -> String {
    key.sign(&Claims::new(sub, unix_now() + 3600))
}

/// Connects to `room` as `user`. `Ok(Err(status))` is an HTTP refusal.
async fn connect(addr: SocketAddr, room: &str, user: &str, key: &Key) -> Result<Result<Ws, u16>, Error> {
    let url = room_url(addr, room, &format!("token={}&user={user}", token(key, user)));
    let stream = timeout(STEP, TcpStream::connect(addr)).await??;
    stream.set_nodelay(true)?;
    match timeout(STEP, handshake(url, stream)).await? {
        Ok(ws) => Ok(Ok(ws)),
        Err(WsError::Http(response)) => Ok(Err(response.status().as_u16())),
        Err(e) => Err(e.into()),
    }
}

/// Why a connect gave no usable connection, in a word: the status of an HTTP refusal
/// (`"429"`), `"timeout"`, or the kind of I/O or protocol error.
fn failure_kind(result: &Result<Result<Ws, u16>, Error>) -> String {
    match result {
        Ok(Ok(_)) => "ok".into(),
        Ok(Err(status)) => status.to_string(),
        Err(e) => error_kind(e.as_ref()),
    }
}

fn error_kind(e: &(dyn std::error::Error + 'static)) -> String {
    if e.is::<tokio::time::error::Elapsed>() {
        return "timeout".into();
    }
    if let Some(e) = e.downcast_ref::<std::io::Error>() {
        return format!("io:{:?}", e.kind());
    }
    match e.downcast_ref::<WsError>() {
        Some(WsError::Io(e)) => format!("io:{:?}", e.kind()),
        Some(WsError::ConnectionClosed | WsError::AlreadyClosed) => "closed".into(),
        Some(WsError::Protocol(p)) => format!("protocol:{p}"),
        Some(WsError::Http(r)) => r.status().as_u16().to_string(),
        _ => e.to_string().chars().take(40).collect(),
    }
}

type Failures = BTreeMap<String, u64>;

fn merge(into: &mut Failures, from: Failures) {
    for (kind, n) in from {
        *into.entry(kind).or_default() += n;
    }
}

async fn next_text(ws: &mut Ws) -> Result<String, Error> {
    loop {
        match timeout(STEP, ws.next()).await? {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}").into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => return Err("connection ended".into()),
        }
    }
}

/// Percentiles of latencies in microseconds.
fn percentiles(mut samples: Vec<u32>) -> serde_json::Value {
    if samples.is_empty() {
        return json!(null);
    }
    samples.sort_unstable();
    let at = |p: f64| f64::from(samples[((samples.len() - 1) as f64 * p) as usize]) / 1000.0;
    json!({"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": at(1.0), "samples": samples.len()})
}

/// C loops of connect → welcome → close (or, with a wrong key, connect → refused).
async fn handshakes(args: &Args, key: Arc<Key>, expect_refusal: bool) -> Result<serde_json::Value, Error> {
    let conns = args.number("conns", 50)?;
    let duration = Duration::from_secs(args.number("duration", 10)?);
    let addr = args.addr;
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for worker in 0..conns {
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut latencies) = (0u64, 0u64, Vec::new());
            let mut failures = Failures::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let t0 = Instant::now();
                // A sub of its own for every connection: the per-user limits never apply.
                let result = connect(addr, "handshake", &format!("u{worker}-{i}"), &key).await;
                let kind = failure_kind(&result);
                match (result, expect_refusal) {
                    (Ok(Ok(mut ws)), false) => match next_text(&mut ws).await {
                        Ok(_) => {
                            latencies.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                            ok += 1;
                            let _ = timeout(STEP, ws.close(None)).await;
                            let _ = timeout(STEP, async { while ws.next().await.is_some() {} }).await;
                        }
                        Err(_) => {
                            errors += 1;
                            *failures.entry("no welcome".into()).or_default() += 1;
                        }
                    },
                    (Ok(Err(401)), true) => {
                        latencies.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        ok += 1;
                    }
                    _ => {
                        errors += 1;
                        *failures.entry(kind).or_default() += 1;
                    }
                }
            }
            (ok, errors, latencies, failures)
        }));
    }
    let (mut ok, mut errors, mut latencies, mut failures) = (0, 0, Vec::new(), Failures::new());
    for task in tasks {
        let (o, e, l, f) = task.await?;
        ok += o;
        errors += e;
        latencies.extend(l);
        merge(&mut failures, f);
    }
    let seconds = started.elapsed().as_secs_f64();
    let what = if expect_refusal { "rejected" } else { "accepted" };
    Ok(json!({
        "scenario": args.scenario, "conns": conns, "seconds": seconds,
        what: ok, format!("{what}_per_s"): ok as f64 / seconds, "errors": errors, "failures": failures,
        "latency": percentiles(latencies),
    }))
}

/// Counters shared by the subscribers of a fan-out run.
#[derive(Default)]
struct FanoutCounts {
    received: AtomicU64,
    lagged: AtomicU64,
    measuring: AtomicBool,
    /// Tells every subscriber to stop reading and hand in its latencies.
    stop: tokio::sync::Notify,
}

/// R rooms of N subscribers and P publishers; publishers send `seq|nanos` messages.
async fn fanout(args: &Args, key: Arc<Key>) -> Result<serde_json::Value, Error> {
    let rooms = args.number("rooms", 1)?;
    let subs = args.number("subs", 100)?;
    let pubs = args.number("pubs", 1)?;
    let rate = args.number("rate", 0)?;
    let duration = Duration::from_secs(args.number("duration", 10)?);
    let (addr, addr2) = (args.addr, args.addr2);
    let epoch = Instant::now();
    let counts = Arc::new(FanoutCounts::default());

    // Subscribers: connect (at most 100 handshakes at once), then count messages and lags.
    let ready = Arc::new(Barrier::new((rooms * subs) as usize + 1));
    let connecting = Arc::new(Semaphore::new(100));
    let mut subscribers = Vec::new();
    // For rate 0: the last sequence number each subscriber has seen from each publisher, so a
    // publisher can stay within WINDOW messages of its slowest subscriber (no loss by design).
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..rooms * subs * pubs).map(|_| AtomicU64::new(0)).collect());
    for room in 0..rooms {
        for s in 0..subs {
            let (key, counts, ready, connecting) = (key.clone(), counts.clone(), ready.clone(), connecting.clone());
            let progress = progress.clone();
            subscribers.push(tokio::spawn(async move {
                let permit = connecting.acquire_owned().await;
                let node = if s % 2 == 1 { addr2.unwrap_or(addr) } else { addr };
                let result = connect(node, &format!("fanout-{room}"), &format!("s{room}-{s}"), &key).await;
                let kind = failure_kind(&result);
                let Ok(Ok(mut ws)) = result else {
                    ready.wait().await;
                    return (Vec::new(), Some(kind));
                };
                drop(permit);
                if next_text(&mut ws).await.is_err() {
                    ready.wait().await;
                    return (Vec::new(), Some("no welcome".to_owned()));
                }
                ready.wait().await;
                let mut latencies = Vec::new();
                let stopped = counts.stop.notified();
                tokio::pin!(stopped);
                loop {
                    let message = tokio::select! {
                        _ = &mut stopped => break,
                        message = ws.next() => message,
                    };
                    let Some(Ok(message)) = message else { break };
                    let Message::Text(text) = message else { continue };
                    if !counts.measuring.load(Relaxed) {
                        continue;
                    }
                    if let Some(at) = text.find(r#""missed":"#) {
                        let missed: u64 = text[at + 9..].trim_end_matches('}').parse().unwrap_or(0);
                        counts.lagged.fetch_add(missed, Relaxed);
                    } else if let Some(at) = text.find("|t") {
                        let sent: u64 = text[at + 2..]
                            .split('"')
                            .next()
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0);
                        // "message":"P:SEQ|tNANOS"
                        let head = &text[..at];
                        let (p, seq) = head[head.rfind('"').map_or(0, |i| i + 1)..]
                            .split_once(':')
                            .unwrap_or(("0", "0"));
                        let (p, seq): (u64, u64) = (p.parse().unwrap_or(0), seq.parse().unwrap_or(0));
                        progress[((room * subs + s) * pubs + p) as usize].store(seq, Relaxed);
                        let now = epoch.elapsed().as_nanos() as u64;
                        if latencies.len() < 2_000_000 {
                            latencies.push((now.saturating_sub(sent) / 1000).min(u64::from(u32::MAX)) as u32);
                        }
                        counts.received.fetch_add(1, Relaxed);
                    }
                }
                (latencies, None)
            }));
        }
    }
    timeout(Duration::from_secs(120), ready.wait())
        .await
        .map_err(|_| "subscribers did not connect within 120 s")?;
    // Let the join events of the setup drain before anything is measured.
    tokio::time::sleep(Duration::from_millis(500)).await;
    counts.measuring.store(true, Relaxed);

    let sent = Arc::new(AtomicU64::new(0));
    let refused_by_server = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut publishers = Vec::new();
    for room in 0..rooms {
        for p in 0..pubs {
            let (key, sent, refused_by_server) = (key.clone(), sent.clone(), refused_by_server.clone());
            let progress = progress.clone();
            // The slowest subscriber of this room, for this publisher.
            let slowest = move || {
                (0..subs)
                    .map(|s| progress[((room * subs + s) * pubs + p) as usize].load(Relaxed))
                    .min()
                    .unwrap_or(0)
            };
            publishers.push(tokio::spawn(async move {
                let result = connect(addr, &format!("fanout-{room}"), &format!("p{room}-{p}"), &key).await;
                let kind = failure_kind(&result);
                let Ok(Ok(ws)) = result else {
                    return Some(format!("publisher {kind}"));
                };
                let (mut write, mut read) = ws.split();
                // Closed loop for rate 0: at most 32 of our messages in flight.
                let window = Arc::new(Semaphore::new(32));
                let echo_window = window.clone();
                let me = format!(r#""username":"p{room}-{p}""#);
                let refused = refused_by_server.clone();
                // Our messages that came back (or were refused): we may only close once all
                // have, or the close would reset the connection and destroy the last ones
                // still unread in the server's receive queue.
                let answered = Arc::new(AtomicU64::new(0));
                let answered_seen = answered.clone();
                let echoes = tokio::spawn(async move {
                    loop {
                        match timeout(Duration::from_secs(3), read.next()).await {
                            Ok(Some(Ok(Message::Text(text)))) => {
                                if text.contains(&me) && text.contains("|t") {
                                    echo_window.add_permits(1);
                                    answered_seen.fetch_add(1, Relaxed);
                                } else if text.contains(r#""type":"error""#) {
                                    // Refused (e.g. rate limited): it will never echo.
                                    refused.fetch_add(1, Relaxed);
                                    echo_window.add_permits(1);
                                    answered_seen.fetch_add(1, Relaxed);
                                }
                            }
                            Ok(Some(Ok(_))) => continue,
                            _ => break,
                        }
                    }
                });
                // Publishers are spread evenly over one period rather than all ticking at once,
                // as independent senders would be.
                let mut ticker = (rate > 0).then(|| {
                    let period = Duration::from_secs_f64(1.0 / rate as f64);
                    let phase = period.mul_f64((room * pubs + p) as f64 / (rooms * pubs) as f64);
                    tokio::time::interval_at(tokio::time::Instant::now() + phase, period)
                });
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    match &mut ticker {
                        Some(ticker) => {
                            ticker.tick().await;
                        }
                        None => {
                            match timeout(Duration::from_secs(1), window.acquire()).await {
                                Ok(Ok(permit)) => permit.forget(),
                                _ => continue,
                            }
                            // Bounded by the deadline: wait while the slowest is WINDOW behind.
                            while seq >= slowest() + WINDOW && Instant::now() < deadline {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                        }
                    }
                    seq += 1;
                    let body = format!(r#"{{"message":"{p}:{seq}|t{}"}}"#, epoch.elapsed().as_nanos());
                    if write.send(Message::text(body)).await.is_err() {
                        break;
                    }
                    sent.fetch_add(1, Relaxed);
                }
                let until = Instant::now() + Duration::from_secs(5);
                while answered.load(Relaxed) < seq && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let _ = write.close().await;
                // The reader ends when the server closes too; it reads everything until then.
                if timeout(Duration::from_secs(3), echoes).await.is_err() {
                    return Some("publisher close timeout".to_owned());
                }
                None
            }));
        }
    }
    let mut errors = 0;
    let mut failures = Failures::new();
    for publisher in publishers {
        if let Some(kind) = publisher.await? {
            errors += 1;
            *failures.entry(kind).or_default() += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    // Messages the server refused (rate limit) are not expected to arrive.
    let expected = sent.load(Relaxed).saturating_sub(refused_by_server.load(Relaxed)) * subs;
    // Drain: wait (boundedly) until every sent message is received or reported lagged.
    let drain_until = Instant::now() + Duration::from_secs(5);
    while counts.received.load(Relaxed) + counts.lagged.load(Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    counts.measuring.store(false, Relaxed);
    let received = counts.received.load(Relaxed);
    let mut latencies = Vec::new();
    counts.stop.notify_waiters();
    for subscriber in subscribers {
        match timeout(STEP, subscriber).await {
            Ok(Ok((l, failure))) => {
                latencies.extend(l);
                if let Some(kind) = failure {
                    errors += 1;
                    *failures.entry(kind).or_default() += 1;
                }
            }
            _ => {
                errors += 1;
                *failures.entry("subscriber did not end".into()).or_default() += 1;
            }
        }
    }
    Ok(json!({
        "scenario": "fanout", "rooms": rooms, "subs": subs, "pubs": pubs, "rate": rate, "seconds": seconds,
        "sent": sent.load(Relaxed), "refused_by_server": refused_by_server.load(Relaxed),
        "expected": expected, "received": received,
        "lagged": counts.lagged.load(Relaxed), "lost": expected.saturating_sub(received),
        "deliveries_per_s": received as f64 / seconds, "errors": errors, "failures": failures,
        "latency": percentiles(latencies),
    }))
}

/// N authenticated connections that just stay open for `--hold` seconds.
async fn idle(args: &Args, key: Arc<Key>) -> Result<serde_json::Value, Error> {
    let conns = args.number("conns", 1000)?;
    let hold = Duration::from_secs(args.number("hold", 10)?);
    let addr = args.addr;
    let started = Instant::now();
    let connecting = Arc::new(Semaphore::new(200));
    let errors = Arc::new(std::sync::Mutex::new(Failures::new()));
    let open = Arc::new(Barrier::new(conns as usize + 1));
    let release = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for i in 0..conns {
        let (key, connecting, errors, open, release) = (
            key.clone(),
            connecting.clone(),
            errors.clone(),
            open.clone(),
            release.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let permit = connecting.acquire_owned().await;
            let result = connect(addr, &format!("idle-{}", i % 100), &format!("i{i}"), &key).await;
            let ws = match result {
                Ok(Ok(mut ws)) => match next_text(&mut ws).await {
                    Ok(_) => Ok(ws),
                    Err(_) => Err("no welcome".to_owned()),
                },
                other => Err(failure_kind(&other)),
            };
            drop(permit);
            let ws = ws
                .map_err(|kind| *errors.lock().unwrap().entry(kind).or_default() += 1)
                .ok();
            let released = release.notified();
            open.wait().await;
            released.await;
            drop(ws);
        }));
    }
    timeout(Duration::from_secs(300), open.wait())
        .await
        .map_err(|_| "connections did not open within 300 s")?;
    let opened_in = started.elapsed().as_secs_f64();
    // The marker scripts/bench.sh waits for before it reads the server's memory.
    eprintln!(
        "loadgen: all {conns} connections open after {opened_in:.1} s; holding {} s",
        hold.as_secs()
    );
    tokio::time::sleep(hold).await;
    release.notify_waiters();
    for task in tasks {
        let _ = task.await;
    }
    let failures = errors.lock().unwrap().clone();
    Ok(json!({
        "scenario": "idle", "conns": conns, "opened_in_s": opened_in,
        "errors": failures.values().sum::<u64>(), "failures": failures, "held_s": hold.as_secs(),
    }))
}

/// Fills `--rooms` rooms with `--messages` chat messages of `--size` bytes each, one member per
/// room that leaves when its last message comes back; the rooms are then empty and kept for
/// their history, and it holds `--hold` seconds so the server's memory can be read (the
/// marker line below). 20 rooms at a time; every member's messages stay within the default
/// rate burst (100).
async fn history(args: &Args, key: Arc<Key>) -> Result<serde_json::Value, Error> {
    let rooms = args.number("rooms", 1000)?;
    let messages = args.number("messages", 100)?;
    let size = args.number("size", 100)? as usize;
    let hold = Duration::from_secs(args.number("hold", 10)?);
    let started = Instant::now();
    let text = json!({ "message": "x".repeat(size) }).to_string();
    let at_once = Arc::new(Semaphore::new(20));
    let mut tasks = Vec::new();
    for room in 0..rooms {
        let (key, at_once, text, addr) = (key.clone(), at_once.clone(), text.clone(), args.addr);
        tasks.push(tokio::spawn(async move {
            let _permit = at_once.acquire_owned().await;
            let fill = async {
                let mut ws = match connect(addr, &format!("hist-{room}"), &format!("h{room}"), &key).await {
                    Ok(Ok(ws)) => ws,
                    other => return Err(failure_kind(&other)),
                };
                next_text(&mut ws).await.map_err(|_| "no welcome".to_owned())?;
                for _ in 0..messages {
                    ws.feed(Message::text(text.clone()))
                        .await
                        .map_err(|e| format!("io:{e}"))?;
                }
                ws.flush().await.map_err(|e| format!("io:{e}"))?;
                for _ in 0..messages {
                    next_text(&mut ws).await.map_err(|_| "echo missing".to_owned())?;
                }
                let _ = ws.close(None).await;
                Ok(())
            };
            timeout(STEP, fill).await.unwrap_or_else(|_| Err("timeout".to_owned()))
        }));
    }
    let mut failures = Failures::new();
    for task in tasks {
        if let Err(kind) = task.await? {
            *failures.entry(kind).or_default() += 1;
        }
    }
    let filled_in = started.elapsed().as_secs_f64();
    // The marker scripts/bench.sh waits for before it reads the server's memory.
    eprintln!(
        "loadgen: {rooms} rooms filled after {filled_in:.1} s; holding {} s",
        hold.as_secs()
    );
    tokio::time::sleep(hold).await;
    Ok(json!({
        "scenario": "history", "rooms": rooms, "messages": messages, "size": size,
        "frame_bytes": text.len(), "filled_in_s": filled_in,
        "errors": failures.values().sum::<u64>(), "failures": failures,
    }))
}

/// What one attempt of the attack scenario came to.
enum Attempt {
    Open(Box<Ws>),
    Refused(u16),
    Failed(String),
}

/// Connect and upgrade within `limit` in all; every failure is named.
async fn connect_within(addr: SocketAddr, room: &str, user: &str, key: &Key, limit: Duration) -> Attempt {
    let url = room_url(addr, room, &format!("token={}&user={user}", token(key, user)));
    let attempt = async {
        let stream = TcpStream::connect(addr).await.map_err(WsError::Io)?;
        stream.set_nodelay(true).map_err(WsError::Io)?;
        handshake(url, stream).await
    };
    match timeout(limit, attempt).await {
        Err(_) => Attempt::Failed("timeout".into()),
        Ok(Ok(ws)) => Attempt::Open(Box::new(ws)),
        Ok(Err(WsError::Http(response))) => Attempt::Refused(response.status().as_u16()),
        Ok(Err(e)) => Attempt::Failed(error_kind(&e)),
    }
}

/// A slow honest client: sends its upgrade request in three pieces `pace` apart and reads the
/// status line; `Ok` on `101`, else the status or what went wrong.
async fn upgrade_slowly(addr: SocketAddr, user: &str, key: &Key, pace: Duration) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let path = format!("/ws/chat/attack?token={}&user={user}", token(key, user));
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("io:{:?}", e.kind()))?;
    let third = head.len() / 3;
    for (i, piece) in [&head[..third], &head[third..2 * third], &head[2 * third..]]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            tokio::time::sleep(pace).await;
        }
        stream
            .write_all(piece.as_bytes())
            .await
            .map_err(|_| "evicted".to_owned())?;
    }
    let mut response = [0u8; 64];
    let n = stream.read(&mut response).await.map_err(|_| "evicted".to_owned())?;
    match std::str::from_utf8(&response[..n]).unwrap_or("").split(' ').nth(1) {
        Some("101") => Ok(()),
        Some(status) => Err(status.to_owned()),
        None => Err("evicted".to_owned()),
    }
}

/// What a slowloris socket drips, a byte at a time: a head that never ends.
const DRIP: &[u8] = b"GET /ws/chat/attack HTTP/1.1\r\nX-Drip: ";

/// Counters of the attacking side.
#[derive(Default)]
struct AttackCounts {
    silent_opens: AtomicU64,
    silent_closed_by_server: AtomicU64,
    /// Silent sockets that got bytes (a `503`, say) before the server closed them.
    silent_answered: AtomicU64,
    silent_connect_failures: AtomicU64,
    flood_rejected: AtomicU64,
}

/// The pending budget under attack, measured from an honest client's side, for `--duration`
/// seconds after `--warmup-ms` of attack alone:
///
/// - `--silent N` TCP sockets that never send a byte; one the server closes (evicts) is
///   opened again at once, so they keep pressing on the budget of sockets not yet admitted;
///   with `--drip-ms MS` they are slowloris instead: each sends one byte of a head that never
///   ends every `MS`;
/// - `--flood C` loops of connect with a token signed by another key (each expects `401`);
/// - `--honest H` loops of connect → welcome → close, each connection with a valid token and
///   a `sub` of its own, at `--honest-rate R` connects per second per loop (0: back to back).
///   Success is a welcome within `--timeout` (5 s) of starting to connect; anything else is a
///   failure, named by its status (`"429"`, `"503"`) or `"timeout"`, `"io:…"`, `"no welcome"`.
///   Latency is connect start → welcome received. The honest loops run on a thread and
///   runtime of their own, so their timings do not queue behind the attacking tasks'.
/// - `--honest-pace MS` (ws:// only): the honest clients are slow: each sends its request head
///   in three pieces, `MS` milliseconds apart, and succeeds on a `101` within `--timeout`.
///
/// Every connect is bounded by `--timeout`; the attack stops when the honest loops are done,
/// and at the latest `--timeout` + 2 s after the end.
async fn attack(args: &Args, key: Arc<Key>) -> Result<serde_json::Value, Error> {
    let silent = args.number("silent", 0)?;
    // Slowloris: the silent sockets drip one byte of a head every this many ms (0: never).
    let drip = Duration::from_millis(args.number("drip-ms", 0)?);
    let flood = args.number("flood", 0)?;
    let honest = args.number("honest", 10)?;
    let honest_rate = args.number("honest-rate", 10)?;
    let pace = Duration::from_millis(args.number("honest-pace", 0)?);
    if !pace.is_zero() && TLS.get().is_some() {
        return Err("--honest-pace paces a plain head: use a ws:// URL".into());
    }
    let duration = Duration::from_secs(args.number("duration", 10)?);
    let limit = Duration::from_secs(args.number("timeout", 5)?.max(1));
    let default_warmup = if silent + flood > 0 { 1000 } else { 0 };
    let warmup = Duration::from_millis(args.number("warmup-ms", default_warmup)?);
    if honest == 0 {
        return Err("--honest must be at least 1".into());
    }
    let addr = args.addr;
    let honest_start = Instant::now() + warmup;
    let honest_deadline = honest_start + duration;
    let attack_deadline = honest_deadline + limit + Duration::from_secs(2);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let counts = Arc::new(AttackCounts::default());
    let mut attackers = Vec::new();

    for _ in 0..silent {
        let (counts, mut stopped) = (counts.clone(), stopped.clone());
        attackers.push(tokio::spawn(async move {
            let mut buf = [0u8; 256];
            let end = tokio::time::Instant::from_std(attack_deadline);
            while Instant::now() < attack_deadline {
                let connected = tokio::select! {
                    _ = stopped.changed() => return Failures::new(),
                    connected = timeout(limit, TcpStream::connect(addr)) => connected,
                };
                let Ok(Ok(mut stream)) = connected else {
                    counts.silent_connect_failures.fetch_add(1, Relaxed);
                    // Out of ports or descriptors: do not spin.
                    tokio::select! {
                        _ = stopped.changed() => return Failures::new(),
                        _ = tokio::time::sleep(Duration::from_millis(10)) => continue,
                    }
                };
                counts.silent_opens.fetch_add(1, Relaxed);
                // Never write (or, with `--drip-ms`, one byte of a head that never ends each
                // time); wait for the server to let go of us, then come back.
                let mut sent = 0usize;
                loop {
                    let next_drip = async {
                        match drip.is_zero() {
                            true => std::future::pending().await,
                            false => tokio::time::sleep(drip).await,
                        }
                    };
                    tokio::select! {
                        _ = stopped.changed() => return Failures::new(),
                        _ = tokio::time::sleep_until(end) => return Failures::new(),
                        () = next_drip => {
                            use tokio::io::AsyncWriteExt;
                            let byte = DRIP.get(sent).copied().unwrap_or(b'a');
                            sent += 1;
                            if stream.write_all(&[byte]).await.is_ok() {
                                continue;
                            }
                            counts.silent_closed_by_server.fetch_add(1, Relaxed);
                            break;
                        }
                        read = stream.read(&mut buf) => {
                            if matches!(read, Ok(n) if n > 0) {
                                counts.silent_answered.fetch_add(1, Relaxed);
                            }
                            counts.silent_closed_by_server.fetch_add(1, Relaxed);
                            break;
                        }
                    }
                }
            }
            Failures::new()
        }));
    }

    let wrong = Arc::new(Key::new(b"a-key-the-server-does-not-have-0123456789")?);
    for worker in 0..flood {
        let (counts, mut stopped, wrong) = (counts.clone(), stopped.clone(), wrong.clone());
        attackers.push(tokio::spawn(async move {
            let mut other = Failures::new();
            let mut i = 0u64;
            while Instant::now() < attack_deadline {
                i += 1;
                let user = format!("f{worker}-{i}");
                let attempt = connect_within(addr, "attack", &user, &wrong, limit);
                let attempt = tokio::select! {
                    _ = stopped.changed() => break,
                    attempt = attempt => attempt,
                };
                match attempt {
                    Attempt::Refused(401) => {
                        counts.flood_rejected.fetch_add(1, Relaxed);
                    }
                    Attempt::Refused(status) => *other.entry(status.to_string()).or_default() += 1,
                    Attempt::Failed(kind) => *other.entry(kind).or_default() += 1,
                    Attempt::Open(_) => *other.entry("101 with a bad token".into()).or_default() += 1,
                }
            }
            other
        }));
    }

    // The honest clients, on their own thread and runtime.
    let (done, honest_result) = tokio::sync::oneshot::channel();
    let honest_key = key.clone();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let result = match runtime {
            Ok(runtime) => runtime.block_on(honest_loops(
                addr,
                honest_key,
                (honest, honest_rate, pace),
                honest_start,
                honest_deadline,
                limit,
            )),
            Err(e) => Err(e.to_string()),
        };
        let _ = done.send(result);
    });
    let honest_bound = warmup + duration + 2 * limit + Duration::from_secs(10);
    let honest_result = timeout(honest_bound, honest_result).await;
    let _ = stop.send(true);
    let mut flood_other = Failures::new();
    for attacker in attackers {
        if let Ok(Ok(other)) = timeout(limit + Duration::from_secs(2), attacker).await {
            merge(&mut flood_other, other);
        }
    }
    if honest_result.is_ok() {
        let _ = thread.join(); // it has already sent its result
    }
    let (attempts, ok, failures, latencies) = honest_result
        .map_err(|_| "the honest clients did not finish in time")?
        .map_err(|_| "the honest thread ended without a result")??;
    let seconds = duration.as_secs_f64();
    let attack_seconds = (warmup + duration).as_secs_f64();
    let failed = attempts - ok;
    // A dropped SYN is retried after 1 s: that many honest handshakes waited for one.
    let over_1s = latencies.iter().filter(|&&us| us >= 1_000_000).count();
    Ok(json!({
        "scenario": "attack", "seconds": seconds, "warmup_s": warmup.as_secs_f64(),
        "silent": silent, "drip_ms": drip.as_millis() as u64, "flood": flood, "honest": honest, "honest_rate": honest_rate,
        "honest_pace_ms": pace.as_millis() as u64,
        "timeout_s": limit.as_secs(),
        "attempts": attempts, "accepted": ok, "errors": failed,
        "success_pct": if attempts > 0 { 100.0 * ok as f64 / attempts as f64 } else { 0.0 },
        "failures": failures,
        "over_1s": over_1s,
        "latency": percentiles(latencies),
        "silent_opens": counts.silent_opens.load(Relaxed),
        "silent_reopens_per_s": counts.silent_opens.load(Relaxed).saturating_sub(silent) as f64 / attack_seconds,
        "silent_closed_by_server": counts.silent_closed_by_server.load(Relaxed),
        "silent_answered": counts.silent_answered.load(Relaxed),
        "silent_connect_failures": counts.silent_connect_failures.load(Relaxed),
        "flood_rejected": counts.flood_rejected.load(Relaxed),
        "flood_rejected_per_s": counts.flood_rejected.load(Relaxed) as f64 / attack_seconds,
        "flood_other": flood_other,
    }))
}

type HonestResult = Result<(u64, u64, Failures, Vec<u32>), String>;

/// `honest` loops of connect → welcome → close from `start` until `deadline`, each connection
/// with a `sub` of its own, `rate` a second per loop, its head sent at `pace` (see [`attack`]).
/// Returns attempts, successes, failures by kind, latencies (µs).
async fn honest_loops(
    addr: SocketAddr,
    key: Arc<Key>,
    (honest, rate, pace): (u64, u64, Duration),
    start: Instant,
    deadline: Instant,
    limit: Duration,
) -> HonestResult {
    let mut loops = Vec::new();
    for h in 0..honest {
        let key = key.clone();
        loops.push(tokio::spawn(async move {
            // Loops spread evenly over one period rather than all connecting at once.
            let mut ticker = (rate > 0).then(|| {
                let period = Duration::from_secs_f64(1.0 / rate as f64);
                let first = tokio::time::Instant::from_std(start) + period.mul_f64(h as f64 / honest as f64);
                let mut ticker = tokio::time::interval_at(first, period);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker
            });
            if ticker.is_none() {
                tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
            }
            let (mut attempts, mut ok) = (0u64, 0u64);
            let mut failures = Failures::new();
            let mut latencies = Vec::new();
            loop {
                if let Some(ticker) = &mut ticker {
                    ticker.tick().await;
                }
                if Instant::now() >= deadline {
                    break;
                }
                attempts += 1;
                let t0 = Instant::now();
                let user = format!("h{h}-{attempts}");
                if !pace.is_zero() {
                    match timeout(limit, upgrade_slowly(addr, &user, &key, pace)).await {
                        Ok(Ok(())) => {
                            latencies.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                            ok += 1;
                        }
                        Ok(Err(kind)) => *failures.entry(kind).or_default() += 1,
                        Err(_) => *failures.entry("timeout".to_owned()).or_default() += 1,
                    }
                    continue;
                }
                let welcomed = timeout(limit, async {
                    match connect_within(addr, "attack", &user, &key, limit).await {
                        Attempt::Open(mut ws) => match next_text(&mut ws).await {
                            Ok(text) if text.contains(r#""type":"welcome""#) => Ok(*ws),
                            Ok(_) => Err("not a welcome".to_owned()),
                            Err(_) => Err("no welcome".to_owned()),
                        },
                        Attempt::Refused(status) => Err(status.to_string()),
                        Attempt::Failed(kind) => Err(kind),
                    }
                })
                .await
                .unwrap_or_else(|_| Err("timeout".to_owned()));
                match welcomed {
                    Ok(mut ws) => {
                        latencies.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        ok += 1;
                        let _ = timeout(limit, ws.close(None)).await;
                        let _ = timeout(limit, async { while ws.next().await.is_some() {} }).await;
                    }
                    Err(kind) => *failures.entry(kind).or_default() += 1,
                }
            }
            (attempts, ok, failures, latencies)
        }));
    }
    let (mut attempts, mut ok, mut failures, mut latencies) = (0, 0, Failures::new(), Vec::new());
    for one in loops {
        let (a, o, f, l) = one.await.map_err(|e| e.to_string())?;
        attempts += a;
        ok += o;
        merge(&mut failures, f);
        latencies.extend(l);
    }
    Ok((attempts, ok, failures, latencies))
}
