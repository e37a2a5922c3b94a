//! PROTOCOL.md §10 on one node over real sockets: every message carries `seq`, the welcome
//! `epoch` and `seq`, a reconnecting client resumes with `?since=`, and a member that falls
//! behind the room buffer is served from history.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// Connects to `room` as `user` resuming after `since`; returns the client and its welcome.
async fn resume(server: &TestServer, room: &str, user: &str, since: &str) -> (Client, Value) {
    let path = format!("/ws/chat/{room}?token={}&since={since}", token(user));
    let (mut client, _) = server.connect(&path, &[]).await.unwrap();
    let welcome = next_json(&mut client).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (client, welcome)
}

/// Joins and returns the welcome's `epoch:seq`.
async fn join_at(server: &TestServer, room: &str, user: &str) -> (Client, String) {
    let (mut client, _) = server
        .connect(&format!("/ws/chat/{room}?token={}", token(user)), &[])
        .await
        .unwrap();
    let welcome = next_json(&mut client).await;
    assert!(welcome.get("recovered").is_none(), "{welcome}");
    (
        client,
        format!("{}:{}", welcome["epoch"].as_str().unwrap(), welcome["seq"]),
    )
}

fn seq(message: &Value) -> u64 {
    message["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {message}"))
}

#[tokio::test]
async fn a_client_that_missed_a_few_messages_gets_exactly_those_then_live_ones() {
    let server = TestServer::start(config()).await;
    let (mut bob, _) = join_at(&server, "lobby", "bob").await;
    let (mut alice, at) = join_at(&server, "lobby", "alice").await;
    assert_eq!(next_json(&mut bob).await["type"], "join");
    let epoch = at.split_once(':').unwrap().0.to_owned();
    // Alice has seen everything up to her welcome's seq; then she drops.
    within(alice.close(None)).await.unwrap();
    assert_eq!(next_json(&mut bob).await["type"], "leave");
    for i in 0..5 {
        send(&mut bob, &format!(r#"{{"message":"m{i}"}}"#)).await;
    }
    for _ in 0..5 {
        next_json(&mut bob).await;
    }

    let (mut alice, welcome) = resume(&server, "lobby", "alice", &at).await;
    assert_eq!(welcome["recovered"], true);
    assert_eq!(welcome["epoch"], epoch.as_str());
    let last = welcome["seq"].as_u64().unwrap();
    let (_, seen) = at.split_once(':').unwrap();
    let seen: u64 = seen.parse().unwrap();
    // Her leave, the five messages and her own join, in order, without a gap.
    let mut got = Vec::new();
    for _ in seen + 1..=last {
        got.push(next_json(&mut alice).await);
    }
    assert_eq!(
        got.iter().map(seq).collect::<Vec<_>>(),
        (seen + 1..=last).collect::<Vec<_>>()
    );
    assert_eq!(got[0]["type"], "leave");
    let texts: Vec<&str> = got[1..6].iter().map(|m| m["message"].as_str().unwrap()).collect();
    assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4"]);
    assert_eq!(
        (got[6]["type"].as_str(), got[6]["username"].as_str()),
        (Some("join"), Some("alice"))
    );
    // Then live.
    send(&mut bob, r#"{"message":"live"}"#).await;
    let live = next_json(&mut alice).await;
    assert_eq!((live["message"].as_str(), seq(&live)), (Some("live"), last + 1));
}

#[tokio::test]
async fn too_much_missed_another_epoch_or_an_expired_history_is_not_recovered() {
    let server = TestServer::start(config().with(|c| {
        c.history = 10;
        c.history_ttl = Duration::from_secs(1);
        c.room_buffer = 4;
        c.presence_limit = 0;
    }))
    .await;
    let (mut bob, at) = join_at(&server, "lobby", "bob").await;
    let (epoch, seen) = at.split_once(':').unwrap();
    for i in 0..11 {
        send(&mut bob, &format!(r#"{{"message":"m{i}"}}"#)).await;
        next_json(&mut bob).await;
    }
    // Eleven missed, ten kept.
    let (_, welcome) = resume(&server, "lobby", "alice", &at).await;
    assert_eq!(welcome["recovered"], false);
    assert_eq!(welcome["seq"], 11);
    // Ten missed: recovered.
    let (mut carol, welcome) = resume(&server, "lobby", "carol", &format!("{epoch}:1")).await;
    assert_eq!(welcome["recovered"], true);
    assert_eq!(seq(&next_json(&mut carol).await), 2);
    // Another history's epoch, or a seq the room never reached.
    for since in [format!("other:{seen}"), format!("{epoch}:12")] {
        let (_, welcome) = resume(&server, "lobby", "dave", &since).await;
        assert_eq!(welcome["recovered"], false, "{since}");
    }
    // Past the TTL, history no longer serves even one message, though the buffer holds it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, welcome) = resume(&server, "lobby", "erin", &format!("{epoch}:10")).await;
    assert_eq!(welcome["recovered"], false);
    // Nothing missed still resumes: there is nothing history must hold.
    let (_, welcome) = resume(&server, "lobby", "erin", &format!("{epoch}:11")).await;
    assert_eq!(welcome["recovered"], true);
}

#[tokio::test]
async fn an_empty_room_keeps_its_history_until_the_ttl_then_starts_a_new_epoch() {
    let server = TestServer::start(config().with(|c| c.history_ttl = Duration::from_secs(2))).await;
    let (mut bob, at) = join_at(&server, "quiet", "bob").await;
    send(&mut bob, r#"{"message":"before you came"}"#).await;
    next_json(&mut bob).await;
    within(bob.close(None)).await.unwrap();
    // The room has no member but keeps its history.
    let mut kept = 0.0;
    for _ in 0..100 {
        kept = server.metric("wsgate_rooms_kept").await;
        if kept == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(kept, 1.0);
    let (mut alice, welcome) = resume(&server, "quiet", "alice", &at).await;
    assert_eq!(welcome["recovered"], true);
    assert_eq!(next_json(&mut alice).await["message"], "before you came");
    within(alice.close(None)).await.unwrap();
    // Freed after the TTL: a new epoch, and the old one no longer resumes.
    let mut freed = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if server.metric("wsgate_rooms_kept").await == 0.0 {
            freed = true;
            break;
        }
    }
    assert!(freed, "the kept room was never freed");
    assert_eq!(server.metric("wsgate_queued_bytes").await, 0.0);
    let (_, welcome) = resume(&server, "quiet", "alice", &at).await;
    assert_eq!(welcome["recovered"], false);
    assert_ne!(welcome["epoch"].as_str(), at.split_once(':').map(|(e, _)| e));
}

#[tokio::test]
async fn a_malformed_since_is_a_400_that_says_why() {
    let server = TestServer::start(config()).await;
    for since in [
        "abc",
        "e:",
        ":5",
        "e:-1",
        "e:1x",
        "e:+1",
        "e%3A99999999999999999999",
        "e:1&since=e:2",
        "bad%20epoch:1",
        &format!("{}:1", "e".repeat(65)),
    ] {
        let path = format!("/ws/chat/lobby?token={}&since={since}", token("alice"));
        let response = refused(server.connect(&path, &[]).await);
        assert_eq!(response.status(), 400, "{since}");
        assert!(body(&response).contains("since"), "{since}: {}", body(&response));
    }
    // `:` percent-encoded, as URLSearchParams writes it, is the same value.
    let (_, welcome) = resume(&server, "lobby", "alice", "e%3A0").await;
    assert_eq!(welcome["recovered"], false);
}

#[tokio::test]
async fn resuming_while_a_publisher_sends_at_full_rate_loses_and_repeats_nothing() {
    const TOTAL: usize = 3000;
    let server = TestServer::start(config().with(|c| {
        c.history = 1 << 16;
        c.rate_limit = 1_000_000;
        c.rate_burst = 1_000_000;
        c.presence_limit = 0;
    }))
    .await;
    let (alice, at) = join_at(&server, "busy", "alice").await;
    let mut alice = Some(alice);
    let (publisher, _) = join_at(&server, "busy", "bob").await;
    let publish = publish_in_background(publisher, TOTAL);

    let mut last: u64 = at.split_once(':').unwrap().1.parse().unwrap();
    let epoch = at.split_once(':').unwrap().0.to_owned();
    let mut seqs = Vec::new();
    let mut final_seq = None;
    // Three drops and resumes while the publisher runs, then read to the end.
    for round in 0..4 {
        let mut client = match alice.take() {
            Some(client) => client,
            None => {
                let (client, welcome) = resume(&server, "busy", "alice", &format!("{epoch}:{last}")).await;
                assert_eq!(welcome["recovered"], true, "round {round}");
                client
            }
        };
        loop {
            let message = next_json(&mut client).await;
            let seq = seq(&message);
            seqs.push(seq);
            last = seq;
            if message["message"] == format!("{}", TOTAL - 1) {
                final_seq = Some(seq);
                break;
            }
            if round < 3 && seqs.len() >= (round + 1) * TOTAL / 4 {
                break;
            }
        }
        if final_seq.is_some() {
            break;
        }
        drop(client);
    }
    let first = at.split_once(':').unwrap().1.parse::<u64>().unwrap() + 1;
    let final_seq = final_seq.expect("the last message arrived");
    assert_eq!(seqs, (first..=final_seq).collect::<Vec<_>>());
    let _publisher = within(publish).await.unwrap();
}

/// A member whose socket takes nothing falls behind; with a small room buffer it is served
/// from history when history holds what it missed, and told `lagged` (with the exact number,
/// the gap in `seq`) when it does not.
#[tokio::test]
async fn a_stalled_member_is_served_from_history_and_told_only_what_history_lost() {
    for (history, expect_lagged) in [(400, false), (20, true)] {
        let server = TestServer::start(config().with(|c| {
            c.room_buffer = 8;
            c.history = history;
            c.rate_limit = 1000;
            c.rate_burst = 1000;
        }))
        .await;
        assert_eq!(
            stall_then_read_everything(&server, 30_000).await,
            expect_lagged,
            "history {history}"
        );
    }
}

/// Rooms nobody is in may hold at most half the byte budget: filling many of them and
/// leaving cannot take the buffer (and history) of a room in use.
#[tokio::test]
async fn rooms_kept_for_history_cannot_starve_rooms_in_use() {
    let server = TestServer::start(config().with(|c| {
        c.max_queued_bytes = 1 << 20; // 128 KiB per room, 512 KiB for kept rooms
        c.rate_limit = 1000;
        c.rate_burst = 1000;
        c.user_connect_rate = 1000;
        c.user_connect_burst = 1000;
    }))
    .await;
    let big = format!(r#"{{"message":"{}"}}"#, "x".repeat(30_000));
    // A user of its own per room: one user's share alone would stop at the first room.
    for room in 0..12 {
        let mut filler = server.join(&format!("fill{room}"), &format!("filler{room}")).await;
        for _ in 0..4 {
            send(&mut filler, &big).await;
            next_json(&mut filler).await;
        }
        within(filler.close(None)).await.unwrap();
    }
    let (mut bob, at) = join_at(&server, "live", "bob").await;
    let small = format!(r#"{{"message":"{}"}}"#, "y".repeat(2_000));
    for _ in 0..20 {
        send(&mut bob, &small).await;
        next_json(&mut bob).await;
    }
    let kept = server.metric("wsgate_rooms_kept").await;
    assert!((1.0..12.0).contains(&kept), "{kept} rooms kept");
    let (_, welcome) = resume(&server, "live", "alice", &at).await;
    assert_eq!(welcome["recovered"], true);
}

/// Sends `n` messages of ~60 KB from `sender`, and reads them back from it.
async fn send_large(sender: &mut Client, n: usize) {
    let text = "x".repeat(60_000);
    for _ in 0..n {
        send(sender, &format!(r#"{{"message":"{text}"}}"#)).await;
    }
    for _ in 0..n {
        next_json(sender).await;
    }
}

#[tokio::test]
async fn resumes_replay_at_most_the_users_budget_and_never_part_of_it() {
    // 15 messages of 60 KB are 900 KB: one replay fits in 1 MiB, a second at once does not.
    let server = TestServer::start(config().with(|c| c.max_replay_bytes_per_user = 1 << 20)).await;
    let (mut bob, _) = join_at(&server, "lobby", "bob").await;
    let (mut alice, at) = join_at(&server, "lobby", "alice").await;
    assert_eq!(next_json(&mut bob).await["type"], "join");
    within(alice.close(None)).await.unwrap();
    assert_eq!(next_json(&mut bob).await["type"], "leave");
    send_large(&mut bob, 15).await;

    let (mut first, welcome) = resume(&server, "lobby", "alice", &at).await;
    assert_eq!(welcome["recovered"], true, "{welcome}");
    let replayed = welcome["seq"].as_u64().unwrap() - at.split_once(':').unwrap().1.parse::<u64>().unwrap();
    for _ in 0..replayed {
        next_json(&mut first).await;
    }
    // Another user is not affected by alice's budget.
    let (mut carol, welcome) = resume(&server, "lobby", "carol", &at).await;
    assert_eq!(welcome["recovered"], true, "{welcome}");
    // The same user again, at once: past the budget, so no history at all, and live after.
    let (mut second, welcome) = resume(&server, "lobby", "alice", &at).await;
    assert_eq!(welcome["recovered"], false, "{welcome}");
    send(&mut bob, r#"{"message":"live"}"#).await;
    let next = next_json(&mut second).await;
    assert_eq!(
        (next["type"].as_str(), next["message"].as_str()),
        (Some("message"), Some("live")),
        "a refused resume got history: {next}"
    );
    assert_eq!(next_json(&mut carol).await["type"], "leave");
}

#[tokio::test]
async fn one_user_filling_rooms_costs_other_users_neither_history_nor_messages() {
    // 2 MiB for all rooms, 256 KiB per room and per user: without a share per user, one
    // user's 60 KB messages in 8 rooms would hold the whole budget.
    let server = TestServer::start(config().with(|c| {
        c.max_queued_bytes = 2 << 20;
        c.rate_limit = 1000;
        c.rate_burst = 1000;
    }))
    .await;
    // An honest room: alice talks, carol reads nothing (a slow reader), dave will resume.
    let (mut alice, _) = join_at(&server, "lobby", "alice").await;
    let (carol, _) = join_at(&server, "lobby", "carol").await;
    let (dave, at) = join_at(&server, "lobby", "dave").await;
    drop(dave);
    for i in 0..20 {
        send(&mut alice, &format!(r#"{{"message":"m{i}"}}"#)).await;
    }
    // Mallory fills 8 rooms with 60 KB messages. Her share (256 KiB) is full after four;
    // in the room where they are she goes on at that room's own limit, pushing out her own
    // oldest, but every other room refuses her.
    let big = format!(r#"{{"message":"{}"}}"#, "x".repeat(60_000));
    let mut refused = 0;
    for room in 0..8 {
        let (mut mallory, _) = join_at(&server, &format!("flood{room}"), "mallory").await;
        for _ in 0..8 {
            send(&mut mallory, &big).await;
            let reply = next_json(&mut mallory).await;
            if reply["type"] == "error" {
                assert_eq!(reply["error"], "too much queued for this user");
                refused += 1;
            }
        }
    }
    assert!(refused >= 7 * 8, "mallory was refused only {refused} times");
    // Dave resumes with everything, and carol, who read nothing yet, gets every message.
    let (mut dave, welcome) = resume(&server, "lobby", "dave", &at).await;
    assert_eq!(welcome["recovered"], true, "{welcome}");
    let missed = welcome["seq"].as_u64().unwrap() - at.split_once(':').unwrap().1.parse::<u64>().unwrap();
    for _ in 0..missed {
        next_json(&mut dave).await;
    }
    let mut carol = carol;
    let mut texts = Vec::new();
    while texts.len() < 20 {
        let message = next_json(&mut carol).await;
        assert_ne!(message["type"], "lagged", "{message}");
        if message["type"] == "message" {
            texts.push(message["message"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(texts, (0..20).map(|i| format!("m{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_share_comes_back_when_its_frames_expire_even_if_someone_stays_in_the_room() {
    let server = TestServer::start(config().with(|c| {
        c.max_queued_bytes_per_user = Some(200_000);
        c.history_ttl = Duration::from_secs(1);
    }))
    .await;
    // Mallory sits in the quiet room and does nothing.
    let (_mallory, _) = join_at(&server, "quiet", "mallory").await;
    let (mut honest, _) = join_at(&server, "quiet", "honest").await;
    let big = format!(r#"{{"message":"{}"}}"#, "x".repeat(50_000));
    let mut refused = false;
    for _ in 0..4 {
        send(&mut honest, &big).await;
        refused = next_json(&mut honest).await["type"] == "error";
    }
    assert!(refused, "the fourth 50 KB message should pass a 200 KB share");
    drop(honest);
    // Once those frames are older than the history TTL, the share is back, in any room.
    let (mut honest, _) = join_at(&server, "other", "honest").await;
    let mut accepted = false;
    for _ in 0..25 {
        send(&mut honest, &big).await;
        if next_json(&mut honest).await["type"] == "message" {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        accepted,
        "the share never came back while mallory stayed in the quiet room"
    );
}
