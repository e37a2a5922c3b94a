//! The authentication decision without sockets: authenticator, sessions, origin policy and
//! room access, and the status each refusal maps to.

use wsgate::auth::{Authenticator, Identity, JwtAuthenticator, MemorySessionStore};
use wsgate::close;
use wsgate::credentials::{Carrier, Credential};
use wsgate::gate::{Admission, Gate};
use wsgate::head::RequestHead;
use wsgate::jwt::{Claims, JwtError, Key, Validation, Verifier, unix_now};
use wsgate::rejection::Rejection;
use wsgate::{Config, OriginPolicy};

const SECRET: &[u8] = b"wsgate-test-secret-0123456789abcdef";

fn head(headers: &[(&str, &str)]) -> RequestHead {
    let mut raw = "GET /ws/chat/lobby HTTP/1.1\r\n".to_owned();
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str("\r\n");
    RequestHead::parse(raw.as_bytes()).unwrap().unwrap().0
}

fn authenticator() -> JwtAuthenticator {
    JwtAuthenticator::new(Verifier::new(vec![Key::new(SECRET).unwrap()], Validation::default()).unwrap())
}

async fn authenticate(auth: &JwtAuthenticator, credential: Credential) -> Result<Identity, Rejection> {
    auth.authenticate(&credential, &head(&[])).await
}

#[tokio::test]
async fn tokens_become_identities() {
    let auth = authenticator();
    let mut claims = Claims::new("alice", unix_now() + 600);
    claims.rooms = Some(vec!["lobby".into(), "team-*".into()]);
    let token = Key::new(SECRET).unwrap().sign(&claims);
    let identity = authenticate(&auth, Credential::new(Carrier::Subprotocol, token))
        .await
        .unwrap();
    assert_eq!(identity.username, "alice");
    assert_eq!(identity.expires_at, Some(claims.exp));
    assert!(identity.may_join("lobby") && identity.may_join("team-red") && identity.may_join("team-"));
    assert!(!identity.may_join("lobby2") && !identity.may_join("team") && !identity.may_join("other"));
}

#[tokio::test]
async fn bad_tokens_are_401_with_a_reason() {
    let auth = authenticator();
    let expired = Key::new(SECRET).unwrap().sign(&Claims::new("alice", unix_now() - 3600));
    let rejection = authenticate(&auth, Credential::new(Carrier::Query, expired))
        .await
        .unwrap_err();
    assert_eq!(rejection, Rejection::InvalidToken(JwtError::Expired));
    assert_eq!(rejection.status(), 401);
    assert_eq!(rejection.close_code(), Some(close::UNAUTHENTICATED));
    assert_eq!(
        rejection.www_authenticate().unwrap(),
        r#"Bearer realm="wsgate", error="invalid_token", error_description="token expired""#
    );
    assert_eq!(rejection.label().as_str(), "expired");
    assert_eq!(
        Rejection::MissingCredential(None).www_authenticate().unwrap(),
        r#"Bearer realm="wsgate""#
    );
    let forged = Key::new(b"some-other-secret-0123456789abcdefgh")
        .unwrap()
        .sign(&Claims::new("alice", unix_now() + 60));
    let rejection = authenticate(&auth, Credential::new(Carrier::Cookie, forged))
        .await
        .unwrap_err();
    assert_eq!(
        (rejection.status().as_u16(), rejection.label().as_str()),
        (401, "bad_signature")
    );
}

#[tokio::test]
async fn sessions_resolve_through_the_store_and_expire() {
    let sessions = MemorySessionStore::default();
    let verifier = Verifier::new(vec![Key::new(SECRET).unwrap()], Validation::default()).unwrap();
    let auth = JwtAuthenticator::with_sessions(verifier, sessions.clone());
    sessions.insert(
        "live",
        Identity {
            expires_at: Some(unix_now() + 60),
            ..Identity::new("carol")
        },
    );
    sessions.insert(
        "dead",
        Identity {
            expires_at: Some(unix_now() - 1),
            ..Identity::new("dave")
        },
    );
    sessions.insert("forever", Identity::new("erin"));

    let session = |id: &str| Credential::new(Carrier::SessionCookie, id);
    assert_eq!(
        auth.authenticate(&session("live"), &head(&[])).await.unwrap().username,
        "carol"
    );
    assert_eq!(
        auth.authenticate(&session("forever"), &head(&[]))
            .await
            .unwrap()
            .username,
        "erin"
    );
    for id in ["dead", "unknown"] {
        let rejection = auth.authenticate(&session(id), &head(&[])).await.unwrap_err();
        assert_eq!(rejection.status(), 401, "{id}");
        assert_eq!(rejection.to_string(), "unknown or expired session");
    }
    assert_eq!(sessions.purge_expired(), 1);
    sessions.remove("live");
    assert!(auth.authenticate(&session("live"), &head(&[])).await.is_err());
}

#[test]
fn same_origin_is_the_default() {
    let policy = OriginPolicy::default();
    let check = |origin: &str, host: &str, carrier| {
        policy
            .check(&head(&[("Origin", origin), ("Host", host)]), Some(carrier))
            .map_err(|r| r.status().as_u16())
    };
    assert_eq!(
        check("http://chat.example:8080", "chat.example:8080", Carrier::Cookie),
        Ok(())
    );
    assert_eq!(check("https://Chat.Example", "chat.example", Carrier::Cookie), Ok(()));
    assert_eq!(check("http://chat.example", "chat.example:80", Carrier::Cookie), Ok(()));
    assert_eq!(
        check("https://chat.example", "chat.example:443", Carrier::SessionCookie),
        Ok(())
    );
    assert_eq!(check("http://evil.example", "chat.example", Carrier::Cookie), Err(403));
    assert_eq!(
        check("http://chat.example:8081", "chat.example:8080", Carrier::Cookie),
        Err(403)
    );
    assert_eq!(
        check("https://chat.example", "chat.example:80", Carrier::Cookie),
        Err(403)
    );
    assert_eq!(check("null", "chat.example", Carrier::Cookie), Err(403));
    assert_eq!(
        check("http://chat.example/path", "chat.example", Carrier::Cookie),
        Err(403)
    );
    assert_eq!(
        check("http://user@chat.example", "chat.example", Carrier::Cookie),
        Err(403)
    );
    // A foreign Origin is refused whatever carries the credential.
    assert_eq!(
        check("http://evil.example", "chat.example", Carrier::AuthorizationHeader),
        Err(403)
    );
}

#[test]
fn missing_origin_passes_unless_the_credential_is_a_cookie() {
    let policy = OriginPolicy::default();
    let no_origin = head(&[("Host", "chat.example")]);
    assert!(policy.check(&no_origin, Some(Carrier::AuthorizationHeader)).is_ok());
    assert!(policy.check(&no_origin, Some(Carrier::Query)).is_ok());
    assert!(policy.check(&no_origin, None).is_ok());
    for carrier in [Carrier::Cookie, Carrier::SessionCookie] {
        let rejection = policy.check(&no_origin, Some(carrier)).unwrap_err();
        // 403, and HTTP even in close mode: no close code.
        assert_eq!((rejection.status().as_u16(), rejection.close_code()), (403, None));
    }
    // Even `*` does not let a cookie through without an Origin.
    assert!(OriginPolicy::Any.check(&no_origin, Some(Carrier::Cookie)).is_err());
    let two = head(&[("Origin", "http://a"), ("Origin", "http://a"), ("Host", "a")]);
    assert!(OriginPolicy::Any.check(&two, None).is_err());
}

#[test]
fn explicit_lists_and_any() {
    let list = OriginPolicy::List(vec!["https://app.example".into(), "http://localhost:3000".into()]);
    let h = |origin: &str| head(&[("Origin", origin), ("Host", "ws.example")]);
    assert!(list.check(&h("https://app.example"), Some(Carrier::Cookie)).is_ok());
    assert!(list.check(&h("HTTPS://APP.EXAMPLE"), Some(Carrier::Cookie)).is_ok());
    assert!(list.check(&h("http://localhost:3000"), Some(Carrier::Query)).is_ok());
    assert!(
        list.check(&h("https://app.example:8443"), Some(Carrier::Cookie))
            .is_err()
    );
    assert!(
        list.check(&h("https://ws.example"), Some(Carrier::Cookie)).is_ok(),
        "a list adds to the same origin: a page the server serves itself is never refused"
    );
    let refused = list
        .check(&h("https://evil.example"), Some(Carrier::Query))
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        r#"forbidden: origin "https://evil.example" not allowed; allowed: the same origin as Host, https://app.example, http://localhost:3000"#
    );
    let any = OriginPolicy::Any;
    assert!(any.check(&h("https://anything.example"), Some(Carrier::Query)).is_ok());
    // `*` never covers cookies: they still need the same origin (or a listed one), so `*`
    // cannot reopen cross-site WebSocket hijacking.
    assert!(
        any.check(&h("https://anything.example"), Some(Carrier::Cookie))
            .is_err()
    );
    assert!(any.check(&h("null"), Some(Carrier::SessionCookie)).is_err());
    assert!(any.check(&h("https://ws.example"), Some(Carrier::Cookie)).is_ok());
}

/// A browser's upgrade request for `room` with `headers` added.
fn upgrade_head(room: &str, headers: &[(&str, &str)]) -> RequestHead {
    let mut raw = format!(
        "GET /ws/chat/{room} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str("\r\n");
    RequestHead::parse(raw.as_bytes()).unwrap().unwrap().0
}

#[tokio::test]
async fn the_whole_decision_for_a_browser_request() {
    // What the server does per request, through the same gate it calls.
    let gate = Gate::new(
        &Config::default(),
        authenticator(),
        wsgate::revocation::Revocations::new(60, 86_400),
    );
    let mut claims = Claims::new("alice", unix_now() + 600);
    claims.rooms = Some(vec!["lobby".into()]);
    let token = Key::new(SECRET).unwrap().sign(&claims);
    let cookie = format!("access_token={token}");
    let browser = |room: &str, origin: &str| {
        upgrade_head(
            room,
            &[("Host", "chat.example"), ("Origin", origin), ("Cookie", &cookie)],
        )
    };
    let admission = gate.admit(&browser("lobby", "https://chat.example")).await.unwrap();
    assert_eq!(admission.identity.username, "alice");
    assert_eq!((admission.room.as_str(), admission.carrier), ("lobby", Carrier::Cookie));
    assert_eq!(admission.upgrade.protocol(), None);

    // Each step refuses in its turn, and an earlier step wins over a later one.
    let status = |result: Result<_, Rejection>| result.map(|_: Admission| ()).unwrap_err().status().as_u16();
    assert_eq!(
        status(gate.admit(&browser("secret-room", "https://chat.example")).await),
        403
    );
    assert_eq!(status(gate.admit(&browser("lobby", "https://evil.example")).await), 403);
    assert_eq!(
        status(gate.admit(&browser("bad*room", "https://evil.example")).await),
        400
    );
    let not_upgrade = head(&[("Host", "chat.example"), ("Cookie", &cookie)]);
    assert_eq!(status(gate.admit(&not_upgrade).await), 400);
    let no_credential = upgrade_head("lobby", &[("Host", "chat.example")]);
    assert_eq!(
        gate.admit(&no_credential).await.unwrap_err(),
        Rejection::MissingCredential(None)
    );
}
