//! Finding the credential in a request head: every carrier, their order, and list parsing.

use wsgate::credentials::{Carrier, Carriers, CredentialError, select_protocol};
use wsgate::head::{HeadError, MAX_HEAD_BYTES, RequestHead};

fn head(target: &str, headers: &[(&str, &str)]) -> RequestHead {
    let mut raw = format!("GET {target} HTTP/1.1\r\nHost: chat.example\r\n");
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str("\r\n");
    let (head, len) = RequestHead::parse(raw.as_bytes()).unwrap().unwrap();
    assert_eq!(len, raw.len());
    head
}

fn find(target: &str, headers: &[(&str, &str)]) -> Result<Option<(Carrier, String)>, CredentialError> {
    Carriers::default()
        .find(&head(target, headers))
        .map(|c| c.map(|c| (c.carrier(), c.secret().to_owned())))
}

fn found(carrier: Carrier, secret: &str) -> Result<Option<(Carrier, String)>, CredentialError> {
    Ok(Some((carrier, secret.to_owned())))
}

const T: &str = "eyJh.eyJz.c2ln";

#[test]
fn each_carrier_on_its_own() {
    use Carrier::*;
    assert_eq!(
        find("/ws/chat/a", &[("Authorization", &format!("Bearer {T}"))]),
        found(AuthorizationHeader, T)
    );
    assert_eq!(
        find("/ws/chat/a", &[("authorization", &format!("bearer   {T}"))]),
        found(AuthorizationHeader, T)
    );
    assert_eq!(
        find(
            "/ws/chat/a",
            &[("Sec-WebSocket-Protocol", &format!("chat, bearer.{T}"))]
        ),
        found(Subprotocol, T)
    );
    assert_eq!(find(&format!("/ws/chat/a?token={T}"), &[]), found(Query, T));
    assert_eq!(
        find("/ws/chat/a", &[("Cookie", &format!("access_token={T}"))]),
        found(Cookie, T)
    );
    assert_eq!(
        find("/ws/chat/a", &[("Cookie", "sessionid=s3ss10n")]),
        found(SessionCookie, "s3ss10n")
    );
    assert_eq!(find("/ws/chat/a", &[]), Ok(None));
    assert_eq!(find("/ws/chat/a?room=x&tokens=y", &[("Cookie", "other=1")]), Ok(None));
}

#[test]
fn precedence_is_explicit_before_ambient() {
    use Carrier::*;
    let all = [
        ("Cookie", "sessionid=S; access_token=C"),
        ("Sec-WebSocket-Protocol", "chat, bearer.P"),
        ("Authorization", "Bearer A"),
    ];
    assert_eq!(find("/x?token=Q", &all), found(AuthorizationHeader, "A"));
    assert_eq!(find("/x?token=Q", &all[..2]), found(Subprotocol, "P"));
    assert_eq!(find("/x?token=Q", &all[..1]), found(Query, "Q"));
    assert_eq!(find("/x", &all[..1]), found(Cookie, "C"));
    assert_eq!(find("/x", &[("Cookie", "sessionid=S")]), found(SessionCookie, "S"));
    // Another auth scheme (a browser may replay Basic on its own) is not a bearer credential.
    assert_eq!(
        find("/x?token=Q", &[("Authorization", "Basic dXNlcjpwYXNz")]),
        found(Query, "Q")
    );
}

#[test]
fn the_echoed_protocol_is_never_the_bearer_entry() {
    let supported = vec!["chat".to_owned(), "chat.v2".to_owned()];
    let protocol = |value: &str| {
        let h = head("/x", &[("Sec-WebSocket-Protocol", value)]);
        select_protocol(&h, &supported).map(str::to_owned)
    };
    assert_eq!(protocol(&format!("bearer.{T}, chat")), Some("chat".into()));
    // The server's preference order wins over the client's (PROTOCOL.md §2).
    assert_eq!(protocol(&format!("chat.v2,bearer.{T},chat")), Some("chat".into()));
    assert_eq!(protocol(&format!("chat.v2,bearer.{T}")), Some("chat.v2".into()));
    assert_eq!(protocol(&format!("bearer.{T}")), None);
    assert_eq!(protocol("other, bearer.chat"), None);
    assert_eq!(protocol("superchat"), None);
    // Repeated header fields form one list (RFC 6455 §11.3.4).
    let h = head(
        "/x",
        &[
            ("Sec-WebSocket-Protocol", &format!("bearer.{T}")),
            ("Sec-WebSocket-Protocol", " chat "),
        ],
    );
    assert_eq!(select_protocol(&h, &supported), Some("chat"));
    assert_eq!(Carriers::default().find(&h).unwrap().unwrap().secret(), T);
}

#[test]
fn cookies_with_several_pairs_and_odd_spacing() {
    use Carrier::*;
    assert_eq!(
        find("/x", &[("Cookie", &format!("theme=dark;access_token={T};  lang=en"))]),
        found(Cookie, T)
    );
    assert_eq!(
        find("/x", &[("Cookie", &format!("  theme=dark ;\taccess_token = {T} ; x"))]),
        found(Cookie, T)
    );
    assert_eq!(
        find("/x", &[("Cookie", &format!("access_token=\"{T}\""))]),
        found(Cookie, T)
    );
    assert_eq!(
        find("/x", &[("Cookie", "a=1"), ("Cookie", &format!("access_token={T}"))]),
        found(Cookie, T)
    );
    // A name that merely contains ours is not ours; pairs without '=' are skipped.
    assert_eq!(
        find(
            "/x",
            &[("Cookie", "xaccess_token=1; access_tokenx=2; access_token; =v")]
        ),
        Ok(None)
    );
    // An emptied cookie (after a logout) counts as absent, so the session cookie is used.
    assert_eq!(
        find("/x", &[("Cookie", "access_token=; sessionid=S")]),
        found(SessionCookie, "S")
    );
    // Only an emptied cookie: an empty credential, not "none" (PROTOCOL.md §4).
    assert_eq!(
        find("/x", &[("Cookie", "access_token=\"\"")]),
        Err(CredentialError::Empty(Cookie))
    );
    assert_eq!(
        find("/x", &[("Cookie", "sessionid=")]),
        Err(CredentialError::Empty(SessionCookie))
    );
    // Cookie names are configurable.
    let carriers = Carriers {
        jwt_cookie: "jwt".into(),
        session_cookie: "sid".into(),
    };
    let h = head("/x", &[("Cookie", "access_token=X; sid=Y")]);
    let credential = carriers.find(&h).unwrap().unwrap();
    assert_eq!((credential.carrier(), credential.secret()), (SessionCookie, "Y"));
}

#[test]
fn query_tokens_are_percent_decoded_strictly() {
    use Carrier::*;
    assert_eq!(find("/x?room=a&token=eyJh%2EeyJz%2ec2ln&x=1", &[]), found(Query, T));
    assert_eq!(find("/x?%74oken=abc", &[]), found(Query, "abc"));
    assert_eq!(find("/x?token=a+b", &[]), found(Query, "a+b"));
    assert_eq!(find("/x?token=abc%", &[]), Err(CredentialError::BadEncoding));
    assert_eq!(find("/x?token=abc%zz", &[]), Err(CredentialError::BadEncoding));
    assert_eq!(find("/x?token=%ff%fe", &[]), Err(CredentialError::BadEncoding));
}

#[test]
fn ambiguous_or_empty_carriers_are_errors() {
    use Carrier::*;
    use CredentialError::*;
    assert_eq!(
        find("/x", &[("Authorization", "Bearer a"), ("Authorization", "Bearer b")]),
        Err(Ambiguous(AuthorizationHeader))
    );
    assert_eq!(
        find("/x", &[("Authorization", "Bearer")]),
        Err(Empty(AuthorizationHeader))
    );
    assert_eq!(
        find("/x", &[("Sec-WebSocket-Protocol", "bearer.a, bearer.b")]),
        Err(Ambiguous(Subprotocol))
    );
    assert_eq!(
        find("/x", &[("Sec-WebSocket-Protocol", "chat, bearer.")]),
        Err(Empty(Subprotocol))
    );
    assert_eq!(find("/x?token=a&token=b", &[]), Err(Ambiguous(Query)));
    assert_eq!(find("/x?token=", &[]), Err(Empty(Query)));
    assert_eq!(find("/x?token", &[]), Err(Empty(Query)));
    // Empty is a 401 with invalid_token, whatever the carrier (PROTOCOL.md §4).
    for e in [
        Empty(Query),
        Empty(AuthorizationHeader),
        Empty(Subprotocol),
        Empty(Cookie),
    ] {
        let rejection = wsgate::rejection::Rejection::from(e);
        assert_eq!(rejection.status(), 401);
        assert!(
            rejection
                .www_authenticate()
                .unwrap()
                .contains(r#"error="invalid_token""#)
        );
        assert!(rejection.to_string().contains("unset token variable"), "{rejection}");
    }
    assert_eq!(
        find("/x", &[("Cookie", "access_token=a; access_token=b")]),
        Err(Ambiguous(Cookie))
    );
    assert_eq!(
        find("/x", &[("Cookie", "sessionid=a"), ("Cookie", "sessionid=b")]),
        Err(Ambiguous(SessionCookie))
    );
}

#[test]
fn secrets_never_appear_in_debug_or_display() {
    let secret = "eyJTOPSECRET.eyJTOPSECRET.TOPSECRET";
    let cases = [
        head("/x", &[("Authorization", &format!("Bearer {secret}"))]),
        head(&format!("/x?token={secret}"), &[]),
        head("/x", &[("Cookie", &format!("access_token={secret}"))]),
        head("/x", &[("Sec-WebSocket-Protocol", &format!("bearer.{secret}"))]),
    ];
    for h in &cases {
        let credential = Carriers::default().find(h).unwrap().unwrap();
        assert_eq!(credential.secret(), secret);
        assert!(!format!("{credential:?} {h:?}").contains("TOPSECRET"));
    }
    let errors = [
        find(&format!("/x?token={secret}&token={secret}"), &[]).unwrap_err(),
        find(&format!("/x?token={secret}%"), &[]).unwrap_err(),
        find(
            "/x",
            &[
                ("Authorization", &format!("Bearer {secret}")),
                ("Authorization", &format!("Bearer {secret}")),
            ],
        )
        .unwrap_err(),
    ];
    for e in errors {
        assert!(!format!("{e} {e:?}").contains("TOPSECRET"));
        let rejection = wsgate::rejection::Rejection::from(e);
        assert!([400, 401].contains(&rejection.status().as_u16()));
        assert!(!format!("{rejection} {rejection:?}").contains("TOPSECRET"));
    }
}

#[test]
fn request_heads_are_bounded_and_strict() {
    assert_eq!(
        RequestHead::parse(b"GET /x HTTP/1.1\r\nHost: a\r\n")
            .unwrap()
            .map(|_| ()),
        None
    );
    let with_body = b"GET /x HTTP/1.1\r\n\r\nEXTRA";
    assert_eq!(RequestHead::parse(with_body).unwrap().unwrap().1, with_body.len() - 5);
    let big = format!("GET /x HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(MAX_HEAD_BYTES));
    assert_eq!(RequestHead::parse(big.as_bytes()).unwrap_err(), HeadError::TooLarge);
    assert_eq!(
        RequestHead::parse(&big.as_bytes()[..MAX_HEAD_BYTES]).unwrap_err(),
        HeadError::TooLarge
    );
    let many: String = (0..65).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET /x HTTP/1.1\r\n{many}\r\n");
    assert_eq!(RequestHead::parse(many.as_bytes()).unwrap_err(), HeadError::TooLarge);
    let ok: String = (0..64).map(|i| format!("X-{i}: v\r\n")).collect();
    assert!(RequestHead::parse(format!("GET /x HTTP/1.1\r\n{ok}\r\n").as_bytes()).is_ok());
    // Absolute-form (RFC 9112 §3.2.2): the authority stands in for Host.
    let (h, _) = RequestHead::parse(b"GET http://a.example:80/x?q=1 HTTP/1.1\r\nHost: other\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(
        (h.path(), h.query(), h.host()),
        ("/x", Some("q=1"), Some("a.example:80"))
    );
    let no_host = RequestHead::parse(b"GET /x HTTP/1.1\r\n\r\n").unwrap().unwrap().0;
    let two_hosts = RequestHead::parse(b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert_eq!((no_host.host(), two_hosts.unwrap().unwrap().0.host()), (None, None));
    for bad in [
        &b"GET ftp://a/x HTTP/1.1\r\n\r\n"[..],
        b"GET http://u@a/x HTTP/1.1\r\n\r\n",
        b"GET * HTTP/1.1\r\n\r\n",
        b"GET /x HTTP/1.1\r\nBad Header: v\r\n\r\n",
        b"\x00\x01\r\n\r\n",
    ] {
        assert!(matches!(RequestHead::parse(bad), Err(HeadError::Malformed(_))));
    }
    let (h, _) = RequestHead::parse(b"GET /x?q=1 HTTP/1.0\r\nA: 1\r\na: 2\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(!h.is_http11());
    assert_eq!(h.headers("A").collect::<Vec<_>>(), ["1", "2"]);
}

#[test]
fn a_missing_credential_says_what_was_probably_meant() {
    let hint = |headers: &[(&str, &str)]| Carriers::default().missing_hint(&head("/x", headers));
    assert!(hint(&[("Authorization", T)]).unwrap().contains("Bearer scheme"));
    assert!(
        hint(&[("Authorization", &format!("Token {T}"))])
            .unwrap()
            .contains("use Bearer")
    );
    let protocols = [format!("token, {T}"), format!("Authorization, {T}"), T.to_owned()];
    for offered in &protocols {
        let hint = hint(&[("Sec-WebSocket-Protocol", offered)]).unwrap();
        assert!(hint.contains("bearer. prefix"), "{offered}: {hint}");
    }
    // Basic credentials a browser replays, or nothing at all: no hint.
    assert_eq!(hint(&[("Authorization", "Basic dXNlcjpwYXNz")]), None);
    assert_eq!(hint(&[]), None);
    // No hint ever repeats the value.
    for offered in &protocols {
        assert!(!hint(&[("Sec-WebSocket-Protocol", offered)]).unwrap().contains(T));
    }
}
