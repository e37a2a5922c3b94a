//! The `wsgate` binary as a user runs it: dev mode, `wsgate token`, configuration errors,
//! options from the environment, SIGTERM, and the server process's memory under a flood with
//! a member that never reads.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{SECRET, WAIT, within};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use wsgate::jwt::{Key, Validation, Verifier};

const BIN: &str = env!("CARGO_BIN_EXE_wsgate");

fn secret() -> String {
    String::from_utf8(SECRET.to_vec()).unwrap()
}

/// The binary with `secret` in `WSGATE_SECRET` (none: unset), and no other `WSGATE_*`
/// variable from the environment the tests run in: every option reads one.
fn wsgate(secret: Option<&str>) -> Command {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("WSGATE_") {
            command.env_remove(name);
        }
    }
    if let Some(secret) = secret {
        command.env("WSGATE_SECRET", secret);
    }
    command.kill_on_drop(true);
    command
}

async fn output(args: &[&str], secret: Option<&str>) -> (i32, String, String) {
    output_with_env(args, secret, &[]).await
}

async fn output_with_env(args: &[&str], secret: Option<&str>, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = wsgate(secret);
    command.args(args).envs(env.iter().copied());
    let out = within(command.output()).await.unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

/// Starts `wsgate serve` on a free port and returns it with the address it printed or logged.
async fn spawn_server(args: &[&str], secret: Option<&str>) -> (Child, String, Vec<String>) {
    let mut command = wsgate(secret);
    command.arg("serve").args(["--addr", "127.0.0.1:0"]).args(args);
    start(command, secret.is_none()).await
}

/// Runs `command` (a `wsgate serve`) until it logs its address and, in dev mode, has printed
/// its banner.
async fn start(mut command: Command, dev_mode: bool) -> (Child, String, Vec<String>) {
    command
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    // The "listening" log line carries the bound address.
    let addr = loop {
        let line = within(stderr.next_line())
            .await
            .unwrap()
            .expect("server exited before listening");
        if let Some(at) = line.find("addr=") {
            break line[at + 5..].split_whitespace().next().unwrap().to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
    let mut stdout_lines = Vec::new();
    if dev_mode {
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        while let Some(line) = within(stdout.next_line()).await.unwrap() {
            let done = line.contains("Stop with Ctrl-C");
            stdout_lines.push(line);
            if done {
                break;
            }
        }
    }
    (child, addr, stdout_lines)
}

#[tokio::test]
async fn dev_mode_prints_a_working_token() {
    let (_child, addr, banner) = spawn_server(&[], None).await;
    let text = banner.join("\n");
    assert!(text.contains("dev mode") && text.contains(&addr), "{text}");
    // The banner's terminal line: `<this binary> connect ws://ADDR/ws/chat/lobby --token JWT`.
    let words: Vec<&str> = banner
        .iter()
        .find(|l| l.contains(" connect ws://") && !l.contains("curl"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!((words[0], words[1], words[3]), (BIN, "connect", "--token"), "{text}");
    assert_eq!(words[2], format!("ws://{addr}/ws/chat/lobby"));
    let url = format!("{}?token={}", words[2], words[4]);
    let (mut client, _) = within(tokio_tungstenite::connect_async(url)).await.unwrap();
    let welcome = within(client.next()).await.unwrap().unwrap();
    assert!(welcome.to_text().unwrap().contains(r#""username":"alice""#));
    within(client.send(Message::text(r#"{"message":"hello"}"#)))
        .await
        .unwrap();
    let echo = within(client.next()).await.unwrap().unwrap();
    assert!(echo.to_text().unwrap().contains(r#""message":"hello""#));
}

#[tokio::test]
async fn dev_mode_refuses_a_public_address() {
    let (code, _, stderr) = output(&["serve", "--addr", "0.0.0.0:0"], None).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("loopback only"), "{stderr}");
}

#[tokio::test]
async fn the_token_command_signs_what_it_is_asked() {
    let (code, stdout, stderr) = output(
        &[
            "token",
            "--sub",
            "alice",
            "--ttl",
            "2h",
            "--rooms",
            "lobby, team-*",
            "--kid",
            "k1",
        ],
        Some(&secret()),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let verifier = Verifier::new(vec![Key::with_kid("k1", SECRET).unwrap()], Validation::default()).unwrap();
    let claims = verifier.verify(stdout.trim()).unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.rooms, Some(vec!["lobby".to_owned(), "team-*".to_owned()]));
    assert!((claims.exp - claims.iat.unwrap() - 7200).abs() <= 1);

    let (code, _, stderr) = output(&["token", "--sub", "alice"], None).await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains("no secret") && stderr.contains("/dev/token?sub="),
        "{stderr}"
    );
    // Rooms are checked before anything is signed.
    for bad in ["bad room", "lob*by", "a,", "x/y"] {
        let (code, _, stderr) = output(&["token", "--sub", "alice", "--rooms", bad], Some(&secret())).await;
        if bad == "a," {
            assert_eq!(code, 0, "a trailing comma is just an empty item: {stderr}");
            continue;
        }
        assert_eq!(code, 2, "{bad}: {stderr}");
        assert!(stderr.contains("not a room name or prefix*"), "{stderr}");
    }
}

#[tokio::test]
async fn bad_configuration_is_one_clear_line_and_a_nonzero_exit() {
    let cases: [(&[&str], Option<&str>, i32, &str); 15] = [
        (&["serve"], Some("too-short"), 2, "at least 32"),
        (&["serve"], Some(""), 2, "set but empty"),
        (&["serve", "--addr", "nonsense"], Some(&secret()), 2, "--addr"),
        (
            &["serve", "--max-connections", "lots"],
            Some(&secret()),
            2,
            "--max-connections",
        ),
        (
            &["serve", "--frobnicate", "1"],
            Some(&secret()),
            2,
            "unexpected argument '--frobnicate'",
        ),
        (
            &["serve", "--max-conections", "5"],
            Some(&secret()),
            2,
            "did you mean --max-connections?",
        ),
        (
            &["serve", "--reject-with", "maybe"],
            Some(&secret()),
            2,
            "[possible values: http, close]",
        ),
        // Today's timers would overflow on it, in every connection: refused at start.
        (
            &["serve", "--ping-interval", "10000000000000000000"],
            Some(&secret()),
            2,
            "too large",
        ),
        (
            &["serve", "--max-message-size", "100000000"],
            Some(&secret()),
            2,
            "too large",
        ),
        // Entries no browser sends as its Origin would lock out the page they name.
        (
            &["serve", "--origins", "app.example"],
            Some(&secret()),
            2,
            r#""app.example" is not scheme://host[:port] (e.g. https://app.example)"#,
        ),
        (
            &["serve", "--origins", "https://app.example/"],
            Some(&secret()),
            2,
            "no path, query or trailing slash",
        ),
        // An old key beside dev mode's random one means the primary secret went missing.
        (
            &["serve", "--extra-key", "k=/etc/hostname"],
            None,
            2,
            "--extra-key needs a primary secret",
        ),
        (
            &["token", "--sub", "alice", "--ttl", "1w"],
            Some(&secret()),
            2,
            "expected a number with ms, s, m, h or d, e.g. 30s",
        ),
        (
            &["serve", "--ping-interval", "60s", "--idle-timeout", "30s"],
            Some(&secret()),
            2,
            "idle timeout",
        ),
        (
            &["serve", "--admin-addr", "127.0.0.1:0"],
            Some(&secret()),
            2,
            "--admin-addr needs a key",
        ),
    ];
    for (args, secret, expected, needle) in cases {
        let (code, _, stderr) = output(args, secret).await;
        assert_eq!(code, expected, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
    // A port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, stderr) = output(&["serve", "--addr", &addr], Some(&secret())).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("cannot listen on") && stderr.contains(&addr),
        "{stderr}"
    );
}

#[tokio::test]
async fn help_lists_every_option() {
    let (code, stdout, _) = output(&["serve", "--help"], None).await;
    assert_eq!(code, 0);
    for flag in [
        "--addr",
        "--secret-file",
        "--origins",
        "--reject-with",
        "--max-connections",
        "--rate-limit",
        "--idle-timeout",
    ] {
        assert!(stdout.contains(flag), "{flag} missing from:\n{stdout}");
    }
}

#[tokio::test]
async fn options_come_from_the_environment_and_a_flag_wins() {
    // WSGATE_ADDR alone sets where the server listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let wanted = format!("127.0.0.1:{port}");
    let mut command = wsgate(Some(&secret()));
    command.arg("serve").env("WSGATE_ADDR", &wanted);
    let (_child, addr, _) = start(command, false).await;
    assert_eq!(addr, wanted);

    // A bad value in a variable stops the server, naming the flag and the variable...
    let (code, _, stderr) = output_with_env(
        &["serve", "--addr", "127.0.0.1:0"],
        Some(&secret()),
        &[("WSGATE_MAX_CONNECTIONS", "lots")],
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--max-connections") && stderr.contains("WSGATE_MAX_CONNECTIONS"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // ...but the flags on the command line win over both variables: the server starts, on the
    // flag's address rather than the variable's unroutable one.
    let mut command = wsgate(Some(&secret()));
    command
        .args(["serve", "--addr", "127.0.0.1:0", "--max-connections", "5"])
        .env("WSGATE_MAX_CONNECTIONS", "lots")
        .env("WSGATE_ADDR", "192.0.2.1:1");
    let (_child, addr, _) = start(command, false).await;
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
}

#[tokio::test]
async fn a_secret_is_the_same_from_a_file_and_from_the_environment() {
    // Editors and `echo` end a secret with a newline; wherever it comes from, it is not part
    // of the secret.
    let path = std::env::temp_dir().join(format!("wsgate-cli-secret-{}", std::process::id()));
    std::fs::write(&path, format!("{}\n", secret())).unwrap();
    let file = path.to_str().unwrap();
    let mut command = wsgate(None);
    command.args(["serve", "--addr", "127.0.0.1:0", "--secret-file", file]);
    let (_child, addr, _) = start(command, false).await;
    let bare = Verifier::new(vec![Key::new(SECRET).unwrap()], Validation::default()).unwrap();
    for ending in ["\n", "\r\n"] {
        let (code, token, stderr) = output(&["token", "--sub", "alice"], Some(&format!("{}{ending}", secret()))).await;
        assert_eq!(code, 0, "{stderr}");
        let token = token.trim();
        assert_eq!(bare.verify(token).unwrap().sub, "alice", "{ending:?}");
        // The server that read the secret from the file takes the token.
        let (mut client, _) = within(tokio_tungstenite::connect_async(format!(
            "ws://{addr}/ws/chat/lobby?token={token}"
        )))
        .await
        .unwrap();
        let welcome = within(client.next()).await.unwrap().unwrap();
        assert!(welcome.to_text().unwrap().contains(r#""username":"alice""#));
    }
    let (code, token, stderr) = output(&["token", "--sub", "bob", "--secret-file", file], None).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(bare.verify(token.trim()).unwrap().sub, "bob");
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn sigterm_closes_connections_with_1001_and_exits_cleanly() {
    let (mut child, addr, _) = spawn_server(&[], Some(&secret())).await;
    let token = common::token("alice");
    let (mut client, _) = within(tokio_tungstenite::connect_async(format!(
        "ws://{addr}/ws/chat/lobby?token={token}"
    )))
    .await
    .unwrap();
    let _welcome = within(client.next()).await;
    let pid = child.id().unwrap().to_string();
    let killed = within(Command::new("kill").args(["-TERM", &pid]).status())
        .await
        .unwrap();
    assert!(killed.success());
    let close = loop {
        match within(client.next()).await {
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close, 1001);
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("did not exit within 5 s")
        .unwrap();
    assert!(status.success(), "{status}");
}

/// An example's binary, which a full `cargo test` builds next to the binaries.
fn example(name: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(BIN).parent().unwrap().join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run the full `cargo test` (it builds the examples)",
        path.display()
    );
    path
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn memory_stays_bounded_while_a_member_never_reads() {
    let args = [
        "--rate-limit",
        "100000",
        "--rate-burst",
        "100000",
        "--room-buffer",
        "16",
    ];
    let (child, addr, _) = spawn_server(&args, Some(&secret())).await;
    let pid = child.id().unwrap();
    let connect = |user: &str| {
        let url = format!("ws://{addr}/ws/chat/flood?token={}", common::token(user));
        async move { within(tokio_tungstenite::connect_async(url)).await.unwrap().0 }
    };
    let _never_reads = connect("slow").await;
    let (mut sink, mut stream) = connect("sender").await.split();
    // The sender reads its own copies in the background; it may lag, but the last message,
    // being the newest, always arrives.
    let reader = tokio::spawn(async move {
        while let Ok(Some(Ok(message))) = tokio::time::timeout(WAIT, stream.next()).await {
            if message.to_text().is_ok_and(|t| t.contains("|last|")) {
                return true;
            }
        }
        false
    });
    let before = rss_kib(pid);
    // 2,000 messages of 32 KiB: 64 MiB through a room whose slowest member takes nothing.
    let filler = "x".repeat(32 * 1024);
    for i in 0..2000 {
        let text = if i == 1999 {
            format!(r#"{{"message":"|last|{filler}"}}"#)
        } else {
            format!(r#"{{"message":"{filler}"}}"#)
        };
        within(sink.send(Message::text(text))).await.unwrap();
    }
    assert!(within(reader).await.unwrap(), "the room stopped flowing");
    let growth_mib = rss_kib(pid).saturating_sub(before) / 1024;
    // Bounded by the room buffer (16 x 32 KiB) plus socket write buffers, not by the 64 MiB sent.
    assert!(growth_mib < 16, "server RSS grew by {growth_mib} MiB");
}

#[tokio::test]
async fn the_client_example_works_against_a_live_server() {
    let (_child, addr, _) = spawn_server(&[], None).await;
    let client = example("client");
    let out = within(
        Command::new(client)
            .arg(format!("ws://{addr}"))
            .env_remove("WSGATE_SECRET")
            .output(),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for carrier in ["authorization", "subprotocol", "query", "cookie"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(carrier))
            .unwrap_or_else(|| panic!("no {carrier} line in {stdout}"));
        assert!(
            line.contains(" ok ") && line.contains(&format!("hello via {carrier}")),
            "{line}"
        );
    }
    let refresh = stdout.lines().find(|l| l.starts_with("refresh")).unwrap();
    assert!(
        refresh.contains(" ok ") && refresh.contains("same connection"),
        "{refresh}"
    );
    // Dev mode answers auth failures with close codes.
    let tampered = stdout.lines().find(|l| l.starts_with("tampered")).unwrap();
    assert!(tampered.contains("refused") && tampered.contains("4401"), "{tampered}");
    // A dropped connection resumes with `since` and gets the three messages it missed.
    let resume = stdout.lines().find(|l| l.starts_with("resume")).unwrap();
    assert!(resume.contains(" ok ") && resume.contains("missed 3"), "{resume}");
}

#[tokio::test]
async fn the_readme_configuration_reference_is_the_real_help() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- serve-help -->\n```text\n")
        .expect("README lost its serve-help block");
    let block = &readme[start..];
    let block = &block[block.find("```text\n").unwrap() + 8..block.find("```\n<!-- /serve-help -->").unwrap()];
    let (code, help, _) = output(&["serve", "--help"], None).await;
    assert_eq!(code, 0);
    assert_eq!(
        block, help,
        "README.md's configuration block differs from `wsgate serve --help`; paste the new help"
    );
}

#[tokio::test]
async fn the_load_generator_runs_against_the_server() {
    // A short, small run of each scenario, so scripts/bench.sh's tools cannot rot unnoticed.
    let (_child, addr, _) = spawn_server(&["--rate-limit", "100000", "--rate-burst", "100000"], Some(&secret())).await;
    let loadgen = example("loadgen");
    let run = |args: &'static [&'static str]| {
        let loadgen = loadgen.clone();
        let url = format!("ws://{addr}");
        async move {
            let out = within(
                Command::new(loadgen)
                    .args(args)
                    .args(["--url", &url, "--json"])
                    .env("WSGATE_SECRET", secret())
                    .output(),
            )
            .await
            .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        }
    };
    let handshake = run(&["handshake", "--conns", "4", "--duration", "1"]).await;
    assert!(
        handshake["accepted"].as_u64().unwrap() > 0 && handshake["errors"] == 0,
        "{handshake}"
    );
    let reject = run(&["reject", "--conns", "4", "--duration", "1"]).await;
    assert!(
        reject["rejected"].as_u64().unwrap() > 0 && reject["errors"] == 0,
        "{reject}"
    );
    let fanout = run(&[
        "fanout",
        "--rooms",
        "2",
        "--subs",
        "20",
        "--rate",
        "0",
        "--duration",
        "1",
    ])
    .await;
    assert!(fanout["received"].as_u64().unwrap() > 0, "{fanout}");
    assert_eq!(
        (fanout["lost"].as_u64(), fanout["errors"].as_u64()),
        (Some(0), Some(0)),
        "{fanout}"
    );
    let idle = run(&["idle", "--conns", "50", "--hold", "1"]).await;
    assert_eq!(idle["errors"], 0, "{idle}");
    // And it refuses to aim anywhere but this machine.
    let out = within(
        Command::new(&loadgen)
            .args(["handshake", "--url", "ws://10.0.0.1:80"])
            .output(),
    )
    .await
    .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

/// Runs `wsgate connect` with `args`, `stdin` typed in, and returns (exit code, stdout, stderr).
async fn connect(args: &[&str], stdin: &str) -> (i32, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut command = wsgate(None);
    command
        .arg("connect")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    within(input.write_all(stdin.as_bytes())).await.unwrap();
    drop(input);
    let out = within(child.wait_with_output()).await.unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

#[tokio::test]
async fn the_terminal_client_chats_over_every_carrier_and_never_shows_the_token() {
    let (_server, addr, _) = spawn_server(&[], Some(&secret())).await;
    let url = format!("ws://{addr}/ws/chat/lobby");
    let token = common::token("alice");
    for carrier in ["header", "subprotocol", "query", "cookie"] {
        let line = format!("hello over {carrier}");
        let (code, stdout, stderr) = connect(&[&url, "--token", &token, "--carrier", carrier, "-v"], &line).await;
        assert_eq!(code, 0, "{carrier}: {stdout}{stderr}");
        assert!(stdout.contains(r#""type":"welcome""#), "{carrier}: {stdout}");
        assert!(
            stdout.contains(&format!(r#""username":"alice","message":"{line}""#)),
            "{carrier}: {stdout}"
        );
        // -v shows the handshake, with the token redacted wherever the carrier put it.
        assert!(
            stderr.contains("> GET /ws/chat/lobby") && stderr.contains("< HTTP/1.1 101"),
            "{stderr}"
        );
        assert!(
            stderr.contains("<token>") || stderr.contains("access_token=<redacted>"),
            "{carrier}: nothing redacted?\n{stderr}"
        );
        assert!(
            !stdout.contains(&token) && !stderr.contains(&token),
            "{carrier}: the token was printed"
        );
    }
}

#[tokio::test]
async fn the_terminal_client_explains_refusals_and_exits_non_zero() {
    let (_server, addr, _) = spawn_server(&[], Some(&secret())).await;
    let url = format!("ws://{addr}/ws/chat/lobby");
    let (code, stdout, _) = connect(&[&url, "--token", "not.a.token"], "").await;
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.contains("refused: HTTP 401"), "{stdout}");
    let limited = common::token_for_rooms("alice", &["other"]);
    let (code, stdout, _) = connect(&[&url, "--token", &limited], "").await;
    assert_eq!(code, 4, "{stdout}");

    // Close mode: the close code, its meaning, and the same exit codes.
    let (_server, addr, _) = spawn_server(&["--reject-with", "close"], Some(&secret())).await;
    let url = format!("ws://{addr}/ws/chat/lobby");
    let (code, stdout, _) = connect(&[&url], "").await;
    assert_eq!(code, 3, "{stdout}");
    assert!(
        stdout.contains("closed 4401") && stdout.contains("get a new token"),
        "{stdout}"
    );
    let (code, stdout, _) = connect(&[&url, "--token", &limited], "").await;
    assert_eq!(code, 4, "{stdout}");
    assert!(
        stdout.contains("closed 4403") && stdout.contains("will not help"),
        "{stdout}"
    );
}

#[tokio::test]
async fn the_embed_example_runs_as_written() {
    // No WSGATE_SECRET: it makes a random one, logs through its own subscriber, and prints a
    // line that connects.
    let mut child = Command::new(example("embed"))
        .env_remove("WSGATE_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = loop {
        let line = within(stdout.next_line()).await.unwrap().expect("embed exited");
        if line.starts_with("try: ") {
            break line;
        }
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let url = format!("{}?token={}", words[5], words[7]);
    let (mut client, _) = within(tokio_tungstenite::connect_async(url)).await.unwrap();
    let welcome = within(client.next()).await.unwrap().unwrap();
    assert!(welcome.to_text().unwrap().contains(r#""type":"welcome""#));
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let logged = within(stderr.next_line()).await.unwrap().unwrap_or_default();
    assert!(
        logged.contains("listening"),
        "the embedded server logged nothing: {logged:?}"
    );
}

#[tokio::test]
async fn the_terminal_client_redacts_every_credential_and_sends_json_lines_as_typed() {
    let (_server, addr, _) = spawn_server(&[], Some(&secret())).await;
    let token = common::token("alice");
    let fresh = common::token("alice");
    // The token in the URL and a cookie given with -H: -v shows neither.
    let url = format!("ws://{addr}/ws/chat/lobby?token={token}");
    let refresh = format!(r#"{{"type":"refresh","token":"{fresh}"}}"#);
    let (code, stdout, stderr) = connect(&[&url, "-H", "Cookie: sessionid=s3cr3t-session", "-v"], &refresh).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    for secret in [token.as_str(), fresh.as_str(), "s3cr3t-session"] {
        assert!(!stderr.contains(secret), "-v printed a credential:\n{stderr}");
    }
    // A JSON line went out as typed: a refresh, never a chat message carrying the token.
    assert!(stdout.contains(r#""type":"refreshed""#), "{stdout}");
    assert!(!stdout.contains(&fresh), "the new token was broadcast: {stdout}");

    // An unset variable (`--token ""`) reaches the server as an empty credential.
    let (code, stdout, _) = connect(&[&format!("ws://{addr}/ws/chat/lobby"), "--token", ""], "").await;
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.contains("unset token variable"), "{stdout}");
}

/// `--tls-cert` is in every build's help (README holds one copy); a build without the `tls`
/// feature refuses it in one line, and a build with it refuses files it cannot serve.
#[tokio::test]
async fn tls_flags_need_the_feature_and_usable_files() {
    let dir = std::env::temp_dir().join(format!("wsgate-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, "not a certificate\n").unwrap();
    let cert = cert.to_str().unwrap();
    let args = ["serve", "--addr", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", cert];
    let (code, _, stderr) = output(&args, Some("0123456789abcdef0123456789abcdef")).await;
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    if cfg!(feature = "tls") {
        assert!(stderr.contains(&format!("certificate {cert}")), "{stderr}");
    } else {
        assert!(stderr.contains("--features tls"), "{stderr}");
    }
    let (code, _, stderr) = output(&["serve", "--tls-cert", cert], None).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("--tls-key"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_terminal_client_exits_when_the_server_ends_the_connection_with_stdin_still_open() {
    let server = common::TestServer::start(common::config()).await;
    let url = format!("ws://{}/ws/chat/lobby", server.addr);
    let token = common::token("alice");
    let mut command = wsgate(None);
    command
        .args(["connect", &url, "--token", &token])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    let _typing = child.stdin.take().unwrap(); // held open, as a terminal would
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(line) = within(lines.next_line()).await.unwrap() {
        if line.contains(r#""type":"welcome""#) {
            break;
        }
    }
    server.handle.revoke_user("alice");
    let status = within(child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(3));
}
