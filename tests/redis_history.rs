//! PROTOCOL.md §10 across nodes: seq, epoch and history live in Redis, so a client resumes on
//! any node, across node restarts, exactly once and in order. Each test starts its own
//! `redis-server`. Run with `cargo test --features redis`.
#![cfg(feature = "redis")]

mod common;

use common::redis_server::RedisServer;
use common::*;
use serde_json::Value;
use wsgate::Config;

fn node_config(redis: &RedisServer) -> Config {
    config().with(|c| {
        c.redis_url = Some(redis.url());
        c.rate_limit = 1_000_000;
        c.rate_burst = 1_000_000;
    })
}

/// Joins `room` as `user`, resuming after `since` if given; returns the client and welcome.
async fn connect(server: &TestServer, room: &str, user: &str, since: Option<&str>) -> (Client, Value) {
    let since = since.map(|s| format!("&since={s}")).unwrap_or_default();
    let path = format!("/ws/chat/{room}?token={}{since}", token(user));
    let (mut client, _) = server.connect(&path, &[]).await.unwrap();
    let welcome = next_json(&mut client).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (client, welcome)
}

fn position(welcome: &Value) -> String {
    format!("{}:{}", welcome["epoch"].as_str().unwrap(), welcome["seq"])
}

fn seq(message: &Value) -> u64 {
    message["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {message}"))
}

/// Reads `n` messages and returns them.
async fn read(client: &mut Client, n: u64) -> Vec<Value> {
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(next_json(client).await);
    }
    got
}

#[tokio::test]
async fn a_client_resumes_on_either_node_and_after_a_node_restarts() {
    let redis = RedisServer::start();
    let mut a = TestServer::start(node_config(&redis)).await;
    let b = TestServer::start(node_config(&redis)).await;
    let (mut bob, _) = connect(&b, "shared", "bob", None).await;
    let (alice, welcome) = connect(&a, "shared", "alice", None).await;
    let at = position(&welcome);
    let seen = welcome["seq"].as_u64().unwrap();
    assert_eq!(next_json(&mut bob).await["username"], "alice");
    drop(alice);
    assert_eq!(next_json(&mut bob).await["type"], "leave");
    for i in 0..5 {
        send(&mut bob, &format!(r#"{{"message":"m{i}"}}"#)).await;
    }
    let last_chat = seq(&read(&mut bob, 5).await[4]);

    // On B, on A, and on A restarted: the same messages, with the same seqs.
    let mut replays = Vec::new();
    for round in 0..3 {
        if round == 2 {
            a.shutdown().await;
            a = TestServer::start(node_config(&redis)).await;
        }
        let node = if round == 0 { &b } else { &a };
        let (mut alice, welcome) = connect(node, "shared", "alice", Some(&at)).await;
        assert_eq!(welcome["recovered"], true, "round {round}");
        assert_eq!(welcome["epoch"].as_str(), at.split_once(':').map(|(e, _)| e));
        let last = welcome["seq"].as_u64().unwrap();
        let got = read(&mut alice, last - seen).await;
        assert_eq!(
            got.iter().map(seq).collect::<Vec<_>>(),
            (seen + 1..=last).collect::<Vec<_>>()
        );
        // The leave, the five messages (then what earlier rounds added), then this
        // connection's own join (the last seq).
        let chats: Vec<&str> = got.iter().filter_map(|m| m["message"].as_str()).collect();
        assert!(chats.starts_with(&["m0", "m1", "m2", "m3", "m4"]), "{chats:?}");
        assert_eq!(got.last().unwrap()["type"], "join");
        replays.push(got[..(last_chat - seen) as usize].to_vec());
        send(&mut bob, r#"{"message":"live"}"#).await;
        loop {
            let next = next_json(&mut alice).await;
            if next["message"] == "live" {
                break;
            }
        }
    }
    assert!(replays.windows(2).all(|w| w[0] == w[1]), "{replays:?}");
}

#[tokio::test]
async fn after_redis_loses_its_data_nothing_resumes_and_nothing_repeats() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let a = TestServer::start(node_config(&redis)).await;
    let (mut alice, welcome) = connect(&a, "fragile", "alice", None).await;
    let at = position(&welcome);
    send(&mut alice, r#"{"message":"before"}"#).await;
    assert_eq!(next_json(&mut alice).await["message"], "before");

    redis.kill();
    loop {
        if next_json(&mut alice).await["type"] == "lagged" {
            break;
        }
    }
    let redis = RedisServer::start_on(port);
    redis.await_subscribers("fragile", 1).await;
    // The node says it is back (it reloads revocations after subscribing).
    let mut up = 0.0;
    for _ in 0..200 {
        up = a.metric("wsgate_redis_up").await;
        if up == 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(up, 1.0);
    let (mut carol, welcome) = connect(&a, "fragile", "carol", Some(&at)).await;
    assert_eq!(welcome["recovered"], false);
    assert_ne!(
        position(&welcome).split_once(':').unwrap().0,
        at.split_once(':').unwrap().0
    );
    // A new epoch starts at 1; "before" is not sent again to anyone.
    send(&mut carol, r#"{"message":"after"}"#).await;
    for client in [&mut alice, &mut carol] {
        loop {
            let got = next_json(client).await;
            assert_ne!(got["message"], "before", "{got}");
            if got["message"] == "after" {
                break;
            }
        }
    }
}

#[tokio::test]
async fn resuming_across_nodes_under_a_full_rate_publisher_is_exact() {
    const TOTAL: usize = 2000;
    let redis = RedisServer::start();
    let a = TestServer::start(node_config(&redis).with(|c| c.history = 1 << 16)).await;
    let b = TestServer::start(node_config(&redis).with(|c| c.history = 1 << 16)).await;
    let (alice, welcome) = connect(&a, "busy", "alice", None).await;
    let mut last = welcome["seq"].as_u64().unwrap();
    let first = last + 1;
    let epoch = welcome["epoch"].as_str().unwrap().to_owned();
    let (publisher, _) = connect(&b, "busy", "bob", None).await;
    let publish = publish_in_background(publisher, TOTAL);

    // Alice drops and resumes, alternating nodes, while Bob publishes.
    let (mut client, mut seqs, mut done) = (Some(alice), Vec::new(), false);
    for round in 0..6 {
        let mut current = match client.take() {
            Some(current) => current,
            None => {
                let node = if round % 2 == 0 { &a } else { &b };
                let (current, welcome) = connect(node, "busy", "alice", Some(&format!("{epoch}:{last}"))).await;
                assert_eq!(welcome["recovered"], true, "round {round}");
                current
            }
        };
        loop {
            let message = next_json(&mut current).await;
            if message["type"] == "lagged" {
                panic!("lagged in round {round}: {message}");
            }
            last = seq(&message);
            seqs.push(last);
            if message["message"] == format!("{}", TOTAL - 1) {
                done = true;
                break;
            }
            if round < 5 && seqs.len() >= (round + 1) * TOTAL / 6 {
                break;
            }
        }
        if done {
            break;
        }
    }
    assert!(done, "the last message never arrived");
    // Every seq from the first after alice's welcome to the end, once, in order (joins and
    // leaves of her own reconnections included).
    assert_eq!(seqs, (first..=last).collect::<Vec<_>>());
    let _publisher = within(publish).await.unwrap();
}

/// With Redis the ring is only the room buffer: a member that falls behind it is served from
/// Redis history, and told `lagged` only for what history no longer has.
#[tokio::test]
async fn a_stalled_member_is_served_from_redis_history() {
    let redis = RedisServer::start();
    for (history, expect_lagged) in [(400, false), (20, true)] {
        let server = TestServer::start(node_config(&redis).with(|c| {
            c.room_buffer = 8;
            c.history = history;
        }))
        .await;
        assert_eq!(
            stall_then_read_everything(&server, 30_000).await,
            expect_lagged,
            "history {history}"
        );
        let _: () = redis.query(&redis::cmd("FLUSHALL")).await;
    }
}

/// Redis lost a room's keys while a member was connected (expiry, eviction, a flush): the
/// seqs start over, and the member is told so with `lagged` and gets every new message,
/// instead of skipping them as if it had seen their seqs already.
#[tokio::test]
async fn an_epoch_that_changes_under_a_member_is_announced_not_hidden() {
    let redis = RedisServer::start();
    let server = TestServer::start(node_config(&redis)).await;
    let (mut bob, _) = connect(&server, "wiped", "bob", None).await;
    for i in 0..30 {
        send(&mut bob, &format!(r#"{{"message":"old {i}"}}"#)).await;
    }
    read(&mut bob, 30).await;
    let (mut alice, welcome) = connect(&server, "wiped", "alice", None).await;
    assert!(welcome["seq"].as_u64().unwrap() >= 31);
    assert_eq!(next_json(&mut bob).await["type"], "join");
    let _: () = redis
        .query(redis::cmd("DEL").arg("wsgate:seq:wiped").arg("wsgate:history:wiped"))
        .await;
    for i in 0..5 {
        send(&mut bob, &format!(r#"{{"message":"new {i}"}}"#)).await;
    }
    let got = read(&mut alice, 6).await;
    assert_eq!(got[0], serde_json::json!({"type":"lagged","missed":null}));
    let texts: Vec<&str> = got[1..].iter().map(|m| m["message"].as_str().unwrap()).collect();
    assert_eq!(texts, ["new 0", "new 1", "new 2", "new 3", "new 4"]);
    assert_eq!(seq(&got[1]), 1);
}

/// A room's history in Redis is bounded in bytes (the node's per-room budget), not only in
/// count, and a resume that would need more than fits is not recovered.
#[tokio::test]
async fn history_in_redis_is_bounded_in_bytes() {
    let redis = RedisServer::start();
    let server = TestServer::start(node_config(&redis).with(|c| c.max_queued_bytes = 1 << 20)).await;
    let (mut bob, welcome) = connect(&server, "heavy", "bob", None).await;
    let at = position(&welcome);
    let big = format!(r#"{{"message":"{}"}}"#, "x".repeat(30_000));
    for _ in 0..20 {
        send(&mut bob, &big).await;
        next_json(&mut bob).await;
    }
    let bytes: u64 = redis
        .query(redis::cmd("HGET").arg("wsgate:seq:heavy").arg("bytes"))
        .await;
    let len: u64 = redis.query(redis::cmd("LLEN").arg("wsgate:history:heavy")).await;
    assert!(bytes <= 128 * 1024, "{bytes} bytes of history");
    assert!((3..20).contains(&len), "{len} frames of history");
    let (_, welcome) = connect(&server, "heavy", "alice", Some(&at)).await;
    assert_eq!(welcome["recovered"], false);
}

#[tokio::test]
async fn resumes_from_redis_history_replay_at_most_the_users_budget() {
    let redis = RedisServer::start();
    let a = TestServer::start(node_config(&redis).with(|c| c.max_replay_bytes_per_user = 1 << 20)).await;
    let (mut bob, _) = connect(&a, "lobby", "bob", None).await;
    let (alice, welcome) = connect(&a, "lobby", "alice", None).await;
    let at = position(&welcome);
    assert_eq!(next_json(&mut bob).await["type"], "join");
    drop(alice);
    assert_eq!(next_json(&mut bob).await["type"], "leave");
    // 15 messages of 60 KB: 900 KB, so one replay fits in 1 MiB and a second at once does not.
    let text = "x".repeat(60_000);
    for _ in 0..15 {
        send(&mut bob, &format!(r#"{{"message":"{text}"}}"#)).await;
    }
    read(&mut bob, 15).await;

    let (mut first, welcome) = connect(&a, "lobby", "alice", Some(&at)).await;
    assert_eq!(welcome["recovered"], true, "{welcome}");
    let missed = read(&mut first, 16).await;
    assert_eq!(missed.last().unwrap()["message"].as_str().map(str::len), Some(60_000));
    let (_carol, welcome) = connect(&a, "lobby", "carol", Some(&at)).await;
    assert_eq!(
        welcome["recovered"], true,
        "another user has a budget of its own: {welcome}"
    );
    let (mut second, welcome) = connect(&a, "lobby", "alice", Some(&at)).await;
    assert_eq!(welcome["recovered"], false, "{welcome}");
    send(&mut bob, r#"{"message":"live"}"#).await;
    let next = next_json(&mut second).await;
    assert_eq!(next["message"], "live", "a refused resume got history: {next}");
}
