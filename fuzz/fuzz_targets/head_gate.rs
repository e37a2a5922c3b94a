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
//!   client-visible text (`to_string()`, and the header values that quote it) never holds more
//!   than 16 characters of a credential: a marker's secret, or a value in a credential
//!   position (`?token=` raw or percent-decoded, the `access_token`/`sessionid` cookies,
//!   `Authorization: Bearer`, a `bearer.` entry). A suspected echo is confirmed by running the
//!   gate again with those values' letters and digits rotated: text the server wrote itself
//!   (or copied from another header, such as the refused `Origin`) stays; an echo changes.
//!
//! `HEAD_GATE_TRACE=1` prints each gate's answer (for checking seeds and triage).
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
    /// `HEAD_GATE_TRACE=1`: print each gate's answer, to check seeds and triage findings.
    trace: bool,
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
            trace: std::env::var_os("HEAD_GATE_TRACE").is_some(),
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
    let credentials = credential_ranges(raw_head);
    // Every credential value as sent (and percent-decoded, for the query), plus the secrets
    // the fixture planted wherever they landed.
    let mut secrets: Vec<String> = Vec::new();
    for range in &credentials {
        let raw = String::from_utf8_lossy(&raw_head[range.clone()]).into_owned();
        if let Some(decoded) = percent_decode(&raw).filter(|d| *d != raw) {
            secrets.push(decoded);
        }
        secrets.push(raw);
    }
    secrets.extend(
        [fx.token.as_str(), fx.room_token.as_str(), SESSION_ID]
            .into_iter()
            .filter(|s| contains(&input, s.as_bytes()))
            .map(str::to_owned),
    );

    for (policy, gate) in &fx.gates {
        let answer = fx.runtime.block_on(gate.admit(&head));
        if fx.trace {
            match &answer {
                Ok(a) => eprintln!(
                    "[{policy}] admitted {} to {} via {} (protocol {:?})",
                    a.identity.username,
                    a.room,
                    a.carrier,
                    a.upgrade.protocol()
                ),
                Err(r) => eprintln!("[{policy}] {} {r}", r.status().as_u16()),
            }
        }
        match answer {
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
                for (name, value) in rejection.headers() {
                    assert!(
                        !name.contains(['\r', '\n']) && !value.contains(['\r', '\n']),
                        "[{policy}] response header {name}: {value:?} holds CR or LF"
                    );
                }
                let texts = texts(&rejection);
                for secret in &secrets {
                    let Some(window) = shared_window(&texts, secret) else { continue };
                    // Text the server wrote itself, or copied from elsewhere in the request,
                    // survives rotating the credentials; an echo of a credential does not.
                    let again = rerun_rotated(fx, gate, raw_head, &credentials);
                    if again.as_ref().is_some_and(|t| t.iter().any(|t| t.contains(window))) {
                        continue;
                    }
                    panic!(
                        "[{policy}] rejection {rejection:?} text {texts:?} echoes {window:?} of credential {secret:?} \
                         (rerun with credentials rotated: {again:?})"
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

/// The byte ranges of the credential values in a raw head, wherever a carrier may hold one:
/// `token` query parameters (name percent-decoded), `access_token` and `sessionid` cookies,
/// `Authorization: Bearer` values and `bearer.` subprotocol entries.
fn credential_ranges(head: &[u8]) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut lines = Vec::new();
    let mut at = 0;
    while at < head.len() {
        let end = head[at..].iter().position(|&b| b == b'\n').map_or(head.len(), |p| at + p);
        let line_end = if end > at && head[end - 1] == b'\r' { end - 1 } else { end };
        lines.push(at..line_end);
        at = end + 1;
    }
    let mut lines = lines.into_iter().skip_while(|l| l.is_empty());
    if let Some(request_line) = lines.next() {
        let line = &head[request_line.clone()];
        let target_start = line.iter().position(|&b| b == b' ').map_or(line.len(), |p| p + 1);
        let target_end = line[target_start..]
            .iter()
            .position(|&b| b == b' ')
            .map_or(line.len(), |p| target_start + p);
        let target = request_line.start + target_start..request_line.start + target_end;
        if let Some(q) = head[target.clone()].iter().position(|&b| b == b'?') {
            for pair in split(head, target.start + q + 1..target.end, b'&') {
                let eq = head[pair.clone()].iter().position(|&b| b == b'=').map_or(pair.end, |p| pair.start + p);
                let name = String::from_utf8_lossy(&head[pair.start..eq]);
                if percent_decode(&name).as_deref() == Some("token") && eq < pair.end {
                    ranges.push(eq + 1..pair.end);
                }
            }
        }
    }
    for line in lines {
        let Some(colon) = head[line.clone()].iter().position(|&b| b == b':') else { continue };
        let name = String::from_utf8_lossy(&head[line.start..line.start + colon]).to_ascii_lowercase();
        let value = line.start + colon + 1..line.end;
        match name.trim() {
            "cookie" => {
                for pair in split(head, value, b';') {
                    let Some(eq) = head[pair.clone()].iter().position(|&b| b == b'=') else { continue };
                    let name = String::from_utf8_lossy(&head[pair.start..pair.start + eq]);
                    if ["access_token", "sessionid"].contains(&name.trim_matches([' ', '\t'])) {
                        ranges.push(pair.start + eq + 1..pair.end);
                    }
                }
            }
            "authorization" => {
                let text = String::from_utf8_lossy(&head[value.clone()]).into_owned();
                let lead = text.len() - text.trim_start_matches([' ', '\t']).len();
                let rest = &text[lead..];
                if let Some(space) = rest.find([' ', '\t'])
                    && rest[..space].eq_ignore_ascii_case("bearer")
                    && text.len() == value.len()
                {
                    ranges.push(value.start + lead + space + 1..value.end);
                }
            }
            "sec-websocket-protocol" => {
                for entry in split(head, value, b',') {
                    let bytes = &head[entry.clone()];
                    let lead = bytes.iter().take_while(|b| b" \t".contains(b)).count();
                    if bytes[lead..].starts_with(BEARER_PROTOCOL_PREFIX.as_bytes()) {
                        ranges.push(entry.start + lead + BEARER_PROTOCOL_PREFIX.len()..entry.end);
                    }
                }
            }
            _ => {}
        }
    }
    ranges
}

/// `range` of `head` split at `sep`, as ranges.
fn split(head: &[u8], range: Range<usize>, sep: u8) -> Vec<Range<usize>> {
    let mut parts = Vec::new();
    let mut start = range.start;
    for i in range.clone() {
        if head[i] == sep {
            parts.push(start..i);
            start = i + 1;
        }
    }
    parts.push(start..range.end);
    parts
}

/// The texts of the same gate's answer to `head` with every credential value's letters and
/// digits rotated (hex digits stay hex digits, so percent-encoding stays well formed).
/// `None`: admitted, or the rotated head did not parse.
fn rerun_rotated(
    fx: &Fixture,
    gate: &Gate<JwtAuthenticator>,
    head: &[u8],
    credentials: &[Range<usize>],
) -> Option<Vec<String>> {
    let mut rotated = head.to_vec();
    for range in credentials {
        for b in &mut rotated[range.clone()] {
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
