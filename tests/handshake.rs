//! PROTOCOL.md §1, §2 and §4 over real sockets: routes, every credential carrier end to end, the
//! precedence between them, origin policy, rejections and their headers, limits.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsgate::OriginPolicy;
use wsgate::RejectMode;
use wsgate::auth::{Identity, JwtAuthenticator, MemorySessionStore};
use wsgate::jwt::{Claims, Key, Validation, Verifier, unix_now};

#[tokio::test]
async fn health_metrics_and_unknown_routes() {
    let server = TestServer::start(config()).await;
    let health = server.get("/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
    assert!(health.ends_with("\r\n\r\nok\n"));
    let metrics = server.get("/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n") && metrics.contains("# TYPE wsgate_connections_active gauge"));

    let not_found = server.get("/nope").await;
    assert!(not_found.starts_with("HTTP/1.1 404 Not Found\r\n"), "{not_found}");
    assert!(not_found.contains("Content-Length: 10\r\n") && not_found.contains("Connection: close\r\n"));
    let post = server
        .raw(b"POST /ws/chat/lobby HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .await;
    assert!(
        post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && post.contains("Allow: GET\r\n"),
        "{post}"
    );
    let post = server.raw(b"DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    let garbage = server
        .raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
        .await;
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
}

#[tokio::test]
async fn room_names_are_checked() {
    let server = TestServer::start(config()).await;
    let t = token("alice");
    for room in ["", "has%20space", "semi;colon", &"x".repeat(65), "a/b"] {
        let response = refused(server.connect(&format!("/ws/chat/{room}?token={t}"), &[]).await);
        assert_eq!(response.status(), 400, "room {room:?}");
    }
    for room in ["a", "Lobby_2.0-beta", &"x".repeat(64)] {
        assert!(
            server.connect(&format!("/ws/chat/{room}?token={t}"), &[]).await.is_ok(),
            "room {room:?}"
        );
    }
}

#[tokio::test]
async fn malformed_upgrades_are_400() {
    let server = TestServer::start(config()).await;
    let t = token("alice");
    let path = format!("/ws/chat/lobby?token={t}");
    let good = upgrade_request(server.addr, &path, "");
    assert!(server.raw(good.as_bytes()).await.starts_with("HTTP/1.1 101 "));
    let cases = [
        ("HTTP/1.0", good.replace("HTTP/1.1", "HTTP/1.0")),
        ("no Upgrade", good.replace("Upgrade: websocket\r\n", "")),
        ("Upgrade h2c", good.replace("Upgrade: websocket", "Upgrade: h2c")),
        (
            "no Connection upgrade",
            good.replace("Connection: Upgrade", "Connection: keep-alive"),
        ),
        ("version 12", good.replace("Version: 13", "Version: 12")),
        (
            "no key",
            good.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
        ),
        ("short key", good.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=")),
        (
            "key not base64",
            good.replace("dGhlIHNhbXBsZSBub25jZQ==", "!!!!!!!!!!!!!!!!!!!!!!!!"),
        ),
        ("plain GET", format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")),
        // RFC 9112 §3.2: exactly one Host.
        ("no Host", good.replace(&format!("Host: {}\r\n", server.addr), "")),
        ("two Hosts", good.replace("Host: ", "Host: evil.example\r\nHost: ")),
    ];
    for (name, request) in cases {
        let response = server.raw(request.as_bytes()).await;
        assert!(
            response.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{name}: {response}"
        );
        assert!(!response.contains(&t), "{name}");
    }
    // Several tokens in the Connection list, any case, are fine (Firefox sends "keep-alive, Upgrade").
    let firefox = good
        .replace("Connection: Upgrade", "Connection: keep-alive, upgrade")
        .replace("websocket", "WebSocket");
    assert!(server.raw(firefox.as_bytes()).await.starts_with("HTTP/1.1 101 "));
    // Absolute-form (RFC 9112 §3.2.2): the authority stands in for Host.
    let absolute = good.replacen(&format!("GET {path}"), &format!("GET http://{}{path}", server.addr), 1);
    assert!(server.raw(absolute.as_bytes()).await.starts_with("HTTP/1.1 101 "));
    let health = server.raw(b"GET /healthz HTTP/1.1\r\n\r\n").await;
    assert!(health.starts_with("HTTP/1.1 400 "), "{health}");
    let version = server.raw(good.replace("Version: 13", "Version: 8").as_bytes()).await;
    assert!(version.contains("Sec-WebSocket-Version: 13\r\n"), "{version}");
}

#[tokio::test]
async fn every_carrier_works_end_to_end() {
    let sessions = MemorySessionStore::default();
    sessions.insert("s-erin", Identity::new("erin"));
    let verifier = Verifier::new(vec![key()], Validation::default()).unwrap();
    let server = TestServer::start_with(config(), JwtAuthenticator::with_sessions(verifier, sessions)).await;
    let origin = format!("http://{}", server.addr);

    let bearer = format!("Bearer {}", token("alice"));
    let protocol = format!("chat, bearer.{}", token("bob"));
    let cookie = format!("theme=dark; access_token={}", token("dave"));
    let query_path = format!("/ws/chat/lobby?token={}", token("carol"));
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);
    let cases: [Case; 5] = [
        ("alice", "/ws/chat/lobby", vec![("Authorization", &bearer)]),
        ("bob", "/ws/chat/lobby", vec![("Sec-WebSocket-Protocol", &protocol)]),
        ("carol", &query_path, vec![]),
        ("dave", "/ws/chat/lobby", vec![("Cookie", &cookie), ("Origin", &origin)]),
        (
            "erin",
            "/ws/chat/lobby",
            vec![("Cookie", "sessionid=s-erin"), ("Origin", &origin)],
        ),
    ];
    for (user, path, headers) in cases {
        let (mut client, _) = server
            .connect(path, &headers)
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        let welcome = next_json(&mut client).await;
        assert_eq!(welcome["username"], user);
        assert_eq!(welcome["message"], format!("Welcome, {user}!"));
    }
    assert_eq!(server.metric("wsgate_handshakes_total{result=\"accepted\"}").await, 5.0);
}

#[tokio::test]
async fn the_first_carrier_present_wins() {
    let server = TestServer::start(config()).await;
    let good = token("alice");
    let forged = Key::new(b"not-the-server-secret-0123456789abc")
        .unwrap()
        .sign(&Claims::new("mallory", unix_now() + 60));
    // A bad Authorization header is not rescued by a good query token.
    let response = refused(
        server
            .connect(
                &format!("/ws/chat/lobby?token={good}"),
                &[("Authorization", &format!("Bearer {forged}"))],
            )
            .await,
    );
    assert_eq!(response.status(), 401);
    // A bad subprotocol token is not rescued by a good query token either...
    let offer = format!("chat, bearer.{forged}");
    let response = refused(
        server
            .connect(
                &format!("/ws/chat/lobby?token={good}"),
                &[("Sec-WebSocket-Protocol", &offer)],
            )
            .await,
    );
    assert_eq!(response.status(), 401);
    // ...but a good explicit token beats a bad cookie.
    let origin = format!("http://{}", server.addr);
    let cookie = format!("access_token={forged}");
    let (mut client, _) = server
        .connect(
            "/ws/chat/lobby",
            &[
                ("Authorization", &format!("Bearer {good}")),
                ("Cookie", &cookie),
                ("Origin", &origin),
            ],
        )
        .await
        .unwrap();
    assert_eq!(next_json(&mut client).await["username"], "alice");
    // Two tokens in one carrier are refused rather than guessed between.
    let response = refused(
        server
            .connect(&format!("/ws/chat/lobby?token={good}&token={good}"), &[])
            .await,
    );
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn the_protocol_echoed_is_chat_and_no_header_carries_the_token() {
    let server = TestServer::start(config()).await;
    let t = token("alice");
    let offer = format!("bearer.{t}, chat");
    let (_, response) = server
        .connect("/ws/chat/lobby", &[("Sec-WebSocket-Protocol", &offer)])
        .await
        .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
    for (name, value) in response.headers() {
        assert!(
            !value
                .as_bytes()
                .windows(20)
                .any(|w| t.as_bytes().windows(20).any(|x| x == w)),
            "{name} echoes the token"
        );
    }
    // Offering only the bearer entry: the response has no protocol, so a client (like a
    // browser) that offered one fails the connection.
    let raw = server
        .raw(
            upgrade_request(
                server.addr,
                "/ws/chat/lobby",
                &format!("Sec-WebSocket-Protocol: bearer.{t}\r\n"),
            )
            .as_bytes(),
        )
        .await;
    assert!(
        raw.starts_with("HTTP/1.1 101 ") && !raw.to_ascii_lowercase().contains("sec-websocket-protocol"),
        "{raw}"
    );
    assert!(!raw.contains(&t));
}

#[tokio::test]
async fn rejections_carry_the_right_status_and_challenge() {
    let server = TestServer::start(config()).await;
    let missing = refused(server.connect("/ws/chat/lobby", &[]).await);
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], r#"Bearer realm="wsgate""#);
    assert_eq!(body(&missing), "no credential\n");

    let expired = key().sign(&Claims::new("alice", unix_now() - 3600));
    let response = refused(server.connect(&format!("/ws/chat/lobby?token={expired}"), &[]).await);
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="wsgate", error="invalid_token", error_description="token expired""#
    );
    assert_eq!(body(&response), "token expired\n");
    assert!(!body(&response).contains(&expired));

    let garbage = refused(server.connect("/ws/chat/lobby?token=abc.def.ghi", &[]).await);
    assert_eq!(garbage.status(), 401);
    assert_eq!(
        body(&garbage),
        "malformed token: header is not a JSON object without duplicate names\n"
    );

    let limited = token_for_rooms("alice", &["team-*", "lobby"]);
    let response = refused(server.connect(&format!("/ws/chat/secret?token={limited}"), &[]).await);
    assert_eq!(response.status(), 403);
    assert!(
        server
            .connect(&format!("/ws/chat/team-red?token={limited}"), &[])
            .await
            .is_ok()
    );

    assert_eq!(
        server
            .metric("wsgate_handshakes_total{result=\"unauthenticated\"}")
            .await,
        3.0
    );
    assert_eq!(
        server.metric("wsgate_handshakes_total{result=\"forbidden\"}").await,
        1.0
    );
    assert_eq!(
        server
            .metric("wsgate_handshake_rejections_total{reason=\"expired\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn cookies_need_an_allowed_origin() {
    let server = TestServer::start(config()).await;
    let cookie = format!("access_token={}", token("alice"));
    let same = format!("http://{}", server.addr);
    assert!(
        server
            .connect("/ws/chat/lobby", &[("Cookie", &cookie), ("Origin", &same)])
            .await
            .is_ok()
    );
    let foreign = refused(
        server
            .connect(
                "/ws/chat/lobby",
                &[("Cookie", &cookie), ("Origin", "http://evil.example")],
            )
            .await,
    );
    assert_eq!(foreign.status(), 403);
    let missing = refused(server.connect("/ws/chat/lobby", &[("Cookie", &cookie)]).await);
    assert_eq!(missing.status(), 403);
    // A foreign Origin is refused with any credential; no Origin is fine without cookies.
    let bearer = format!("Bearer {}", token("alice"));
    let response = refused(
        server
            .connect(
                "/ws/chat/lobby",
                &[("Authorization", &bearer), ("Origin", "http://evil.example")],
            )
            .await,
    );
    assert_eq!(response.status(), 403);
    assert!(
        server
            .connect("/ws/chat/lobby", &[("Authorization", &bearer)])
            .await
            .is_ok()
    );

    let listed =
        TestServer::start(config().with(|c| c.origins = OriginPolicy::List(vec!["https://app.example".into()]))).await;
    assert!(
        listed
            .connect(
                "/ws/chat/lobby",
                &[("Cookie", &cookie), ("Origin", "https://app.example")]
            )
            .await
            .is_ok()
    );
    // The server's own origin stays allowed beside the list (its demo page must work).
    let same = format!("http://{}", listed.addr);
    assert!(
        listed
            .connect("/ws/chat/lobby", &[("Cookie", &cookie), ("Origin", &same)])
            .await
            .is_ok()
    );
    // A refusal names the refused Origin and what is allowed, so a typo shows at once.
    let response = refused(
        listed
            .connect(
                "/ws/chat/lobby",
                &[("Cookie", &cookie), ("Origin", "https://app.example.com")],
            )
            .await,
    );
    assert_eq!(response.status(), 403);
    let text = body(&response);
    assert!(
        text.contains(r#"origin "https://app.example.com" not allowed"#) && text.contains("https://app.example"),
        "{text}"
    );
}

#[tokio::test]
async fn reject_with_close_gives_4401_and_4403() {
    let server = TestServer::start(config().with(|c| c.reject_with = RejectMode::Close)).await;
    let bad = Key::new(b"not-the-server-secret-0123456789abc")
        .unwrap()
        .sign(&Claims::new("alice", unix_now() + 60));
    let offer = format!("chat, bearer.{bad}");
    let (mut client, response) = server
        .connect("/ws/chat/lobby", &[("Sec-WebSocket-Protocol", &offer)])
        .await
        .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
    let frame = close_frame(&mut client).await;
    assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4401, "bad signature"));

    let (mut client, _) = server.connect("/ws/chat/lobby", &[]).await.unwrap();
    assert_eq!(u16::from(close_frame(&mut client).await.code), 4401);

    let limited = token_for_rooms("alice", &["lobby"]);
    let (mut client, _) = server
        .connect(&format!("/ws/chat/other?token={limited}"), &[])
        .await
        .unwrap();
    let frame = close_frame(&mut client).await;
    assert_eq!(u16::from(frame.code), 4403);
    assert!(frame.reason.contains("room not allowed"));

    // Origin failures stay HTTP 403 even in close mode.
    let cookie = format!("access_token={}", token("alice"));
    let response = refused(
        server
            .connect(
                "/ws/chat/lobby",
                &[("Cookie", &cookie), ("Origin", "http://evil.example")],
            )
            .await,
    );
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn oversized_heads_are_431() {
    let server = TestServer::start(config()).await;
    let big = upgrade_request(
        server.addr,
        "/ws/chat/lobby",
        &format!("X-Pad: {}\r\n", "a".repeat(16 * 1024)),
    );
    let response = server.raw(big.as_bytes()).await;
    assert!(
        response.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{response}"
    );
    let many: String = (0..70).map(|i| format!("X-H{i}: v\r\n")).collect();
    let response = server
        .raw(upgrade_request(server.addr, "/ws/chat/lobby", &many).as_bytes())
        .await;
    assert!(response.starts_with("HTTP/1.1 431 "), "{response}");
}

#[tokio::test]
async fn a_slowloris_head_is_dropped_while_others_are_served() {
    let server =
        TestServer::start(config().with(|c| c.handshake_timeout = std::time::Duration::from_millis(500))).await;
    let mut slow = within(TcpStream::connect(server.addr)).await.unwrap();
    within(slow.write_all(b"GET /ws/chat/lobby HTTP/1.1\r\nHost: x\r\n"))
        .await
        .unwrap();
    // Served meanwhile.
    let mut client = server.join("lobby", "alice").await;
    send(&mut client, r#"{"message":"still here"}"#).await;
    assert_eq!(next_json(&mut client).await["message"], "still here");
    // The slow one is dropped without an answer once the timeout passes.
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = within(slow.read_to_end(&mut rest)).await;
    assert!(read.is_ok_and(|n| n == 0) || rest.is_empty());
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn bytes_pipelined_after_the_head_are_delivered() {
    let server = TestServer::start(config()).await;
    let mut watcher = server.join("pipe", "watcher").await;
    let mut request = upgrade_request(server.addr, &format!("/ws/chat/pipe?token={}", token("alice")), "").into_bytes();
    request.extend(masked_text_frame(br#"{"message":"sent with the head"}"#));
    let mut stream = within(TcpStream::connect(server.addr)).await.unwrap();
    within(stream.write_all(&request)).await.unwrap();
    assert_eq!(next_json(&mut watcher).await["type"], "join");
    let message = next_json(&mut watcher).await;
    assert_eq!(
        (message["username"].as_str(), message["message"].as_str()),
        (Some("alice"), Some("sent with the head"))
    );
}

fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend(mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[tokio::test]
async fn past_max_connections_is_503() {
    let server = TestServer::start(config().with(|c| c.max_connections = 2)).await;
    let _a = server.join("lobby", "a").await;
    let mut b = server.join("lobby", "b").await;
    let response = refused(
        server
            .connect(&format!("/ws/chat/lobby?token={}", token("c")), &[])
            .await,
    );
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    // Operators can still scrape a full server.
    assert_eq!(
        server.metric("wsgate_handshakes_total{result=\"overloaded\"}").await,
        1.0
    );
    assert!(server.get("/healthz").await.starts_with("HTTP/1.1 200 "));
    // A slot frees when a connection ends.
    within(b.close(None)).await.unwrap();
    while futures_util::StreamExt::next(&mut b).await.is_some() {}
    let mut admitted = None;
    for _ in 0..100 {
        if let Ok(ok) = server
            .connect(&format!("/ws/chat/lobby?token={}", token("c")), &[])
            .await
        {
            admitted = Some(ok);
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(admitted.is_some(), "a freed slot was never reused");
}

#[tokio::test]
async fn tokens_and_queries_never_reach_response_bodies() {
    let server = TestServer::start(config()).await;
    let secret_looking = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.SECRETSECRETSECRET";
    let response = refused(
        server
            .connect(&format!("/ws/chat/lobby?token={secret_looking}"), &[])
            .await,
    );
    assert!(!body(&response).contains("SECRET") && !format!("{:?}", response.headers()).contains("SECRET"));
    let response = refused(
        server
            .connect(
                "/ws/chat/lobby",
                &[("Authorization", &format!("Bearer {secret_looking}"))],
            )
            .await,
    );
    assert!(!body(&response).contains("SECRET") && !format!("{:?}", response.headers()).contains("SECRET"));
}

#[tokio::test]
async fn the_demo_page_is_served_only_when_enabled() {
    let off = TestServer::start(config()).await;
    assert!(off.get("/").await.starts_with("HTTP/1.1 404 "));
    let on = TestServer::start(config().with(|c| c.demo = true)).await;
    let page = on.get("/").await;
    assert!(
        page.starts_with("HTTP/1.1 200 OK\r\n") && page.contains("<title>wsgate demo"),
        "{page}"
    );
    assert!(
        page.contains("Content-Security-Policy: default-src 'none';") && page.contains("Referrer-Policy: no-referrer")
    );
}

#[tokio::test]
async fn dev_tokens_exist_only_in_dev_mode_and_only_for_this_machine() {
    let off = TestServer::start(config()).await;
    assert!(off.get("/dev/token?sub=alice").await.starts_with("HTTP/1.1 404 "));

    let dev = TestServer::start(config().with(|c| c.dev_tokens = true)).await;
    let response = dev.get("/dev/token?sub=al%20ice").await;
    let token = response.split("\r\n\r\n").nth(1).unwrap();
    let verifier = Verifier::new(vec![key()], Validation::default()).unwrap();
    assert_eq!(verifier.verify(token).unwrap().sub, "al ice");
    // A page on a rebound DNS name reaches 127.0.0.1 too, but names itself in Host.
    let rebound = dev
        .raw(b"GET /dev/token?sub=alice HTTP/1.1\r\nHost: attacker.example:8080\r\n\r\n")
        .await;
    assert!(rebound.starts_with("HTTP/1.1 403 "), "{rebound}");
    for host in ["localhost:1", "[::1]:1", "127.0.0.2"] {
        let ok = dev
            .raw(format!("GET /dev/token?sub=a HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .await;
        assert!(ok.starts_with("HTTP/1.1 200 "), "{host}: {ok}");
    }
    assert!(dev.get("/dev/token").await.starts_with("HTTP/1.1 400 "));
    // Refused outright on a non-loopback address.
    let public = config().with(|c| {
        c.dev_tokens = true;
        c.addr = "0.0.0.0:0".parse().unwrap();
    });
    assert!(wsgate::Server::bind(public).await.is_err());
}

#[tokio::test]
async fn metrics_count_exactly_what_happened() {
    let server = TestServer::start(config().with(|c| c.max_connections = 3)).await;
    let m = |sample: &'static str| {
        let server = &server;
        async move { server.metric(sample).await }
    };
    // Three members, then one refused for capacity.
    let mut a = server.join("count", "a").await;
    let mut b = server.join("count", "b").await;
    let mut c = server.join("count", "c").await;
    assert_eq!(
        refused(
            server
                .connect(&format!("/ws/chat/count?token={}", token("d")), &[])
                .await
        )
        .status(),
        503
    );
    // Refusals that do not need a slot... are still refused for capacity first, so close one.
    within(c.close(None)).await.unwrap();
    while futures_util::StreamExt::next(&mut c).await.is_some() {}
    let _ = next_json(&mut a).await; // b joined
    let _ = next_json(&mut a).await; // c joined
    let _ = next_json(&mut b).await; // c joined
    let _ = next_json(&mut a).await; // c left
    let _ = next_json(&mut b).await; // c left
    for _ in 0..100 {
        if m("wsgate_connections_active").await == 2.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(refused(server.connect("/ws/chat/count", &[]).await).status(), 401);
    assert_eq!(
        refused(server.connect("/ws/chat/count?token=x.y.z", &[]).await).status(),
        401
    );
    let limited = token_for_rooms("e", &["other"]);
    assert_eq!(
        refused(server.connect(&format!("/ws/chat/count?token={limited}"), &[]).await).status(),
        403
    );
    assert_eq!(
        refused(
            server
                .connect(&format!("/ws/chat/bad%20room?token={}", token("e")), &[])
                .await
        )
        .status(),
        400
    );
    send(&mut a, r#"{"message":"1"}"#).await;
    send(&mut a, r#"{"message":"2"}"#).await;
    send(&mut a, "not json").await;
    assert_eq!(next_json(&mut b).await["message"], "1");
    assert_eq!(next_json(&mut b).await["message"], "2");
    // The error reply goes straight to the sender, the room's messages through the room: the
    // two streams are each in order but not ordered against each other.
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..3 {
        let got = next_json(&mut a).await;
        seen.push(
            got["message"]
                .as_str()
                .map_or_else(|| got["type"].to_string(), str::to_owned),
        );
    }
    assert_eq!(
        seen.iter().filter(|s| *s != "\"error\"").collect::<Vec<_>>(),
        ["1", "2"]
    );
    assert!(seen.contains(&"\"error\"".to_owned()), "{seen:?}");

    assert_eq!(m("wsgate_handshakes_total{result=\"accepted\"}").await, 3.0);
    assert_eq!(m("wsgate_handshakes_total{result=\"overloaded\"}").await, 1.0);
    assert_eq!(m("wsgate_handshakes_total{result=\"unauthenticated\"}").await, 2.0);
    assert_eq!(m("wsgate_handshakes_total{result=\"forbidden\"}").await, 1.0);
    assert_eq!(m("wsgate_handshakes_total{result=\"bad_request\"}").await, 1.0);
    assert_eq!(
        m("wsgate_handshake_rejections_total{reason=\"missing_credential\"}").await,
        1.0
    );
    assert_eq!(
        m("wsgate_handshake_rejections_total{reason=\"malformed_token\"}").await,
        1.0
    );
    assert_eq!(m("wsgate_messages_received_total").await, 2.0);
    // Events: b joined (to a), c joined (to a, b), c left (to a, b); messages: 2 to each of a, b.
    assert_eq!(m("wsgate_messages_delivered_total").await, 9.0);
    assert_eq!(m("wsgate_messages_lagged_total").await, 0.0);
    assert_eq!(m("wsgate_connections_active").await, 2.0);
    assert_eq!(m("wsgate_rooms_active").await, 1.0);
}
