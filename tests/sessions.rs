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

/// Connects to `lobby` with `token` in the query, reading nothing yet.
async fn connect_with(server: &TestServer, token: &str) -> Client {
    let (client, _) = server
        .connect(&format!("/ws/chat/lobby?token={token}"), &[])
        .await
        .unwrap();
    client
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
    let mut alice = connect_with(&server, &token_until("alice", exp, None)).await;
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
    let mut alice = connect_with(&server, &token_until("alice", exp, None)).await;
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

fn claims_for(sub: &str, jti: Option<&str>, iat: Option<i64>) -> String {
    let mut claims = Claims::new(sub, unix_now() + 600);
    claims.jti = jti.map(str::to_owned);
    claims.iat = iat;
    key().sign(&claims)
}

/// Connects with `token` in the query and reads the welcome.
async fn join_with(server: &TestServer, token: &str) -> Client {
    let mut client = connect_with(server, token).await;
    assert_eq!(next_json(&mut client).await["type"], "welcome");
    client
}

/// The close frame, which must come within a second of `since`.
async fn closed_within_a_second(client: &mut Client, since: std::time::Instant) -> (u16, String) {
    let frame = close_frame(client).await;
    assert!(
        since.elapsed() < Duration::from_secs(1),
        "closed after {:?}",
        since.elapsed()
    );
    (u16::from(frame.code), frame.reason.to_string())
}

#[tokio::test]
async fn a_revoked_token_is_closed_and_refused() {
    let server = TestServer::start(config()).await;
    let leaked = claims_for("alice", Some("t-1"), Some(unix_now()));
    let mut alice = join_with(&server, &leaked).await;
    let other = claims_for("alice", Some("t-2"), Some(unix_now()));
    let mut same_user = join_with(&server, &other).await;

    let started = std::time::Instant::now();
    assert_eq!(server.handle.revoke_jti("t-1", unix_now() + 600), 1);
    assert_eq!(
        closed_within_a_second(&mut alice, started).await,
        (4401, "revoked".to_owned())
    );
    // Only that token: the user's other connection stays.
    send(&mut same_user, r#"{"message":"still here"}"#).await;
    assert_eq!(next_json(&mut same_user).await["message"], "still here");

    let response = refused(server.connect(&format!("/ws/chat/lobby?token={leaked}"), &[]).await);
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains(r#"error_description="revoked""#), "{challenge}");
    assert_eq!(server.metric("wsgate_revocations").await, 1.0);
}

#[tokio::test]
async fn revoking_a_user_reaches_tokens_issued_before_and_not_after() {
    let server = TestServer::start(config()).await;
    let before = claims_for("bob", None, Some(unix_now() - 5));
    let without_iat = claims_for("bob", None, None);
    let mut first = join_with(&server, &before).await;
    let mut second = join_with(&server, &without_iat).await;
    let started = std::time::Instant::now();
    assert_eq!(server.handle.revoke_user("bob"), 2);
    assert_eq!(closed_within_a_second(&mut first, started).await.0, 4401);
    assert_eq!(closed_within_a_second(&mut second, started).await.0, 4401);
    assert_eq!(
        refused(server.connect(&format!("/ws/chat/lobby?token={before}"), &[]).await).status(),
        401
    );
    // A token issued after the revocation (a new login) works.
    let after = claims_for("bob", None, Some(unix_now() + 1));
    let _bob = join_with(&server, &after).await;
    // A refresh with a revoked token is refused.
    let mut carol = server.join("lobby", "carol").await;
    assert_eq!(server.handle.revoke_jti("old", unix_now() + 600), 0);
    send(&mut carol, &refresh(&claims_for("carol", Some("old"), None))).await;
    assert_eq!(next_json(&mut carol).await["error"], "refresh refused: revoked");
}

#[tokio::test]
async fn revocations_expire() {
    let server = TestServer::start(config().with(|c| c.revocation_ttl = Duration::from_secs(1))).await;
    let token = claims_for("dave", None, Some(unix_now() - 5));
    server.handle.revoke_user("dave");
    // A jti whose token is long expired is dropped at once (exp + 30 s leeway in the past).
    server.handle.revoke_jti("gone", unix_now() - 60);
    // One whose token never expires lasts no longer than a user's (PROTOCOL.md §9).
    server.handle.revoke_jti("forever", i64::MAX);
    let forever = claims_for("erin", Some("forever"), None);
    assert_eq!(server.metric("wsgate_revocations").await, 2.0);
    for token in [&token, &forever] {
        assert_eq!(
            refused(server.connect(&format!("/ws/chat/lobby?token={token}"), &[]).await).status(),
            401
        );
    }
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(server.metric("wsgate_revocations").await, 0.0);
    let _dave = join_with(&server, &token).await;
    let _erin = join_with(&server, &forever).await;
}

#[tokio::test]
async fn sessions_end_by_revocation_and_by_logout_in_the_store() {
    use wsgate::auth::{Identity, JwtAuthenticator, MemorySessionStore};
    use wsgate::jwt::Verifier;
    let sessions = MemorySessionStore::default();
    sessions.insert("s-revoked", Identity::new("erin"));
    sessions.insert("s-logout", Identity::new("frank"));
    let verifier = Verifier::new(vec![key()], Validation::default()).unwrap();
    let auth = JwtAuthenticator::with_sessions(verifier, sessions.clone());
    let config = config().with(|c| c.session_recheck = Duration::from_secs(1));
    let server = TestServer::start_with(config, auth).await;
    let origin = format!("http://{}", server.addr);
    let connect = |id: &'static str| {
        let cookie = format!("sessionid={id}");
        let origin = origin.clone();
        let server = &server;
        async move {
            server
                .connect("/ws/chat/lobby", &[("Cookie", &cookie), ("Origin", &origin)])
                .await
        }
    };
    let (mut erin, _) = connect("s-revoked").await.unwrap();
    let (mut frank, _) = connect("s-logout").await.unwrap();
    assert_eq!(next_json(&mut erin).await["type"], "welcome");
    assert_eq!(next_json(&mut frank).await["type"], "welcome");

    let started = std::time::Instant::now();
    assert_eq!(server.handle.end_session("s-revoked"), 1);
    assert_eq!(
        closed_within_a_second(&mut erin, started).await,
        (4401, "session ended".to_owned())
    );
    assert_eq!(refused(connect("s-revoked").await).status(), 401);

    // Logout in the application: the session disappears from its store, and the next
    // recheck (every second here) closes the connection.
    sessions.remove("s-logout");
    let started = std::time::Instant::now();
    let frame = close_frame(&mut frank).await;
    assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4401, "session ended"));
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn notices_reach_the_room_and_the_handle_stops_the_server() {
    let server = TestServer::start(config()).await;
    let mut alice = server.join("lobby", "alice").await;
    let mut bob = server.join("lobby", "bob").await;
    assert_eq!(next_json(&mut alice).await["type"], "join");
    server.handle.publish("lobby", "maintenance at noon");
    server.handle.publish("empty-room", "nobody hears this");
    for member in [&mut alice, &mut bob] {
        let got = next_json(member).await;
        assert_eq!(
            got,
            serde_json::json!({"type":"notice","room":"lobby","message":"maintenance at noon","seq":3})
        );
    }
    server.handle.shutdown();
    assert_eq!(u16::from(close_frame(&mut alice).await.code), 1001);
}

#[tokio::test]
async fn a_session_cookie_connection_cannot_refresh_into_a_token() {
    use wsgate::auth::{Identity, JwtAuthenticator, MemorySessionStore};
    use wsgate::jwt::Verifier;
    let sessions = MemorySessionStore::default();
    let mut identity = Identity::new("gwen");
    identity.expires_at = Some(unix_now() + 60);
    sessions.insert("s-1", identity);
    let verifier = Verifier::new(vec![key()], Validation::default()).unwrap();
    let server = TestServer::start_with(config(), JwtAuthenticator::with_sessions(verifier, sessions)).await;
    let origin = format!("http://{}", server.addr);
    let (mut gwen, _) = server
        .connect("/ws/chat/lobby", &[("Cookie", "sessionid=s-1"), ("Origin", &origin)])
        .await
        .unwrap();
    assert_eq!(next_json(&mut gwen).await["type"], "welcome");
    // A valid token for the same user, living longer than the session (PROTOCOL.md §12).
    let token = key().sign(&Claims::new("gwen", unix_now() + 3600));
    send(&mut gwen, &format!(r#"{{"type":"refresh","token":"{token}"}}"#)).await;
    loop {
        let got = next_json(&mut gwen).await;
        if got["type"] == "error" {
            assert_eq!(got["error"], "refresh refused: renew the session, not a token");
            break;
        }
        assert_ne!(got["type"], "refreshed");
    }
}

#[tokio::test]
async fn a_session_whose_username_breaks_the_sub_rule_is_refused() {
    use wsgate::auth::{Identity, JwtAuthenticator, MemorySessionStore};
    use wsgate::jwt::Verifier;
    let sessions = MemorySessionStore::default();
    let bad = ["evil\u{202E}gpj.exe", "root\n2026 INFO forged", "", &"x".repeat(5000)];
    for (i, name) in bad.iter().enumerate() {
        sessions.insert(format!("s-bad-{i}"), Identity::new(*name));
    }
    sessions.insert("s-good", Identity::new("grace"));
    let verifier = Verifier::new(vec![key()], Validation::default()).unwrap();
    let server = TestServer::start_with(config(), JwtAuthenticator::with_sessions(verifier, sessions)).await;
    let origin = format!("http://{}", server.addr);
    for (i, name) in bad.iter().enumerate() {
        let cookie = format!("sessionid=s-bad-{i}");
        let refusal = refused(
            server
                .connect("/ws/chat/lobby", &[("Cookie", &cookie), ("Origin", &origin)])
                .await,
        );
        assert_eq!(refusal.status(), 401, "{name:?}");
    }
    let (mut grace, _) = server
        .connect("/ws/chat/lobby", &[("Cookie", "sessionid=s-good"), ("Origin", &origin)])
        .await
        .unwrap();
    assert_eq!(next_json(&mut grace).await["username"], "grace");
}
