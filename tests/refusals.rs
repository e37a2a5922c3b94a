//! Refusals a person can act on (PROTOCOL.md §2, §4): what the first mistakes with each
//! carrier get back, over real sockets.

mod common;

use common::*;
use wsgate::RejectMode;

#[tokio::test]
async fn empty_credentials_are_401_invalid_token_and_say_why() {
    let server = TestServer::start(config()).await;
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("/ws/chat/lobby?token=", &[]),
        ("/ws/chat/lobby", &[("Authorization", "Bearer ")]),
        ("/ws/chat/lobby", &[("Sec-WebSocket-Protocol", "chat, bearer.")]),
        ("/ws/chat/lobby", &[("Cookie", "access_token=")]),
    ];
    for (path, headers) in cases {
        let response = refused(server.connect(path, headers).await);
        assert_eq!(response.status(), 401, "{path} {headers:?}");
        let challenge = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains(r#"error="invalid_token""#), "{challenge}");
        assert!(body(&response).contains("unset token variable"), "{}", body(&response));
    }
    assert_eq!(
        server
            .metric(r#"wsgate_handshake_rejections_total{reason="empty_credential"}"#)
            .await,
        4.0
    );

    // In close mode, as every other credential failure: 4401 a script can read.
    let server = TestServer::start(config().with(|c| c.reject_with = RejectMode::Close)).await;
    let (mut client, _) = server.connect("/ws/chat/lobby?token=", &[]).await.unwrap();
    let frame = close_frame(&mut client).await;
    assert_eq!(u16::from(frame.code), 4401);
    assert!(frame.reason.contains("empty credential in query"), "{}", frame.reason);
}

#[tokio::test]
async fn a_credential_in_the_wrong_place_gets_a_hint() {
    let server = TestServer::start(config()).await;
    let t = token("alice");
    let cases = [
        ("Authorization", t.clone(), "Bearer scheme"),
        ("Authorization", format!("Token {t}"), "use Bearer"),
        ("Sec-WebSocket-Protocol", format!("token, {t}"), "bearer. prefix"),
        (
            "Sec-WebSocket-Protocol",
            format!("Authorization, {t}"),
            "bearer. prefix",
        ),
    ];
    for (name, value, hint) in cases {
        let response = refused(server.connect("/ws/chat/lobby", &[(name, &value)]).await);
        assert_eq!(response.status(), 401, "{name}: {value}");
        let text = body(&response);
        assert!(text.starts_with("no credential: ") && text.contains(hint), "{text}");
        assert!(!text.contains(&t), "the token came back: {text}");
        // Still the bare challenge: no credential was sent where one is looked for.
        assert_eq!(response.headers()["www-authenticate"], r#"Bearer realm="wsgate""#);
    }
}

#[tokio::test]
async fn a_bearer_entry_alone_is_accepted_but_counted_and_warned_about() {
    let server = TestServer::start(config()).await;
    let offer = format!("Sec-WebSocket-Protocol: bearer.{}\r\n", token("alice"));
    let response = server
        .raw(upgrade_request(server.addr, "/ws/chat/lobby", &offer).as_bytes())
        .await;
    assert!(response.starts_with("HTTP/1.1 101 "), "{response}");
    assert!(
        !response.to_ascii_lowercase().contains("sec-websocket-protocol"),
        "{response}"
    );
    assert_eq!(server.metric("wsgate_handshakes_without_protocol_total").await, 1.0);
}

#[tokio::test]
async fn the_servers_protocol_preference_wins() {
    let server = TestServer::start(config().with(|c| c.protocols = vec!["v2".into(), "v1".into()])).await;
    let offer = format!("v1, v2, bearer.{}", token("alice"));
    let (_, response) = server
        .connect("/ws/chat/lobby", &[("Sec-WebSocket-Protocol", &offer)])
        .await
        .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "v2");
}
