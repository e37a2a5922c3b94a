//! How long a node takes to load N stored revocations, and what chat costs meanwhile
//! (PROTOCOL.md §12; BENCHMARKS.md "Loading stored revocations").
//!
//! Two steps, with the node started between them by `scripts/bench.sh`:
//!
//! ```text
//! revocation_load fill  --redis redis://127.0.0.1:6390 --count 300000 [--unsigned]
//! revocation_load probe --url ws://127.0.0.1:8080 --count 300000
//! ```
//!
//! `fill` stores N user revocations the way nodes store them (signed with `WSGATE_SECRET`;
//! `--unsigned` writes the format of wsgate before signing, for a side-by-side run of the old
//! code). `probe` connects to the node as soon as it answers, sends chat messages to itself
//! (200 a second) and times each round trip while polling `/metrics` until
//! `wsgate_revocations` reaches N, then for 3 s more; it prints the load time and the round
//! trip percentiles during and after the load, as JSON; a message that never comes back
//! counts as a 10 s round trip. Every loop is bounded: after 120 s the report says
//! `"loaded_s": null`.

use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use wsgate::jwt::{Claims, Key, unix_now};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The longest any phase may take.
const LIMIT: Duration = Duration::from_secs(120);

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn secret() -> Result<Vec<u8>, Error> {
    Ok(std::env::var("WSGATE_SECRET")
        .map_err(|_| "set WSGATE_SECRET to the node's secret")?
        .into_bytes())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let count: usize = flag(&args, "--count").unwrap_or_else(|| "300000".into()).parse()?;
    match args.get(1).map(String::as_str) {
        Some("fill") => {
            let url = flag(&args, "--redis").ok_or("fill needs --redis URL")?;
            fill(&url, count, args.iter().any(|a| a == "--unsigned")).await
        }
        Some("probe") => {
            let url = flag(&args, "--url").ok_or("probe needs --url ws://HOST:PORT")?;
            probe(&url, count).await
        }
        _ => Err("usage: revocation_load fill --redis URL --count N [--unsigned] | probe --url URL --count N".into()),
    }
}

async fn fill(url: &str, count: usize, unsigned: bool) -> Result<(), Error> {
    let mut derive = Hmac::<Sha256>::new_from_slice(&secret()?)?;
    derive.update(b"wsgate control v1");
    let control_key = derive.finalize().into_bytes();
    let mut conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    let now = unix_now();
    for start in (0..count).step_by(10_000) {
        let mut pipe = redis::pipe();
        for i in start..(start + 10_000).min(count) {
            let body = format!(r#"{{"revoke":{{"user":"u{i}"}},"at":{now}}}"#);
            let value = match unsigned {
                true => body,
                false => {
                    let mut mac = Hmac::<Sha256>::new_from_slice(&control_key)?;
                    mac.update(body.as_bytes());
                    let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
                    serde_json::json!({ "body": body, "mac": mac }).to_string()
                }
            };
            pipe.cmd("SET")
                .arg(format!("wsgate:revoked:user:u{i}"))
                .arg(value)
                .arg("EX")
                .arg(3600)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    eprintln!("stored {count} revocations");
    Ok(())
}

async fn probe(url: &str, count: usize) -> Result<(), Error> {
    let authority = url.trim_start_matches("ws://").trim_end_matches('/').to_owned();
    let key = Key::new(&secret()?)?;
    let token = key.sign(&Claims::new("probe", unix_now() + 3600));
    let started = Instant::now();
    let mut ws = loop {
        if let Ok(Ok((ws, _))) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(format!("ws://{authority}/ws/chat/probe?token={token}")),
        )
        .await
        {
            break ws;
        }
        if started.elapsed() > LIMIT {
            return Err("the node never let the probe in".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let connected_after = started.elapsed();
    let (mut during, mut after) = (Vec::new(), Vec::new());
    let mut loaded_after = None;
    let mut next_poll = Instant::now();
    for i in 0u64.. {
        if next_poll <= Instant::now() && loaded_after.is_none() {
            next_poll = Instant::now() + Duration::from_millis(50);
            if revocations(&authority).await.unwrap_or(0) >= count {
                loaded_after = Some(started.elapsed());
            }
        }
        // A message that never comes back counts as the whole wait (10 s): lost is worst.
        let sample = round_trip(&mut ws, i).await.unwrap_or(10_000_000);
        match loaded_after {
            None => during.push(sample),
            Some(at) if started.elapsed() < at + Duration::from_secs(3) => after.push(sample),
            Some(_) => break,
        }
        if started.elapsed() > LIMIT {
            break; // reported with "loaded_s": null
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = serde_json::json!({
        "count": count,
        "connected_s": connected_after.as_secs_f64(),
        "loaded_s": loaded_after.map(|d| d.as_secs_f64()),
        "during_load": percentiles(during),
        "after_load": percentiles(after),
    });
    println!("{report}");
    Ok(())
}

/// Sends message `i` and waits for it to come back; the round trip in microseconds.
async fn round_trip(
    ws: &mut tokio_tungstenite::WebSocketStream<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>,
    i: u64,
) -> Result<u64, Error> {
    let text = format!("p{i}");
    let sent = Instant::now();
    ws.send(Message::text(serde_json::json!({ "message": text }).to_string()))
        .await?;
    let wait = async {
        while let Some(frame) = ws.next().await {
            if let Message::Text(json) = frame? {
                let value: serde_json::Value = serde_json::from_str(&json)?;
                if value["type"] == "message" && value["message"] == text.as_str() {
                    return Ok::<_, Error>(());
                }
            }
        }
        Err("the node closed the probe".into())
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .map_err(|_| "a message never came back")??;
    Ok(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX))
}

/// `wsgate_revocations` from `/metrics`.
async fn revocations(authority: &str) -> Result<usize, Error> {
    let mut stream = tokio::net::TcpStream::connect(authority).await?;
    stream
        .write_all(format!("GET /metrics HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut body)).await??;
    let value = body
        .lines()
        .find_map(|line| line.strip_prefix("wsgate_revocations "))
        .ok_or("no wsgate_revocations in /metrics")?;
    Ok(value.trim().parse()?)
}

fn percentiles(mut samples: Vec<u64>) -> serde_json::Value {
    samples.sort_unstable();
    let at = |q: f64| samples.get(((samples.len() as f64 - 1.0) * q) as usize).copied();
    serde_json::json!({ "n": samples.len(), "p50_us": at(0.5), "p99_us": at(0.99), "max_us": samples.last() })
}
