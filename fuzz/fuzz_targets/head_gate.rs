//! The whole handshake decision on hostile bytes: `RequestHead::parse`, then `Gate::admit`
//! with the built-in `JwtAuthenticator`, under three origin policies (same origin, a list,
//! any).
//!
//! The fuzzer cannot forge a signature, so markers in the input are replaced before parsing:
//! - `RTOKEN`: a valid token for `bob` limited to rooms `lobby` and `support-*`;
//! - `TOKEN`: a valid token for `alice`, any room;
//! - `SESSION`: a session id the gates' session store knows (user `carol`).
//!
//! Invariants (a panic is a finding):
//! - parse never panics; a complete head is at most `MAX_HEAD_BYTES` and within the input;
//!   `head.host()`, when `Some`, is non-empty;
//! - admitted: the room passes `room::check_name`, the identity may join it, the echoed
//!   subprotocol is a supported one (`chat`) and never a `bearer.` entry, the username passes
//!   `jwt::check_subject`, the head had exactly one `Host`, and a cookie credential came with
//!   exactly one `Origin`;
//! - refused: the status is 4xx or 5xx; no response header name or value holds CR or LF; the
//!   text (`to_string()`, and the header values that quote it) never holds a marker's secret,
//!   nor more than 16 characters of any `token=` value of the head (raw or percent-decoded).
//!   A suspected echo of a `token=` value is confirmed by running the gate again with that
//!   value's letters and digits rotated: text the server wrote itself stays, an echo changes.
#![no_main]

use std::borrow::Cow;
use std::collections::HashSet;
use std::ops::Range;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;
use wsgate::auth::{Identity, JwtAuthenticator};
use wsgate::credentials::{BEARER_PROTOCOL_PREFIX, Carrier};
use wsgate::gate::Gate;
use wsgate::head::{MAX_HEAD_BYTES, RequestHead};
use wsgate::jwt::{Claims, Key, Validation, Verifier, check_subject};
use wsgate::rejection::Rejection;
use wsgate::room::check_name;
use wsgate::{Config, OriginPolicy};

const SECRET: &[u8] = b"head-gate-fuzz-secret-0123456789abcdefgh";
const SESSION_ID: &str = "s3ss10n-0123456789abcdef-fuzz";
/// "Longer than 16 characters": the shortest echo that counts.
const ECHO_CHARS: usize = 17;

struct Fixture {
    runtime: Runtime,
    /// (policy name, gate), all sharing the key.
    gates: Vec<(&'static str, Gate<JwtAuthenticator>)>,
    token: String,
    room_token: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = Key::new(SECRET).unwrap();
        let token = key.sign(&Claims::new("alice", 4_000_000_000));
        let mut claims = Claims::new("bob", 4_000_000_000);
        claims.rooms = Some(vec!["lobby".into(), "support-*".into()]);
        let room_token = key.sign(&claims);
        let policies = [
            ("same-origin", OriginPolicy::SameOrigin),
            (
                "list",
                OriginPolicy::List(vec!["https://chat.example".into(), "http://localhost:8080".into()]),
            ),
            ("any", OriginPolicy::Any),
        ];
        let gates = policies
            .into_iter()
            .map(|(name, policy)| {
                let verifier = Verifier::new(vec![key.clone()], Validation::default()).unwrap();
                let authenticator = JwtAuthenticator::new(verifier);
                authenticator.sessions().insert(SESSION_ID, Identity::new("carol"));
                let config = Config::default().with(|c| c.origins = policy);
                (name, Gate::new(&config, authenticator))
            })
            .collect();
        Fixture {
            runtime: tokio::runtime::Builder::new_current_thread().build().unwrap(),
            gates,
            token,
            room_token,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let input = replace_all(data, b"RTOKEN", fx.room_token.as_bytes());
    let input = replace_all(&input, b"TOKEN", fx.token.as_bytes());
    let input = replace_all(&input, b"SESSION", SESSION_ID.as_bytes()).into_owned();

    let Ok(Some((head, len))) = RequestHead::parse(&input) else { return };
    assert!(len <= MAX_HEAD_BYTES && len <= input.len());
    if let Some(host) = head.host() {
        assert!(!host.is_empty(), "host() returned Some(\"\")");
    }

    let raw_head = &input[..len];
    let values = token_values(raw_head);
    // The secrets the fixture planted: never echoed, checked without a second run.
    let planted: Vec<&str> = [fx.token.as_str(), fx.room_token.as_str(), SESSION_ID]
        .into_iter()
        .filter(|s| contains(&input, s.as_bytes()))
        .collect();

    for (policy, gate) in &fx.gates {
        match fx.runtime.block_on(gate.admit(&head)) {
            Ok(admission) => {
                assert!(check_name(&admission.room).is_ok(), "[{policy}] admitted a bad room name");
                assert!(admission.identity.may_join(&admission.room), "[{policy}] admitted to a room not allowed");
                if let Some(protocol) = admission.upgrade.protocol() {
                    assert!(
                        !protocol.starts_with(BEARER_PROTOCOL_PREFIX),
                        "[{policy}] echoed a bearer subprotocol"
                    );
                    assert_eq!(protocol, "chat", "[{policy}] echoed an unsupported subprotocol");
                }
                assert!(
                    check_subject(&admission.identity.username).is_ok(),
                    "[{policy}] admitted username {:?} fails check_subject",
                    admission.identity.username
                );
                assert_eq!(head.headers("host").count(), 1, "[{policy}] admitted without exactly one Host");
                if matches!(admission.carrier, Carrier::Cookie | Carrier::SessionCookie) {
                    assert_eq!(
                        head.headers("origin").count(),
                        1,
                        "[{policy}] admitted a cookie credential without exactly one Origin"
                    );
                }
            }
            Err(rejection) => {
                let status = rejection.status().as_u16();
                assert!((400..600).contains(&status), "[{policy}] {rejection:?} has status {status}");
                let texts = texts(&rejection);
                for (name, value) in rejection.headers() {
                    assert!(
                        !name.contains(['\r', '\n']) && !value.contains(['\r', '\n']),
                        "[{policy}] response header {name}: {value:?} holds CR or LF"
                    );
                }
                for secret in &planted {
                    assert!(!texts.iter().any(|t| t.contains(secret)), "[{policy}] rejection text holds a secret");
                    if let Some(w) = shared_window(&texts, secret) {
                        panic!("[{policy}] rejection text {texts:?} echoes {w:?} of a planted secret");
                    }
                }
                for value in values.iter().flat_map(|v| [Some(v.raw.clone()), v.decoded.clone()]).flatten() {
                    let Some(window) = shared_window(&texts, &value) else { continue };
                    // Text the server wrote itself survives rotating the value; an echo does not.
                    let again = rerun_rotated(fx, gate, raw_head, &values);
                    if again.as_ref().is_some_and(|t| t.iter().any(|t| t.contains(window))) {
                        continue;
                    }
                    panic!(
                        "[{policy}] rejection {rejection:?} text {texts:?} echoes {window:?} of token= value {value:?} \
                         (rerun with the value rotated: {again:?})"
                    );
                }
            }
        }
    }
});

/// The client-visible text of a rejection: its `Display` and its header values.
fn texts(rejection: &Rejection) -> Vec<String> {
    let mut texts = vec![rejection.to_string()];
    texts.extend(rejection.headers().into_iter().map(|(_, v)| v));
    texts.extend(rejection.www_authenticate());
    texts
}

/// A window of `ECHO_CHARS` characters of `secret` that occurs in one of `texts`.
fn shared_window<'a>(texts: &[String], secret: &'a str) -> Option<&'a str> {
    let mut windows = HashSet::new();
    for text in texts {
        windows.extend(char_windows(text));
    }
    if windows.is_empty() {
        return None;
    }
    char_windows(secret).find(|w| windows.contains(w))
}

fn char_windows(s: &str) -> impl Iterator<Item = &str> {
    let bounds: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
    (0..bounds.len().saturating_sub(ECHO_CHARS)).map(move |i| &s[bounds[i]..bounds[i + ECHO_CHARS]])
}

/// One `token=` value in the raw head (query, `access_token=` cookie, anything).
struct TokenValue {
    range: Range<usize>,
    raw: String,
    decoded: Option<String>,
}

fn token_values(head: &[u8]) -> Vec<TokenValue> {
    const NAME: &[u8] = b"token=";
    let mut values = Vec::new();
    let mut from = 0;
    while let Some(at) = find(&head[from..], NAME) {
        let start = from + at + NAME.len();
        let end = head[start..]
            .iter()
            .position(|b| b"&; \t\r\n".contains(b))
            .map_or(head.len(), |p| start + p);
        let raw = String::from_utf8_lossy(&head[start..end]).into_owned();
        let decoded = percent_decode(&raw).filter(|d| *d != raw);
        values.push(TokenValue {
            range: start..end,
            raw,
            decoded,
        });
        from = start;
    }
    values
}

/// The texts of the same gate's answer to `head` with every `token=` value's letters and
/// digits rotated (hex digits stay hex digits, so percent-encoding stays well formed).
/// `None`: admitted, or the rotated head did not parse.
fn rerun_rotated(fx: &Fixture, gate: &Gate<JwtAuthenticator>, head: &[u8], values: &[TokenValue]) -> Option<Vec<String>> {
    let mut rotated = head.to_vec();
    for value in values {
        for b in &mut rotated[value.range.clone()] {
            *b = match *b {
                b'f' => b'a',
                b'F' => b'A',
                b'z' => b'g',
                b'Z' => b'G',
                b'9' => b'0',
                b if b.is_ascii_alphanumeric() => b + 1,
                b => b,
            };
        }
    }
    let Ok(Some((head, _))) = RequestHead::parse(&rotated) else { return None };
    fx.runtime.block_on(gate.admit(&head)).err().map(|r| texts(&r))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

fn replace_all<'a>(data: &'a [u8], pattern: &[u8], with: &[u8]) -> Cow<'a, [u8]> {
    let Some(first) = find(data, pattern) else { return Cow::Borrowed(data) };
    let mut out = data[..first].to_vec();
    let mut rest = &data[first..];
    while let Some(at) = find(rest, pattern) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + pattern.len()..];
    }
    out.extend_from_slice(rest);
    Cow::Owned(out)
}
