//! What a node promises while Redis is killed, restarted empty, flushed, stalled, cut off or
//! out of memory (PROTOCOL.md §12). Each fault is injected on a real `redis-server` the test
//! owns; what reaches whom, what the admin API answers and which connections close are
//! asserted. Run with `cargo test --features redis`.
#![cfg(feature = "redis")]

mod common;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::redis_server::{RedisServer, signed, signed_with};
use common::*;
use wsgate::Config;
use wsgate::auth::{Identity, JwtAuthenticator};
use wsgate::cluster::RedisSessionStore;
use wsgate::config::AdminKey;
use wsgate::jwt::{Claims, Validation, Verifier, unix_now};

const ADMIN_KEY: &str = "admin-key-for-tests-0123456789abcdef";

/// PROTOCOL.md §12's bound on relinking, plus room for a loaded CI machine.
const RELINK: Duration = Duration::from_secs(6);

fn node(redis: &RedisServer) -> Config {
    config().with(|c| {
        c.redis_url = Some(redis.url());
        c.redis_timeout = Duration::from_millis(300);
        c.admin_addr = Some("127.0.0.1:0".parse().unwrap());
        c.admin_key = AdminKey::new(ADMIN_KEY.as_bytes());
    })
}

/// `POST /admin/revoke` with `body`: (status, JSON answer).
async fn revoke(server: &TestServer, body: &str) -> (u16, serde_json::Value) {
    let response = admin_request(server.admin.unwrap(), "POST", "/admin/revoke", Some(ADMIN_KEY), body).await;
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let json = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(json).unwrap_or_default())
}

/// A token for `sub` issued a few seconds ago (before any revocation the test makes).
fn issued_token(sub: &str) -> String {
    let mut claims = Claims::new(sub, unix_now() + 600);
    claims.iat = Some(unix_now() - 5);
    key().sign(&claims)
}

async fn connect_as(server: &TestServer, token: &str) -> Client {
    let (mut client, _) = server
        .connect(&format!("/ws/chat/lobby?token={token}"), &[])
        .await
        .unwrap();
    assert_eq!(next_json(&mut client).await["type"], "welcome");
    client
}

async fn assert_revoked(client: &mut Client) {
    let frame = close_frame(client).await;
    assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4401, "revoked"));
}

/// Sends a message and reads until it comes back; returns its seq (`None`: sent without one).
async fn round_trip(client: &mut Client, text: &str) -> Option<u64> {
    send(client, &serde_json::json!({ "message": text }).to_string()).await;
    loop {
        let got = next_json(client).await;
        if got["type"] == "message" && got["message"] == text {
            return got["seq"].as_u64();
        }
    }
}

#[tokio::test]
async fn a_revocation_made_while_redis_is_down_waits_and_reaches_every_node_when_it_is_back() {
    let mut redis = RedisServer::start();
    let a = TestServer::start(node(&redis)).await;
    let b = TestServer::start(node(&redis)).await;
    redis.await_control_subscribers(2).await;
    let token = issued_token("carl");
    let mut on_a = connect_as(&a, &token).await;
    let mut on_b = connect_as(&b, &token).await;

    // Redis up: stored before the answer.
    let (status, answer) = revoke(&a, r#"{"user":"nobody"}"#).await;
    assert_eq!(
        (status, answer),
        (200, serde_json::json!({"closed":0,"cluster":"stored"}))
    );

    redis.kill();
    await_metric(&a, "wsgate_redis_up", |up| up == 0.0).await;
    let (status, answer) = revoke(&a, r#"{"user":"carl"}"#).await;
    assert_eq!(
        (status, answer),
        (202, serde_json::json!({"closed":1,"cluster":"pending"}))
    );
    assert_revoked(&mut on_a).await;
    assert_eq!(a.metric("wsgate_control_pending").await, 1.0);

    // Back, and empty: the waiting revocation is stored and published first thing.
    let back = Instant::now();
    redis.restart_empty();
    assert_revoked(&mut on_b).await;
    assert!(
        back.elapsed() < RELINK,
        "closed on B {:?} after Redis came back",
        back.elapsed()
    );
    await_metric(&a, "wsgate_control_pending", |n| n == 0.0).await;
    redis
        .await_keys("wsgate:revoked:user:carl", |keys| keys.len() == 1)
        .await;
    for server in [&a, &b] {
        let refused = refused(server.connect(&format!("/ws/chat/lobby?token={token}"), &[]).await);
        assert_eq!(refused.status(), 401);
    }
}

#[tokio::test]
async fn redis_killed_and_restarted_with_its_data_keeps_what_it_had_and_gets_what_was_made_meanwhile() {
    let dir = std::env::temp_dir().join(format!("wsgate-aof-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let persistent = [
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        dir.to_str().unwrap(),
    ];
    let mut redis = RedisServer::start_with(RedisServer::free_port(), &persistent);
    let a = TestServer::start(node(&redis)).await;
    redis.await_control_subscribers(1).await;
    assert_eq!(revoke(&a, r#"{"user":"before"}"#).await.0, 200);

    redis.kill(); // SIGKILL
    await_metric(&a, "wsgate_redis_up", |up| up == 0.0).await;
    assert_eq!(revoke(&a, r#"{"user":"meanwhile"}"#).await.0, 202);
    let port = redis.port;
    drop(redis); // already reaped: dropping it signals nothing
    let redis = RedisServer::start_with(port, &persistent);
    let keys = redis.await_keys("wsgate:revoked:*", |keys| keys.len() == 2).await;
    assert!(keys.contains(&"wsgate:revoked:user:before".to_owned()), "{keys:?}");
    await_metric(&a, "wsgate_control_pending", |n| n == 0.0).await;
    let c = TestServer::start(node(&redis)).await;
    redis.await_control_subscribers(2).await;
    await_metric(&c, "wsgate_revocations", |n| n >= 2.0).await;
    for user in ["before", "meanwhile"] {
        let token = issued_token(user);
        assert_eq!(
            refused(c.connect(&format!("/ws/chat/lobby?token={token}"), &[]).await).status(),
            401
        );
    }
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn redis_restarted_empty_or_flushed_gets_every_revocation_again() {
    let mut redis = RedisServer::start();
    let a = TestServer::start(node(&redis)).await;
    redis.await_control_subscribers(1).await;
    let token = issued_token("dora");
    assert_eq!(revoke(&a, r#"{"user":"dora"}"#).await.0, 200);

    redis.restart_empty();
    let back = Instant::now();
    redis
        .await_keys("wsgate:revoked:user:dora", |keys| keys.len() == 1)
        .await;
    assert!(back.elapsed() < Duration::from_secs(10), "{:?}", back.elapsed());

    let _: () = redis.query(&redis::cmd("FLUSHALL")).await;
    let flushed = Instant::now();
    redis
        .await_keys("wsgate:revoked:user:dora", |keys| keys.len() == 1)
        .await;
    assert!(flushed.elapsed() < Duration::from_secs(10), "{:?}", flushed.elapsed());
    // What was stored again is signed and keeps its TTL.
    let ttl: i64 = redis.query(redis::cmd("TTL").arg("wsgate:revoked:user:dora")).await;
    assert!(ttl > 80_000, "{ttl}");

    // A node that starts now enforces it.
    let c = TestServer::start(node(&redis)).await;
    redis.await_control_subscribers(2).await;
    await_metric(&c, "wsgate_revocations", |n| n >= 1.0).await;
    assert_eq!(
        refused(c.connect(&format!("/ws/chat/lobby?token={token}"), &[]).await).status(),
        401
    );
}

#[tokio::test]
async fn a_node_whose_link_is_killed_relinks_reloads_and_closes_what_it_missed() {
    let redis = RedisServer::start();
    let a = TestServer::start(node(&redis)).await;
    redis.await_control_subscribers(1).await;
    let mut eve = connect_as(&a, &issued_token("eve")).await;
    let mut other = a.join("lobby", "olga").await;
    assert!(round_trip(&mut other, "before").await.is_some());

    // Stored while this node was not listening: it never heard the publish.
    let stored = signed(&format!(r#"{{"revoke":{{"user":"eve"}},"at":{}}}"#, unix_now()));
    let _: () = redis
        .query(
            redis::cmd("SET")
                .arg("wsgate:revoked:user:eve")
                .arg(stored)
                .arg("EX")
                .arg(600),
        )
        .await;
    let relinks = a.metric("wsgate_redis_reconnects_total").await;
    let _: () = redis
        .query(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"))
        .await;
    let killed = Instant::now();
    assert_revoked(&mut eve).await;
    assert!(killed.elapsed() < RELINK, "{:?}", killed.elapsed());
    assert!(a.metric("wsgate_redis_reconnects_total").await > relinks);
    // Rooms work through Redis again: messages carry their seq.
    let seq = within(async {
        loop {
            if let Some(seq) = round_trip(&mut other, "after").await {
                return seq;
            }
        }
    })
    .await;
    assert!(seq > 1);
}

#[tokio::test]
async fn a_stalled_redis_costs_session_handshakes_a_503_within_the_deadline_and_tokens_nothing() {
    let redis = RedisServer::start();
    let identity = serde_json::to_string(&Identity::new("sam")).unwrap();
    let _: () = redis
        .query(redis::cmd("SET").arg("app:session:s-1").arg(identity))
        .await;
    let sessions = RedisSessionStore::new(&redis.url(), "app:session:")
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    let verifier = Verifier::new(vec![key()], Validation::default()).unwrap();
    let config = node(&redis).with(|c| {
        c.max_pending = 32;
        c.max_deciding = 4;
    });
    let server = TestServer::start_with(config, JwtAuthenticator::with_sessions(verifier, sessions)).await;
    redis.await_control_subscribers(1).await;
    let origin = format!("http://{}", server.addr);
    let session_head = upgrade_request(
        server.addr,
        "/ws/chat/lobby",
        &format!("Cookie: sessionid=s-1\r\nOrigin: {origin}\r\n"),
    );

    redis.pause();
    // One session handshake: a 503 with Retry-After, within the deadline (plus slack).
    let started = Instant::now();
    let answer = server.raw(session_head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("Retry-After: 1"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

    // Waves of them, each more than the whole pending budget, with token handshakes made
    // while each wave is being decided: every token handshake gets in, every session
    // handshake is answered 503 (or, evicted unread, not at all). Without places of their
    // own, the lookups would hold every pending place and the tokens would get 503 too.
    for wave in 0..5 {
        let mut flood = Vec::new();
        for _ in 0..40 {
            let mut stream = within(tokio::net::TcpStream::connect(server.addr)).await.unwrap();
            within(stream.write_all(session_head.as_bytes())).await.unwrap();
            flood.push(stream);
        }
        for i in 0..4 {
            let mut client = connect_as(&server, &token(&format!("t{wave}-{i}"))).await;
            let _ = client.close(None).await;
        }
        for mut stream in flood {
            let mut answer = Vec::new();
            let _ = within(stream.read_to_end(&mut answer)).await;
            assert!(
                answer.is_empty() || answer.starts_with(b"HTTP/1.1 503 "),
                "{}",
                String::from_utf8_lossy(&answer)
            );
        }
    }

    // Redis answers again: relinked within the bound, sessions work, rooms carry seqs.
    await_metric(&server, "wsgate_redis_up", |up| up == 0.0).await;
    redis.resume();
    let resumed = Instant::now();
    await_metric(&server, "wsgate_redis_up", |up| up == 1.0).await;
    assert!(resumed.elapsed() < RELINK, "{:?}", resumed.elapsed());
    assert!(server.raw(session_head.as_bytes()).await.starts_with("HTTP/1.1 101 "));
    let mut member = server.join("after-stall", "tom").await;
    assert!(
        within(async {
            loop {
                if round_trip(&mut member, "hello").await.is_some() {
                    return true;
                }
            }
        })
        .await
    );
}

#[tokio::test]
async fn a_replayed_older_revocation_undoes_nothing_and_is_not_stored_over_the_newer_one() {
    let redis = RedisServer::start();
    let a = TestServer::start(node(&redis)).await;
    redis.await_control_subscribers(1).await;
    let now = unix_now();
    let older = signed(&format!(r#"{{"revoke":{{"user":"vic"}},"at":{}}}"#, now - 100));
    let newer = signed(&format!(r#"{{"revoke":{{"user":"vic"}},"at":{now}}}"#));
    // A token issued between the two: the newer revocation covers it.
    let mut claims = Claims::new("vic", now + 600);
    claims.iat = Some(now - 50);
    let between = key().sign(&claims);
    redis.publish_control(&older).await;
    redis.publish_control(&newer).await;
    redis
        .await_keys("wsgate:revoked:user:vic", |keys| keys.len() == 1)
        .await;
    let stored = || async {
        redis
            .query::<String>(redis::cmd("GET").arg("wsgate:revoked:user:vic"))
            .await
    };
    within(async {
        while stored().await != newer {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // The older one again (a replay): the token stays refused, the newer one stays stored.
    redis.publish_control(&older).await;
    let marker = signed(r#"{"publish":{"room":"lobby","message":"after the replay"}}"#);
    let mut member = a.join("lobby", "wes").await;
    redis.publish_control(&marker).await;
    loop {
        if next_json(&mut member).await["type"] == "notice" {
            break;
        }
    }
    assert_eq!(
        refused(a.connect(&format!("/ws/chat/lobby?token={between}"), &[]).await).status(),
        401
    );
    assert_eq!(stored().await, newer);
    assert_eq!(a.metric("wsgate_control_pending").await, 0.0);
}

#[tokio::test]
async fn a_jti_that_never_expires_is_stored_and_jams_nothing() {
    let redis = RedisServer::start();
    let a = TestServer::start(node(&redis)).await;
    redis.await_control_subscribers(1).await;
    let (status, answer) = revoke(&a, &format!(r#"{{"jti":"forever","exp":{}}}"#, i64::MAX)).await;
    assert_eq!((status, answer["cluster"].as_str()), (200, Some("stored")));
    let (status, _) = revoke(&a, r#"{"user":"next"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(a.metric("wsgate_control_pending").await, 0.0);
}

#[tokio::test]
async fn thousands_of_waiting_revocations_are_stored_within_seconds_of_redis_answering_and_a_new_node_loads_them_all() {
    let mut redis = RedisServer::start();
    let a = TestServer::start(node(&redis)).await;
    redis.await_control_subscribers(1).await;
    redis.kill();
    await_metric(&a, "wsgate_redis_up", |up| up == 0.0).await;
    for i in 0..5000 {
        a.handle.revoke_user(&format!("u{i}"));
    }
    assert_eq!(a.metric("wsgate_control_pending").await, 5000.0);
    redis.restart_empty();
    let back = Instant::now();
    await_metric(&a, "wsgate_control_pending", |n| n == 0.0).await;
    assert!(back.elapsed() < RELINK, "{:?}", back.elapsed());
    let stored: i64 = redis.query(&redis::cmd("DBSIZE")).await;
    assert!(stored >= 5000, "{stored}");

    // A node that starts now loads them, over many round trips, among keys that are not
    // revocations (so some scans find none).
    let mut others = redis::cmd("MSET");
    for i in 0..3000 {
        others.arg(format!("other:{i}")).arg("x");
    }
    let () = redis.query(&others).await;
    let b = TestServer::start(node(&redis)).await;
    await_metric(&b, "wsgate_revocations", |n| n == 5000.0).await;
}

#[tokio::test]
async fn control_messages_and_stored_revocations_without_a_valid_signature_are_ignored_and_counted() {
    let redis = RedisServer::start();
    let a = TestServer::start(node(&redis)).await;
    redis.await_control_subscribers(1).await;
    let mut frank = connect_as(&a, &issued_token("frank")).await;

    let forged = r#"{"revoke":{"user":"frank"},"at":9000000000000000000}"#;
    assert_eq!(redis.publish_control(forged).await, 1);
    let other_secret = signed_with(
        b"another deployment's secret, 32 bytes+",
        r#"{"revoke":{"user":"frank"}}"#,
    );
    assert_eq!(redis.publish_control(&other_secret).await, 1);
    // A signed notice after them: once it arrives, both forgeries have been read.
    let notice = signed(r#"{"publish":{"room":"lobby","message":"still here?"}}"#);
    assert_eq!(redis.publish_control(&notice).await, 1);
    loop {
        let got = next_json(&mut frank).await;
        if got["type"] == "notice" {
            assert_eq!(got["message"], "still here?");
            break;
        }
    }
    assert_eq!(a.metric("wsgate_control_rejected_total").await, 2.0);

    // A forged stored revocation, read when the node relinks.
    let _: () = redis
        .query(
            redis::cmd("SET")
                .arg("wsgate:revoked:user:frank")
                .arg(forged)
                .arg("EX")
                .arg(600),
        )
        .await;
    let _: () = redis
        .query(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"))
        .await;
    await_metric(&a, "wsgate_control_rejected_total", |n| n == 3.0).await;
    // Still connected, and still let in.
    round_trip(&mut frank, "not revoked").await;
    let _ = connect_as(&a, &issued_token("frank")).await;
}

#[tokio::test]
async fn redis_out_of_memory_keeps_revocations_waiting_and_counts_lost_messages() {
    let redis = RedisServer::start();
    let a = TestServer::start(node(&redis)).await;
    redis.await_control_subscribers(1).await;
    let mut member = a.join("lobby", "gail").await;
    assert!(round_trip(&mut member, "before").await.is_some());

    let config = |name: &str, value: &str| redis::cmd("CONFIG").arg("SET").arg(name).arg(value).to_owned();
    let _: () = redis.query(&config("maxmemory-policy", "noeviction")).await;
    let _: () = redis.query(&config("maxmemory", "1")).await;
    let (status, answer) = revoke(&a, r#"{"user":"gus"}"#).await;
    assert_eq!((status, answer["cluster"].as_str()), (202, Some("pending")));
    assert!(a.metric("wsgate_control_pending").await >= 1.0);
    let dropped = a.metric("wsgate_relay_dropped_total").await;
    send(&mut member, r#"{"message":"lost"}"#).await;
    await_metric(&a, "wsgate_relay_dropped_total", |n| n > dropped).await;

    let _: () = redis.query(&config("maxmemory", "0")).await;
    await_metric(&a, "wsgate_control_pending", |n| n == 0.0).await;
    redis
        .await_keys("wsgate:revoked:user:gus", |keys| keys.len() == 1)
        .await;
}

#[tokio::test]
async fn a_full_outbox_answers_503_and_the_revocation_still_applies_here() {
    let mut redis = RedisServer::start();
    let a = TestServer::start(node(&redis).with(|c| c.control_outbox = 2)).await;
    redis.await_control_subscribers(1).await;
    let mut hal = connect_as(&a, &issued_token("hal")).await;
    redis.kill();
    await_metric(&a, "wsgate_redis_up", |up| up == 0.0).await;
    assert_eq!(revoke(&a, r#"{"user":"x1"}"#).await.0, 202);
    assert_eq!(revoke(&a, r#"{"user":"x2"}"#).await.0, 202);
    let response = admin_request(
        a.admin.unwrap(),
        "POST",
        "/admin/revoke",
        Some(ADMIN_KEY),
        r#"{"user":"hal"}"#,
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 503 "), "{response}");
    assert!(response.contains("Retry-After: 1"), "{response}");
    assert!(response.ends_with(r#"{"closed":1,"cluster":"full"}"#), "{response}");
    assert_revoked(&mut hal).await;
    assert_eq!(a.metric("wsgate_control_pending").await, 2.0);
}

#[tokio::test]
async fn an_idle_node_sends_no_empty_pipeline() {
    let redis = RedisServer::start();
    // Counters are renewed every second with a 2 s history TTL: three renewals with no room.
    let a = TestServer::start(node(&redis).with(|c| c.history_ttl = Duration::from_secs(2))).await;
    redis.await_control_subscribers(1).await;
    let mut member = a.join("brief", "ida").await;
    let _ = member.close(None).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(a.metric("wsgate_relay_dropped_total").await, 0.0);
    assert_eq!(a.metric("wsgate_redis_reconnects_total").await, 0.0);
}

/// Runs a server on a runtime of its own, with a chat and a stop, and returns how many tasks
/// are still alive once `run` returned and the handle is gone.
fn tasks_left_after_run(config: Config) -> usize {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = TestServer::start(config).await;
        let mut member = server.join("lobby", "una").await;
        round_trip(&mut member, "hi").await;
        let mut server = server;
        server.shutdown().await;
        drop(server);
        drop(member);
        let metrics = tokio::runtime::Handle::current().metrics();
        // Tasks that end on their own once their last handle is gone (a Redis connection's
        // driver) need a few turns; bounded.
        for _ in 0..200 {
            if metrics.num_alive_tasks() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        metrics.num_alive_tasks()
    })
}

#[test]
fn no_task_outlives_run_with_or_without_redis() {
    let redis = RedisServer::start();
    assert_eq!(tasks_left_after_run(config()), 0, "without Redis");
    assert_eq!(tasks_left_after_run(node(&redis)), 0, "with Redis");
}
