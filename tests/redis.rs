//! Several nodes through a real Redis (PROTOCOL.md §8): each test starts its own `redis-server` on a
//! free port. Run with `cargo test --features redis`.
#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use common::redis_server::{RedisServer, signed};
use common::*;
use wsgate::Config;
use wsgate::auth::{Identity, JwtAuthenticator};
use wsgate::cluster::RedisSessionStore;
use wsgate::jwt::{Validation, Verifier, unix_now};

fn node_config(redis: &RedisServer) -> Config {
    config().with(|c| c.redis_url = Some(redis.url()))
}

/// Reads until `marker` arrives from anyone, returning the chat messages before it as
/// (username, message); join and leave events are skipped.
async fn messages_until(client: &mut Client, marker: &str) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    loop {
        let got = next_json(client).await;
        if got["type"] != "message" {
            continue;
        }
        let message = got["message"].as_str().unwrap().to_owned();
        if message == marker {
            return seen;
        }
        seen.push((got["username"].as_str().unwrap().to_owned(), message));
    }
}

#[tokio::test]
async fn members_on_two_nodes_get_every_message_once_in_order() {
    let redis = RedisServer::start();
    let a = TestServer::start(node_config(&redis)).await;
    let b = TestServer::start(node_config(&redis)).await;
    let mut alice = a.join("shared", "alice").await;
    let mut carol = a.join("shared", "carol").await;
    let mut bob = b.join("shared", "bob").await;
    redis.await_subscribers("shared", 2).await;

    for i in 0..30 {
        send(&mut alice, &format!(r#"{{"message":"a{i}"}}"#)).await;
        send(&mut bob, &format!(r#"{{"message":"b{i}"}}"#)).await;
    }
    // Order is promised per sender, not across senders: each ends its own sequence.
    send(&mut alice, r#"{"message":"a-end"}"#).await;
    send(&mut bob, r#"{"message":"b-end"}"#).await;
    for (who, client) in [("alice", &mut alice), ("bob", &mut bob), ("carol", &mut carol)] {
        let mut seen: Vec<(String, String)> = Vec::new();
        while !(seen.iter().any(|(_, m)| m == "a-end") && seen.iter().any(|(_, m)| m == "b-end")) {
            let got = next_json(client).await;
            if got["type"] == "message" {
                seen.push((
                    got["username"].as_str().unwrap().to_owned(),
                    got["message"].as_str().unwrap().to_owned(),
                ));
            }
        }
        let from = |user: &str| {
            seen.iter()
                .filter(|(u, _)| u == user)
                .map(|(_, m)| m.clone())
                .collect::<Vec<_>>()
        };
        let expected = |p: &str| {
            (0..30)
                .map(|i| format!("{p}{i}"))
                .chain([format!("{p}-end")])
                .collect::<Vec<_>>()
        };
        assert_eq!(from("alice"), expected("a"), "{who} saw alice's");
        assert_eq!(from("bob"), expected("b"), "{who} saw bob's");
        assert_eq!(seen.len(), 62, "{who} saw duplicates or strangers");
    }
}

#[tokio::test]
async fn join_and_leave_cross_nodes_and_empty_rooms_are_unsubscribed() {
    let redis = RedisServer::start();
    let a = TestServer::start(node_config(&redis)).await;
    let b = TestServer::start(node_config(&redis)).await;
    let mut alice = a.join("meet", "alice").await;
    redis.await_subscribers("meet", 1).await;
    let mut bob = b.join("meet", "bob").await;
    assert_eq!(
        next_json(&mut alice).await,
        serde_json::json!({"type":"join","room":"meet","username":"bob","seq":2})
    );
    redis.await_subscribers("meet", 2).await;

    within(bob.close(None)).await.unwrap();
    assert_eq!(
        next_json(&mut alice).await,
        serde_json::json!({"type":"leave","room":"meet","username":"bob","seq":3})
    );
    // Node B has nobody left in the room: it stops listening to it.
    redis.await_subscribers("meet", 1).await;
    within(alice.close(None)).await.unwrap();
    redis.await_subscribers("meet", 0).await;
    let channels: Vec<String> = redis
        .query(redis::cmd("PUBSUB").arg("CHANNELS").arg("wsgate:room:*"))
        .await;
    assert!(channels.is_empty(), "{channels:?}");
}

#[tokio::test]
async fn a_redis_restart_is_announced_and_traffic_resumes() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let a = TestServer::start(node_config(&redis)).await;
    let b = TestServer::start(node_config(&redis)).await;
    let mut alice = a.join("outage", "alice").await;
    let mut carol = a.join("outage", "carol").await;
    let mut bob = b.join("outage", "bob").await;
    redis.await_subscribers("outage", 2).await;

    redis.kill();
    // Everyone is told, at once, that messages from other nodes may be missing.
    for client in [&mut alice, &mut bob, &mut carol] {
        loop {
            let got = next_json(client).await;
            if got["type"] == "lagged" {
                assert_eq!(got["missed"], serde_json::Value::Null);
                break;
            }
        }
    }
    // Local rooms keep working meanwhile.
    send(&mut alice, r#"{"message":"local only"}"#).await;
    assert_eq!(messages_until(&mut carol, "local only").await, vec![]);

    let redis = RedisServer::start_on(port);
    redis.await_subscribers("outage", 2).await;
    send(&mut alice, r#"{"message":"back"}"#).await;
    assert_eq!(messages_until(&mut bob, "back").await, vec![]);
    assert_eq!(a.metric("wsgate_redis_up").await, 1.0);
    assert!(a.metric("wsgate_redis_reconnects_total").await >= 1.0);
}

#[tokio::test]
async fn sessions_in_redis_work_on_every_node() {
    let mut redis = RedisServer::start();
    let live = Identity {
        expires_at: Some(unix_now() + 600),
        ..Identity::new("carol")
    };
    let dead = Identity {
        expires_at: Some(unix_now() - 1),
        ..Identity::new("dave")
    };
    for (id, identity) in [("s-live", &live), ("s-dead", &dead)] {
        let json = serde_json::to_string(identity).unwrap();
        let _: () = redis
            .query(redis::cmd("SET").arg(format!("app:session:{id}")).arg(json))
            .await;
    }
    let node = || async {
        let verifier = Verifier::new(vec![key()], Validation::default()).unwrap();
        let sessions = RedisSessionStore::new(&redis.url(), "app:session:").unwrap();
        TestServer::start_with(node_config(&redis), JwtAuthenticator::with_sessions(verifier, sessions)).await
    };
    let nodes = [node().await, node().await];
    for server in &nodes {
        let origin = format!("http://{}", server.addr);
        let (mut client, _) = server
            .connect("/ws/chat/lobby", &[("Cookie", "sessionid=s-live"), ("Origin", &origin)])
            .await
            .unwrap();
        assert_eq!(next_json(&mut client).await["username"], "carol");
        for id in ["s-dead", "s-unknown"] {
            let cookie = format!("sessionid={id}");
            let response = refused(
                server
                    .connect("/ws/chat/lobby", &[("Cookie", &cookie), ("Origin", &origin)])
                    .await,
            );
            assert_eq!(response.status(), 401, "{id}");
        }
    }

    // The store down: a quick, honest 503, not a hang.
    redis.kill();
    let origin = format!("http://{}", nodes[0].addr);
    let response = refused(
        nodes[0]
            .connect("/ws/chat/lobby", &[("Cookie", "sessionid=s-live"), ("Origin", &origin)])
            .await,
    );
    assert_eq!(response.status(), 503);
}

fn token_with_jti(sub: &str, jti: &str) -> (String, i64) {
    let mut claims = wsgate::jwt::Claims::new(sub, unix_now() + 600);
    claims.jti = Some(jti.to_owned());
    claims.iat = Some(unix_now() - 5);
    (key().sign(&claims), claims.exp)
}

#[tokio::test]
async fn revocations_and_notices_reach_every_node_and_later_ones() {
    let redis = RedisServer::start();
    let a = TestServer::start(node_config(&redis)).await;
    let b = TestServer::start(node_config(&redis)).await;
    redis.await_control_subscribers(2).await;

    // A notice from node A's handle reaches members on both nodes, once each.
    let mut on_a = a.join("lobby", "ann").await;
    let mut on_b = b.join("lobby", "ben").await;
    redis.await_subscribers("lobby", 2).await;
    a.handle.publish("lobby", "hello both");
    for member in [&mut on_a, &mut on_b] {
        loop {
            let got = next_json(member).await;
            if got["type"] == "notice" {
                assert_eq!(got["message"], "hello both");
                break;
            }
        }
    }
    send(&mut on_a, r#"{"message":"marker"}"#).await;
    for member in [&mut on_a, &mut on_b] {
        loop {
            let got = next_json(member).await;
            assert_ne!(got["type"], "notice", "a notice arrived twice");
            if got["message"] == "marker" {
                break;
            }
        }
    }

    // Revoked on A, closed on B within a second.
    let (leaked, exp) = token_with_jti("carl", "leaked-1");
    let (mut carl, _) = b.connect(&format!("/ws/chat/lobby?token={leaked}"), &[]).await.unwrap();
    assert_eq!(next_json(&mut carl).await["type"], "welcome");
    let started = std::time::Instant::now();
    a.handle.revoke_jti("leaked-1", exp);
    let frame = close_frame(&mut carl).await;
    assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4401, "revoked"));
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());

    // An application's own PUBLISH (the logout hook) revokes a user everywhere.
    let (dana_token, _) = token_with_jti("dana", "d-1");
    let (mut dana, _) = a
        .connect(&format!("/ws/chat/lobby?token={dana_token}"), &[])
        .await
        .unwrap();
    assert_eq!(next_json(&mut dana).await["type"], "welcome");
    let receivers = redis.publish_control(&signed(r#"{"revoke":{"user":"dana"}}"#)).await;
    assert_eq!(receivers, 2);
    assert_eq!(close_frame(&mut dana).await.reason.as_str(), "revoked");

    // A node that starts after both revocations enforces them.
    let mut stored: Vec<String> = Vec::new();
    for _ in 0..200 {
        stored = redis.query(redis::cmd("KEYS").arg("wsgate:revoked:*")).await;
        if stored.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stored.len(), 2, "{stored:?}");
    let c = TestServer::start(node_config(&redis)).await;
    redis.await_control_subscribers(3).await;
    for token in [&leaked, &dana_token] {
        let response = refused(c.connect(&format!("/ws/chat/lobby?token={token}"), &[]).await);
        assert_eq!(response.status(), 401);
    }
    // A new login of dana (issued after the revocation) works there too.
    let mut fresh = wsgate::jwt::Claims::new("dana", unix_now() + 600);
    fresh.iat = Some(unix_now() + 1);
    let fresh = key().sign(&fresh);
    assert!(c.connect(&format!("/ws/chat/lobby?token={fresh}"), &[]).await.is_ok());
}

#[tokio::test]
async fn a_session_deleted_from_redis_closes_its_connection_within_a_recheck() {
    let redis = RedisServer::start();
    let json = serde_json::to_string(&Identity::new("erin")).unwrap();
    let _: () = redis.query(redis::cmd("SET").arg("app:session:s-1").arg(json)).await;
    let verifier = Verifier::new(vec![key()], Validation::default()).unwrap();
    let sessions = RedisSessionStore::new(&redis.url(), "app:session:").unwrap();
    let config = node_config(&redis).with(|c| c.session_recheck = Duration::from_secs(1));
    let server = TestServer::start_with(config, JwtAuthenticator::with_sessions(verifier, sessions)).await;
    let origin = format!("http://{}", server.addr);
    let (mut erin, _) = server
        .connect("/ws/chat/lobby", &[("Cookie", "sessionid=s-1"), ("Origin", &origin)])
        .await
        .unwrap();
    assert_eq!(next_json(&mut erin).await["username"], "erin");
    // The application logs erin out: it deletes the session key.
    let _: () = redis.query(redis::cmd("DEL").arg("app:session:s-1")).await;
    let started = std::time::Instant::now();
    let frame = close_frame(&mut erin).await;
    assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4401, "session ended"));
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn nodes_run_as_an_acl_user_limited_to_wsgate_keys_and_channels() {
    let redis = RedisServer::start();
    let acl = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("wsgate")
        .arg("on")
        .arg(">node-password-0123")
        .arg("resetkeys")
        .arg("~wsgate:*")
        .arg("resetchannels")
        .arg("&wsgate:*")
        .arg("+@all")
        .arg("-@dangerous")
        .to_owned();
    let _: () = redis.query(&acl).await;
    let url = format!("redis://wsgate:node-password-0123@127.0.0.1:{}", redis.port);
    let as_user = |c: &mut Config| c.redis_url = Some(url.clone());
    let a = TestServer::start(config().with(as_user)).await;
    let b = TestServer::start(config().with(as_user)).await;
    redis.await_control_subscribers(2).await;
    let mut on_a = a.join("acl", "ann").await;
    let mut on_b = b.join("acl", "ben").await;
    redis.await_subscribers("acl", 2).await;
    send(&mut on_a, r#"{"message":"through the ACL"}"#).await;
    assert!(messages_until(&mut on_b, "through the ACL").await.is_empty());
    a.handle.revoke_user("carl");
    redis
        .await_keys("wsgate:revoked:user:carl", |keys| keys.len() == 1)
        .await;
    assert_eq!(a.metric("wsgate_relay_dropped_total").await, 0.0);

    // A wrong password: the node starts, says Redis is down, and its rooms work locally.
    let wrong = format!("redis://wsgate:wrong@127.0.0.1:{}", redis.port);
    let c = TestServer::start(config().with(|c| c.redis_url = Some(wrong))).await;
    assert_eq!(await_metric(&c, "wsgate_redis_up", |up| up == 0.0).await, 0.0);
}

/// PROTOCOL.md §12's Python, run as written: what it signs, a node accepts.
#[tokio::test]
async fn the_python_signing_in_protocol_md_is_accepted_by_a_node() {
    let protocol = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md")).unwrap();
    let start = protocol
        .find("An application signs the same way:\n\n```python\n")
        .expect("§12's Python block")
        + 45;
    let block = &protocol[start..start + protocol[start..].find("```").unwrap()];
    let program = format!(
        "{block}\nimport sys\nprint(signed({{\"revoke\": {{\"user\": \"pia\"}}, \"at\": int(time.time())}}, sys.argv[1].encode()))\n"
    );
    let output = std::process::Command::new("python3")
        .args(["-c", &program, std::str::from_utf8(SECRET).unwrap()])
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let message = String::from_utf8(output.stdout).unwrap();

    let redis = RedisServer::start();
    let a = TestServer::start(node_config(&redis)).await;
    redis.await_control_subscribers(1).await;
    let (pia, _) = token_with_jti("pia", "p-1");
    let (mut pia, _) = a.connect(&format!("/ws/chat/lobby?token={pia}"), &[]).await.unwrap();
    assert_eq!(next_json(&mut pia).await["type"], "welcome");
    assert_eq!(redis.publish_control(message.trim()).await, 1);
    assert_eq!(close_frame(&mut pia).await.reason.as_str(), "revoked");
    assert_eq!(a.metric("wsgate_control_rejected_total").await, 0.0);
}
