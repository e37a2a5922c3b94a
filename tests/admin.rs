//! PROTOCOL.md §9's admin API over real sockets: its own port, the key, strict bodies, and
//! revocations and notices reaching open connections.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsgate::config::AdminKey;
use wsgate::jwt::{Claims, unix_now};

const KEY: &str = "admin-key-for-tests-0123456789abcdef";

async fn server() -> TestServer {
    TestServer::start(config().with(|c| {
        c.admin_addr = Some("127.0.0.1:0".parse().unwrap());
        c.admin_key = AdminKey::new(KEY.as_bytes());
    }))
    .await
}

#[tokio::test]
async fn the_route_the_key_and_the_body_are_checked_in_that_order() {
    let server = server().await;
    let admin = server.admin.unwrap();
    assert_ne!(admin, server.addr);
    let revoke = r#"{"user":"alice"}"#;
    let status = |r: &str| r.split(' ').nth(1).unwrap_or_default().to_owned();
    assert_eq!(
        status(&admin_request(admin, "POST", "/admin/revoke", None, revoke).await),
        "401"
    );
    assert_eq!(
        status(
            &admin_request(
                admin,
                "POST",
                "/admin/revoke",
                Some("wrong-key-0123456789abcdef-0123456789"),
                revoke
            )
            .await
        ),
        "401"
    );
    assert_eq!(
        status(&admin_request(admin, "POST", "/admin/nope", Some(KEY), revoke).await),
        "404"
    );
    assert_eq!(
        status(&admin_request(admin, "GET", "/admin/revoke", Some(KEY), "").await),
        "404"
    );
    for bad in [
        "not json",
        r#"{"user":"alice","extra":1}"#,
        r#"{"jti":"x"}"#,
        r#"{}"#,
        r#"{"room":"bad room","message":"x"}"#,
    ] {
        let path = if bad.contains("room") {
            "/admin/publish"
        } else {
            "/admin/revoke"
        };
        let response = admin_request(admin, "POST", path, Some(KEY), bad).await;
        assert_eq!(status(&response), "400", "{bad}: {response}");
        let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert_eq!(body.trim().lines().count(), 1, "{body}");
    }
    // Nothing the client sent comes back but the room (PROTOCOL.md §4): not a field name,
    // not a value.
    for (path, bad) in [
        ("/admin/revoke", r#"{"user":"alice","<script>x</script>":1}"#),
        ("/admin/revoke", r#"{"user":["<script>x</script>"]}"#),
        ("/admin/revoke", r#"{"user":"<script>x</script>\u202e"}"#),
        ("/admin/publish", r#"{"room":"lobby","<script>x</script>":"m"}"#),
        (
            "/admin/publish",
            r#"{"room":"lobby","message":"<script>x</script>","x":1}"#,
        ),
        ("/admin/revoke", r#"{"user": <script>x</script>"#),
    ] {
        let response = admin_request(admin, "POST", path, Some(KEY), bad).await;
        assert_eq!(status(&response), "400", "{bad}: {response}");
        assert!(!response.contains("script"), "{bad}: {response}");
    }
    let huge = format!(r#"{{"room":"lobby","message":"{}"}}"#, "x".repeat(70_000));
    assert_eq!(
        status(&admin_request(admin, "POST", "/admin/publish", Some(KEY), &huge).await),
        "400"
    );
    // Never on the public port.
    assert_eq!(
        status(&admin_request(server.addr, "POST", "/admin/revoke", Some(KEY), revoke).await),
        "404"
    );
}

#[tokio::test]
async fn revoke_and_publish_reach_open_connections() {
    let server = server().await;
    let admin = server.admin.unwrap();
    let mut claims = Claims::new("alice", unix_now() + 600);
    claims.jti = Some("leaked".into());
    let token = key().sign(&claims);
    let (mut alice, _) = server
        .connect(&format!("/ws/chat/lobby?token={token}"), &[])
        .await
        .unwrap();
    assert_eq!(next_json(&mut alice).await["type"], "welcome");
    let mut bob = server.join("lobby", "bob").await;
    assert_eq!(next_json(&mut alice).await["type"], "join");

    let response = admin_request(
        admin,
        "POST",
        "/admin/publish",
        Some(KEY),
        r#"{"room":"lobby","message":"hi all"}"#,
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 202 "), "{response}");
    for member in [&mut alice, &mut bob] {
        assert_eq!(next_json(member).await["type"], "notice");
    }

    let body = format!(r#"{{"jti":"leaked","exp":{}}}"#, claims.exp);
    let response = admin_request(admin, "POST", "/admin/revoke", Some(KEY), &body).await;
    assert!(
        response.starts_with("HTTP/1.1 200 ") && response.ends_with(r#"{"closed":1}"#),
        "{response}"
    );
    let frame = close_frame(&mut alice).await;
    assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4401, "revoked"));
}

#[tokio::test]
async fn idle_sockets_cannot_keep_the_key_holder_out() {
    let server = server().await;
    let admin = server.admin.unwrap();
    // More than the 64 admin places, each with a request that never finishes its body.
    let mut idle = Vec::new();
    for _ in 0..80 {
        let mut socket = within(TcpStream::connect(admin)).await.unwrap();
        let partial = format!("POST /admin/revoke HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 100\r\n\r\n{{");
        within(socket.write_all(partial.as_bytes())).await.unwrap();
        idle.push(socket);
    }
    for _ in 0..3 {
        let response = admin_request(admin, "POST", "/admin/revoke", Some(KEY), r#"{"user":"nobody"}"#).await;
        assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    }
    // Ambiguous framing is refused (RFC 9112 §6.1), and so is a signed length.
    let mut stream = within(TcpStream::connect(admin)).await.unwrap();
    let smuggle = format!(
        "POST /admin/revoke HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 16\r\nTransfer-Encoding: chunked\r\n\r\n{{\"user\":\"nobody\"}}"
    );
    within(stream.write_all(smuggle.as_bytes())).await.unwrap();
    let mut response = String::new();
    let _ = within(stream.read_to_string(&mut response)).await;
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
}

#[tokio::test]
async fn a_key_holder_whose_body_comes_later_gets_in_during_a_silent_flood() {
    let server = server().await;
    let admin = server.admin.unwrap();
    let body = r#"{"user":"nobody"}"#;
    let head = format!(
        "POST /admin/revoke HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let key_holder = async {
        let mut socket = within(TcpStream::connect(admin)).await.unwrap();
        within(socket.write_all(head.as_bytes())).await.unwrap();
        // The body, on a slow link, 300 ms after the head, while silent sockets keep coming.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let _ = socket.write_all(body.as_bytes()).await;
        let mut response = vec![0; 512];
        let n = within(socket.read(&mut response)).await.unwrap_or(0);
        String::from_utf8_lossy(&response[..n]).into_owned()
    };
    let silent = async {
        // More than the 64 admin places, one every 2 ms for 0.8 s.
        let mut sockets = Vec::new();
        for _ in 0..400 {
            sockets.push(within(TcpStream::connect(admin)).await.unwrap());
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        sockets
    };
    let (response, sockets) = tokio::join!(key_holder, silent);
    assert!(sockets.len() > 64);
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
}

#[tokio::test]
async fn keyless_bodies_cannot_keep_a_slow_key_holder_out() {
    let server = server().await;
    let admin = server.admin.unwrap();
    // Without the key: a head announcing 64 KiB, and 60 KB of it, from 63 of the 64 places.
    let mut junk =
        format!("POST /admin/revoke HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 65536\r\n\r\n").into_bytes();
    junk.extend(std::iter::repeat_n(b'a', 60_000));
    let mut keyless = Vec::new();
    for _ in 0..63 {
        let mut socket = within(TcpStream::connect(admin)).await.unwrap();
        let _ = socket.write_all(&junk).await;
        keyless.push(socket);
    }
    let body = r#"{"user":"mallory"}"#;
    let request = format!(
        "POST /admin/revoke HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let key_holder = send_slowly(admin, &request);
    // And one more keyless socket a second meanwhile.
    let more = async {
        let mut sockets = Vec::new();
        for _ in 0..3 {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let mut socket = within(TcpStream::connect(admin)).await.unwrap();
            let _ = socket.write_all(&junk).await;
            sockets.push(socket);
        }
        sockets
    };
    let (response, _more) = tokio::join!(key_holder, more);
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
}
