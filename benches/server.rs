//! The server's hot paths without sockets, side by side in one run:
//! - credential extraction from a realistic browser request head;
//! - the whole handshake decision: parse, then `Gate::admit` (route, room, upgrade headers,
//!   origin, credential, token, room authorization);
//! - fan-out of one chat message to 1,000 room members, serialized once and shared (wsgate)
//!   versus serialized per recipient (the typical implementation).
//!
//! Run: `cargo bench --bench server`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tokio::sync::broadcast;
use wsgate::Config;
use wsgate::auth::JwtAuthenticator;
use wsgate::credentials::{Carriers, select_protocol};
use wsgate::gate::Gate;
use wsgate::head::RequestHead;
use wsgate::jwt::{Claims, Key, Validation, Verifier, unix_now};
use wsgate::room::{RoomSettings, Rooms};

const SECRET: &[u8] = b"benchmark-secret-0123456789abcdefghij";

/// What Chromium sends when a page on the same origin opens a WebSocket with the token in
/// the subprotocol list (plus a few unrelated cookies).
fn browser_head(token: &str) -> Vec<u8> {
    format!(
        "GET /ws/chat/lobby HTTP/1.1\r\nHost: chat.example:8080\r\nConnection: Upgrade\r\nPragma: no-cache\r\n\
         Cache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36\r\n\
         Upgrade: websocket\r\nOrigin: http://chat.example:8080\r\nSec-WebSocket-Version: 13\r\n\
         Accept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\n\
         Cookie: theme=dark; _ga=GA1.1.123456789.1700000000; lang=en\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
         Sec-WebSocket-Protocol: chat, bearer.{token}\r\n\r\n"
    )
    .into_bytes()
}

fn token() -> String {
    let mut claims = Claims::new("alice", unix_now() + 3600);
    claims.rooms = Some(vec!["lobby".into(), "team-*".into()]);
    Key::new(SECRET).unwrap().sign(&claims)
}

fn handshake(c: &mut Criterion) {
    let raw = browser_head(&token());
    let (head, _) = RequestHead::parse(&raw).unwrap().unwrap();
    let carriers = Carriers::default();
    let protocols = vec!["chat".to_owned()];
    let auth = JwtAuthenticator::new(Verifier::new(vec![Key::new(SECRET).unwrap()], Validation::default()).unwrap());
    let gate = Gate::new(
        &Config::default(),
        auth,
        wsgate::revocation::Revocations::new(60, 86_400),
    );
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();

    let mut group = c.benchmark_group(format!("handshake_{}_byte_browser_head", raw.len()));
    group.bench_function("parse_head", |b| {
        b.iter(|| RequestHead::parse(black_box(&raw)).unwrap())
    });
    group.bench_function("find_credential_and_protocol", |b| {
        b.iter(|| {
            let credential = carriers.find(black_box(&head)).unwrap().unwrap();
            (credential, select_protocol(&head, &protocols))
        })
    });
    // Everything the server decides from the bytes of a head: parse, then the gate.
    group.bench_function("whole_decision", |b| {
        b.iter(|| {
            let (head, _) = RequestHead::parse(black_box(&raw)).unwrap().unwrap();
            runtime.block_on(gate.admit(&head)).unwrap()
        })
    });
    group.finish();
}

fn fanout(c: &mut Criterion) {
    const MEMBERS: usize = 1000;
    let mut group = c.benchmark_group("fanout_one_message_to_1000_members");

    // wsgate: serialize once (with its seq, under the room's lock), every member gets a
    // reference-counted clone of the same bytes. Once without history, once with the default
    // 100 messages of history (PROTOCOL.md §10): the ring is then 100 long instead of 16.
    for (name, history) in [("wsgate_serialize_once", 0), ("wsgate_serialize_once_history_100", 100)] {
        let settings = RoomSettings {
            buffer: 16,
            history,
            ..RoomSettings::default()
        };
        let rooms = Rooms::new(settings);
        let mut members: Vec<_> = (0..MEMBERS).map(|i| rooms.join("lobby", &format!("m{i}"))).collect();
        let mut taken = Vec::with_capacity(64);
        for m in &mut members {
            // The join events (and the lag they cause in a 16-message room).
            while m.try_take(&mut taken, 64, usize::MAX) > 0 || !taken.is_empty() {
                taken.clear();
            }
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                members[0]
                    .say(black_box("hello, room"))
                    .expect("a 16-message room stays within the share");
                let mut bytes = 0;
                for m in &mut members {
                    m.try_take(&mut taken, 64, usize::MAX);
                    bytes += taken.drain(..).map(|t| t.len()).sum::<usize>();
                }
                bytes
            })
        });
    }

    // Typical: a struct on the channel, each member serializes its own copy.
    #[derive(Clone, serde::Serialize)]
    struct Event {
        r#type: &'static str,
        room: String,
        username: String,
        message: String,
    }
    let (sender, _) = broadcast::channel::<Event>(16);
    let mut receivers: Vec<_> = (0..MEMBERS).map(|_| sender.subscribe()).collect();
    group.bench_function("typical_serialize_per_member", |b| {
        b.iter(|| {
            let event = Event {
                r#type: "message",
                room: "lobby".into(),
                username: "alice".into(),
                message: black_box("hello, room").into(),
            };
            let _ = sender.send(event);
            let mut bytes = 0;
            for r in &mut receivers {
                bytes += serde_json::to_string(&r.try_recv().unwrap()).unwrap().len();
            }
            bytes
        })
    });
    group.finish();
}

criterion_group!(benches, handshake, fanout);
criterion_main!(benches);
