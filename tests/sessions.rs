//! PROTOCOL.md §9 over real sockets: the welcome's `exp`, the `expiring` warning, in-band
//! refresh and its refusals.

mod common;

use std::time::Duration;

use common::*;
use wsgate::jwt::{Claims, Key, Validation, unix_now};

fn token_until(sub: &str, exp: i64, rooms: Option<&[&str]>) -> String {
    let mut claims = Claims::new(sub, exp);
    claims.rooms = rooms.map(|r| r.iter().map(|s| s.to_string()).collect());
    key().sign(&claims)
}

fn refresh(token: &str) -> String {
    serde_json::json!({"type": "refresh", "token": token}).to_string()
}

/// A server with no leeway, so expiry is exact to the second.
async fn server() -> TestServer {
    TestServer::start(config().with(|c| {
        c.validation = Validation {
            leeway: 0,
            ..Validation::default()
        }
    }))
    .await
}

#[tokio::test]
async fn a_refresh_keeps_the_connection_past_the_old_exp() {
    let server = server().await;
    let exp = unix_now() + 2;
    let (mut alice, _) = server
        .connect(
            &format!("/ws/chat/lobby?token={}", token_until("alice", exp, None)),
            &[],
        )
        .await
        .unwrap();
    let welcome = next_json(&mut alice).await;
    assert_eq!(
        (welcome["type"].as_str(), welcome["exp"].as_i64()),
        (Some("welcome"), Some(exp))
    );
    // Less than the refresh window (60 s) is left: the warning comes at once, and once.
    let warning = next_json(&mut alice).await;
    assert_eq!(
        (warning["type"].as_str(), warning["exp"].as_i64()),
        (Some("expiring"), Some(exp))
    );

    let new_exp = unix_now() + 600;
    send(&mut alice, &refresh(&token_until("alice", new_exp, None))).await;
    let refreshed = next_json(&mut alice).await;
    assert_eq!(
        (refreshed["type"].as_str(), refreshed["exp"].as_i64()),
        (Some("refreshed"), Some(new_exp))
    );

    // Past the old exp, still connected, and no second warning (the new exp is far).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    send(&mut alice, r#"{"message":"still here"}"#).await;
    let got = next_json(&mut alice).await;
    assert_eq!(
        (got["type"].as_str(), got["message"].as_str()),
        (Some("message"), Some("still here"))
    );
}

#[tokio::test]
async fn refusals_keep_the_old_expiry_and_say_why() {
    let server = server().await;
    let exp = unix_now() + 3;
    let (mut alice, _) = server
        .connect(
            &format!("/ws/chat/lobby?token={}", token_until("alice", exp, None)),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(next_json(&mut alice).await["type"], "welcome");
    assert_eq!(next_json(&mut alice).await["type"], "expiring");
    let later = unix_now() + 600;
    let forged = Key::new(b"another-secret-0123456789abcdef-xyz")
        .unwrap()
        .sign(&Claims::new("alice", later));
    let cases = [
        (
            refresh(&token_until("bob", later, None)),
            "refresh refused: the token is for another user",
        ),
        (
            refresh(&token_until("alice", unix_now() - 60, None)),
            "refresh refused: token expired",
        ),
        (refresh(&forged), "refresh refused: bad signature"),
        (
            refresh("not-a-token"),
            "refresh refused: malformed token: expected three segments",
        ),
        (
            r#"{"type":"refresh"}"#.to_owned(),
            "refresh refused: expected a string \"token\"",
        ),
        (r#"{"type":"subscribe","room":"x"}"#.to_owned(), "unknown type"),
    ];
    for (request, expected) in cases {
        send(&mut alice, &request).await;
        let got = next_json(&mut alice).await;
        assert_eq!(
            (got["type"].as_str(), got["error"].as_str()),
            (Some("error"), Some(expected))
        );
    }
    // The old expiry still holds.
    let frame = close_frame(&mut alice).await;
    assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4401, "token expired"));
}

#[tokio::test]
async fn a_refresh_that_no_longer_allows_the_room_closes_4403() {
    let server = server().await;
    let t = token_until("alice", unix_now() + 600, Some(&["lobby", "team-*"]));
    let (mut alice, _) = server
        .connect(&format!("/ws/chat/team-red?token={t}"), &[])
        .await
        .unwrap();
    let welcome = next_json(&mut alice).await;
    assert_eq!(welcome["type"], "welcome");
    // Far from exp: no warning yet.
    send(
        &mut alice,
        &refresh(&token_until("alice", unix_now() + 900, Some(&["lobby"]))),
    )
    .await;
    let frame = close_frame(&mut alice).await;
    assert_eq!(u16::from(frame.code), 4403);
    assert!(frame.reason.contains("room not allowed"), "{}", frame.reason);
}

#[tokio::test]
async fn a_refresh_flood_is_rate_limited_like_any_message() {
    let server = TestServer::start(config().with(|c| {
        c.rate_limit = 1;
        c.rate_burst = 5;
    }))
    .await;
    let mut alice = server.join("lobby", "alice").await;
    let fresh = refresh(&token("alice"));
    for _ in 0..20 {
        send(&mut alice, &fresh).await;
    }
    let (mut refreshed, mut limited) = (0, 0);
    for _ in 0..20 {
        match next_json(&mut alice).await["type"].as_str() {
            Some("refreshed") => refreshed += 1,
            Some("error") => limited += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!((5..=6).contains(&refreshed), "{refreshed} refreshes got through");
    assert_eq!(refreshed + limited, 20);
}
