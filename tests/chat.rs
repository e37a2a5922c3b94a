//! PROTOCOL.md §5 over real sockets: messages, events, errors, limits, lag, expiry, keep-alive and
//! shutdown.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use wsgate::jwt::{Claims, Validation, unix_now};

#[tokio::test]
async fn broadcast_reaches_every_member_including_the_sender_in_order() {
    let server = TestServer::start(config()).await;
    let mut alice = server.join("lobby", "alice").await;
    let mut bob = server.join("lobby", "bob").await;
    let mut other_room = server.join("elsewhere", "carol").await;
    // Alice's join was the room's seq 1 (nobody heard it), Bob's is 2 (PROTOCOL.md §10).
    assert_eq!(
        next_json(&mut alice).await,
        serde_json::json!({"type":"join","room":"lobby","username":"bob","seq":2})
    );

    for i in 0..20 {
        send(&mut alice, &format!(r#"{{"message":"a{i}"}}"#)).await;
    }
    for client in [&mut alice, &mut bob] {
        for i in 0..20 {
            let got = next_json(client).await;
            assert_eq!(
                got,
                serde_json::json!({"type":"message","room":"lobby","username":"alice","message":format!("a{i}"),"seq":3 + i})
            );
        }
    }
    // Nothing leaked into the other room: its next message is its own.
    send(&mut other_room, r#"{"message":"mine"}"#).await;
    assert_eq!(next_json(&mut other_room).await["message"], "mine");
    assert_eq!(server.metric("wsgate_messages_received_total").await, 21.0);
    // 20 to each of two members, bob's join to alice, carol's own message.
    assert_eq!(server.metric("wsgate_messages_delivered_total").await, 42.0);
}

#[tokio::test]
async fn the_username_comes_from_the_credential_only() {
    let server = TestServer::start(config()).await;
    let mut alice = server.join("lobby", "alice").await;
    send(&mut alice, r#"{"message":"hi","username":"admin","room":"other"}"#).await;
    let got = next_json(&mut alice).await;
    assert_eq!(
        got,
        serde_json::json!({"type":"message","room":"lobby","username":"alice","message":"hi","seq":2})
    );
    // A `type` is a request, never a way to forge a server frame (PROTOCOL.md §9).
    send(&mut alice, r#"{"type":"welcome","message":"hi","username":"admin"}"#).await;
    let got = next_json(&mut alice).await;
    assert_eq!(got, serde_json::json!({"type":"error","error":"unknown type"}));
}

#[tokio::test]
async fn bad_json_gets_an_error_and_the_connection_stays() {
    let server = TestServer::start(config()).await;
    let mut alice = server.join("lobby", "alice").await;
    send(&mut alice, "not json").await;
    assert_eq!(
        next_json(&mut alice).await,
        serde_json::json!({"type":"error","error":"invalid JSON"})
    );
    for wrong in [r#"{"message":5}"#, r#"{"text":"hi"}"#, r#"["hi"]"#, "null"] {
        send(&mut alice, wrong).await;
        let got = next_json(&mut alice).await;
        assert_eq!(got["type"], "error", "{wrong}");
    }
    send(&mut alice, r#"{"message":"still open"}"#).await;
    assert_eq!(next_json(&mut alice).await["message"], "still open");
}

#[tokio::test]
async fn join_and_leave_events_go_to_the_others() {
    let server = TestServer::start(config()).await;
    let mut alice = server.join("lobby", "alice").await;
    let mut bob = server.join("lobby", "bob").await;
    assert_eq!(
        next_json(&mut alice).await,
        serde_json::json!({"type":"join","room":"lobby","username":"bob","seq":2})
    );
    within(bob.close(None)).await.unwrap();
    assert_eq!(
        next_json(&mut alice).await,
        serde_json::json!({"type":"leave","room":"lobby","username":"bob","seq":3})
    );
    // Alice never saw her own join.
    send(&mut alice, r#"{"message":"x"}"#).await;
    assert_eq!(next_json(&mut alice).await["type"], "message");
}

#[tokio::test]
async fn binary_frames_close_with_1003() {
    let server = TestServer::start(config()).await;
    let mut alice = server.join("lobby", "alice").await;
    within(alice.send(Message::binary(vec![1, 2, 3]))).await.unwrap();
    assert_eq!(u16::from(close_frame(&mut alice).await.code), 1003);
}

#[tokio::test]
async fn oversized_messages_close_with_1009() {
    let server = TestServer::start(config().with(|c| c.max_message_size = 1024)).await;
    let mut alice = server.join("lobby", "alice").await;
    let just_fits = format!(r#"{{"message":"{}"}}"#, "x".repeat(1024 - 14));
    assert_eq!(just_fits.len(), 1024);
    send(&mut alice, &just_fits).await;
    assert_eq!(next_json(&mut alice).await["type"], "message");
    send(&mut alice, &format!(r#"{{"message":"{}"}}"#, "x".repeat(100_000))).await;
    assert_eq!(u16::from(close_frame(&mut alice).await.code), 1009);
}

#[tokio::test]
async fn the_rate_limit_drops_excess_and_says_so() {
    let server = TestServer::start(config().with(|c| {
        c.rate_limit = 1;
        c.rate_burst = 3;
    }))
    .await;
    let mut alice = server.join("lobby", "alice").await;
    for i in 0..6 {
        send(&mut alice, &format!(r#"{{"message":"m{i}"}}"#)).await;
    }
    let mut messages = Vec::new();
    let mut limited = 0;
    for _ in 0..6 {
        let got = next_json(&mut alice).await;
        match got["type"].as_str() {
            Some("message") => messages.push(got["message"].as_str().unwrap().to_owned()),
            Some("error") if got["error"] == "rate limited" => limited += 1,
            _ => panic!("unexpected {got}"),
        }
    }
    // The burst passes (one more token may have refilled in the meantime), the rest is refused.
    assert!(messages.len() == 3 || messages.len() == 4, "{messages:?}");
    assert_eq!(messages[..3], ["m0", "m1", "m2"]);
    assert_eq!(messages.len() + limited, 6);
}

#[tokio::test]
async fn an_expiring_token_closes_the_connection_with_4401() {
    let config = config().with(|c| {
        c.validation = Validation {
            leeway: 0,
            ..Validation::default()
        }
    });
    let server = TestServer::start(config).await;
    let t = key().sign(&Claims::new("alice", unix_now() + 2));
    let (mut alice, _) = server.connect(&format!("/ws/chat/lobby?token={t}"), &[]).await.unwrap();
    assert_eq!(next_json(&mut alice).await["type"], "welcome");
    let frame = close_frame(&mut alice).await;
    assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4401, "token expired"));
}

#[tokio::test]
async fn idle_clients_are_pinged_then_closed_and_live_ones_stay() {
    let config = config().with(|c| {
        c.ping_interval = Duration::from_millis(300);
        c.idle_timeout = Duration::from_millis(900);
    });
    let server = TestServer::start(config).await;

    // A client that reads (and so answers pings) outlives the idle timeout.
    let mut live = server.join("lobby", "live").await;
    let mut pings = 0;
    while pings < 4 {
        match within(live.next()).await {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("expected pings, got {other:?}"),
        }
    }
    send(&mut live, r#"{"message":"alive"}"#).await;
    assert_eq!(next_json(&mut live).await["message"], "alive");

    // A raw client that never answers gets a ping, then a close 1001.
    let mut silent = within(TcpStream::connect(server.addr)).await.unwrap();
    let request = upgrade_request(server.addr, &format!("/ws/chat/lobby?token={}", token("silent")), "");
    within(silent.write_all(request.as_bytes())).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let close = loop {
        let n = within(silent.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed without a close frame");
        seen.extend_from_slice(&buf[..n]);
        // Server frames are unmasked; a close frame is 0x88, length, then the code.
        if let Some(at) = seen.windows(2).position(|w| w[0] == 0x88 && w[1] >= 2 && w[1] < 126)
            && seen.len() >= at + 4
        {
            break u16::from_be_bytes([seen[at + 2], seen[at + 3]]);
        }
    };
    assert_eq!(close, 1001);
    assert!(
        seen.windows(2).any(|w| w == [0x89, 0x00]),
        "no ping was sent before closing"
    );
}

#[tokio::test]
async fn a_slow_member_lags_without_holding_the_room_back() {
    let config = config().with(|c| {
        c.rate_limit = 100_000;
        c.rate_burst = 100_000;
        c.room_buffer = 16;
    });
    let server = TestServer::start(config).await;
    let mut slow = server.join("flood", "slow").await;
    let mut fast = server.join("flood", "fast").await;
    let mut sender = server.join("flood", "sender").await;
    let _ = next_json(&mut slow).await; // fast joined
    let _ = next_json(&mut slow).await; // sender joined
    let _ = next_json(&mut fast).await; // sender joined

    // Large messages so the slow member's socket buffers fill quickly while it reads nothing.
    // The sender moves in lockstep with the members that do read (two messages, then both
    // read them), so they never fall behind the room buffer however loaded the machine is,
    // while the slow member falls behind by megabytes.
    let filler = "x".repeat(32 * 1024);
    let total = 600;
    for batch in (0..total).step_by(2) {
        for i in batch..batch + 2 {
            send(&mut sender, &format!(r#"{{"message":"{i}|{filler}"}}"#)).await;
        }
        for member in [&mut fast, &mut sender] {
            for i in batch..batch + 2 {
                let got = next_json(member).await;
                let text = got["message"]
                    .as_str()
                    .unwrap_or_else(|| panic!("expected message {i}, got {got}"));
                assert_eq!(
                    &text[..text.find('|').unwrap()],
                    i.to_string(),
                    "a reading member missed or reordered"
                );
            }
        }
    }

    // Now the slow member reads: some messages in order, a lagged notice with the exact count
    // it missed, then the rest in order; nothing disappears without being counted.
    let mut received = 0u64;
    let mut missed = 0u64;
    let mut last = -1i64;
    while received + missed < total as u64 {
        let got = next_json(&mut slow).await;
        match got["type"].as_str() {
            Some("message") => {
                let text = got["message"].as_str().unwrap();
                let i: i64 = text[..text.find('|').unwrap()].parse().unwrap();
                assert!(i > last, "out of order: {i} after {last}");
                last = i;
                received += 1;
            }
            Some("lagged") => missed += got["missed"].as_u64().unwrap(),
            _ => panic!("unexpected {got}"),
        }
    }
    assert!(
        missed > 0,
        "the slow member never lagged; the test did not exercise anything"
    );
    assert_eq!(last, total as i64 - 1);
    assert_eq!(server.metric("wsgate_messages_lagged_total").await, missed as f64);
    // Still connected.
    send(&mut slow, r#"{"message":"back"}"#).await;
    loop {
        let got = next_json(&mut slow).await;
        if got["message"] == "back" {
            break;
        }
    }
}

#[tokio::test]
async fn shutdown_closes_everyone_with_1001_and_stops_in_time() {
    let mut server = TestServer::start(config()).await;
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(server.join("lobby", &format!("u{i}")).await);
    }
    let started = std::time::Instant::now();
    server.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    for client in &mut clients {
        let frame = close_frame(client).await;
        assert_eq!(u16::from(frame.code), 1001);
    }
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn rooms_are_freed_when_everyone_leaves() {
    let server = TestServer::start(config()).await;
    for round in 0..3 {
        let mut members = Vec::new();
        for i in 0..4 {
            members.push(server.join(&format!("room{i}"), &format!("u{round}-{i}")).await);
        }
        assert_eq!(server.metric("wsgate_rooms_active").await, 4.0);
        assert_eq!(server.metric("wsgate_connections_active").await, 4.0);
        for mut member in members {
            within(member.close(None)).await.unwrap();
            while within(member.next()).await.is_some() {}
        }
        // The server notices each close in its own task; wait for it, boundedly.
        let mut rooms = -1.0;
        for _ in 0..200 {
            rooms = server.metric("wsgate_rooms_active").await;
            if rooms == 0.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(rooms, 0.0, "rooms leaked in round {round}");
    }
}
