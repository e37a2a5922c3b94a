//! The `wsgate` command line: `wsgate serve` (the default) and `wsgate token`.
//!
//! Flags are one table per command; the parser and `--help` both read it, so the help text
//! cannot drift from what is accepted. No argument-parsing crate: two commands with plain
//! `--flag value` options do not need one.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use wsgate::auth::{Authenticator, JwtAuthenticator, OriginPolicy};
use wsgate::jwt::{Claims, Key, KeyError, Verifier, unix_now};
use wsgate::{Config, RejectMode, Server};

struct Flag {
    name: &'static str,
    value: &'static str,
    help: &'static str,
}

const fn flag(name: &'static str, value: &'static str, help: &'static str) -> Flag {
    Flag { name, value, help }
}

const SERVE_FLAGS: &[Flag] = &[
    flag("addr", "ADDR", "address to listen on [default: 127.0.0.1:8080]"),
    flag(
        "secret-file",
        "PATH",
        "file holding the HS256 secret (>= 32 bytes); or set WSGATE_SECRET. Neither: dev mode",
    ),
    flag(
        "kid",
        "KID",
        "key id of that secret; tokens naming it are checked with it",
    ),
    flag(
        "extra-key",
        "KID=PATH",
        "another key, by key id, still accepted (rotation); repeatable",
    ),
    flag("issuer", "ISS", "require this `iss` claim"),
    flag("audience", "AUD", "require this value in the `aud` claim"),
    flag(
        "leeway",
        "DURATION",
        "clock skew allowed for exp/nbf/iat [default: 30s]",
    ),
    flag(
        "origins",
        "LIST",
        "allowed Origins: comma-separated scheme://host[:port], or * [default: same origin]",
    ),
    flag(
        "reject-with",
        "http|close",
        "answer auth failures with HTTP 401/403, or upgrade and close 4401/4403 [default: http; close in dev mode]",
    ),
    flag(
        "protocols",
        "LIST",
        "subprotocols spoken, in preference order [default: chat]",
    ),
    flag("jwt-cookie", "NAME", "cookie carrying a JWT [default: access_token]"),
    flag(
        "session-cookie",
        "NAME",
        "cookie carrying a session id [default: sessionid]",
    ),
    flag(
        "max-connections",
        "N",
        "open sockets at most; more get 503 [default: 10000]",
    ),
    flag(
        "handshake-timeout",
        "DURATION",
        "time allowed for the request head [default: 10s]",
    ),
    flag(
        "max-message-size",
        "BYTES",
        "largest client message; larger closes with 1009 [default: 65536]",
    ),
    flag("rate-limit", "N", "messages per second per connection [default: 50]"),
    flag("rate-burst", "N", "burst above the rate [default: 100]"),
    flag(
        "ping-interval",
        "DURATION",
        "ping idle connections this often [default: 20s]",
    ),
    flag(
        "idle-timeout",
        "DURATION",
        "close connections silent this long [default: 60s]",
    ),
    flag(
        "room-buffer",
        "N",
        "messages buffered per room for slow members [default: 256]",
    ),
    flag(
        "demo",
        "on|off",
        "serve the demo page at / [default: on in dev mode, else off]",
    ),
    flag(
        "redis",
        "URL",
        "share rooms with every node on this Redis, and read sessions from it (needs --features redis)",
    ),
    flag(
        "session-redis-prefix",
        "PREFIX",
        "Redis key prefix of sessions [default: wsgate:session:]",
    ),
];

const TOKEN_FLAGS: &[Flag] = &[
    flag("sub", "NAME", "the user (required)"),
    flag("ttl", "DURATION", "lifetime [default: 1h]"),
    flag(
        "rooms",
        "LIST",
        "rooms the token may join: names or prefix* [default: any]",
    ),
    flag("kid", "KID", "key id to put in the header"),
    flag("issuer", "ISS", "`iss` claim"),
    flag("audience", "AUD", "`aud` claim"),
    flag(
        "secret-file",
        "PATH",
        "file holding the HS256 secret; or set WSGATE_SECRET",
    ),
];

/// A usage or configuration error: one line for the user, exit code 2.
struct Usage(String);

impl<E: std::fmt::Display> From<E> for Usage {
    fn from(e: E) -> Usage {
        Usage(e.to_string())
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.first().map(String::as_str) {
        Some("serve") => ("serve", &args[1..]),
        Some("token") => ("token", &args[1..]),
        Some("-h" | "--help" | "help") => {
            print!("{}", top_help());
            return ExitCode::SUCCESS;
        }
        Some(other) if !other.starts_with("--") => {
            eprintln!("wsgate: unknown command {other:?}\n\n{}", top_help());
            return ExitCode::from(2);
        }
        _ => ("serve", &args[..]),
    };
    let flags = if command == "serve" { SERVE_FLAGS } else { TOKEN_FLAGS };
    if rest.iter().any(|a| a == "-h" || a == "--help") {
        print!("{}", help(command, flags));
        return ExitCode::SUCCESS;
    }
    let result = parse(rest, flags).and_then(|options| match command {
        "serve" => serve(&options),
        _ => token(&options),
    });
    match result {
        Ok(code) => code,
        Err(Usage(message)) => {
            eprintln!("wsgate {command}: {message}");
            ExitCode::from(2)
        }
    }
}

fn top_help() -> String {
    "wsgate: a WebSocket chat server that authenticates every connection during the handshake\n\n\
     Usage:\n  wsgate [serve] [OPTIONS]   run the server (no secret given: dev mode)\n  \
     wsgate token --sub NAME    print a signed token\n\n\
     Run `wsgate serve --help` or `wsgate token --help` for the options.\n"
        .to_owned()
}

/// The help text of `command`, generated from its flag table.
fn help(command: &str, flags: &[Flag]) -> String {
    let mut out = format!("Usage: wsgate {command} [OPTIONS]\n\nOptions:\n");
    for f in flags {
        let left = format!("--{} {}", f.name, f.value);
        out.push_str(&format!("  {left:<32} {}\n", f.help));
    }
    out.push_str(&format!("  {:<32} {}\n", "-h, --help", "print this help"));
    out.push_str("\nDURATION: a number with s, m, h or d (30s, 10m, 1h); a bare number is seconds.\n");
    out
}

/// `--name value` and `--name=value` pairs, checked against `flags`.
struct Options(Vec<(&'static str, String)>);

impl Options {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    fn parsed<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, Usage> {
        self.get(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| Usage(format!("--{name}: {v:?} is not a valid value")))
            })
            .transpose()
    }

    fn duration(&self, name: &str) -> Result<Option<Duration>, Usage> {
        self.get(name)
            .map(|v| parse_duration(v).ok_or_else(|| Usage(format!("--{name}: {v:?} is not a duration"))))
            .transpose()
    }
}

fn parse(args: &[String], flags: &[Flag]) -> Result<Options, Usage> {
    let mut options = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let Some(body) = arg.strip_prefix("--") else {
            return Err(Usage(format!("unexpected argument {arg:?}")));
        };
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (body, None),
        };
        let flag = flags
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| Usage(format!("unknown option --{name}")))?;
        let value = match inline {
            Some(value) => value,
            None => args
                .next()
                .cloned()
                .ok_or_else(|| Usage(format!("--{name} needs a value ({})", flag.value)))?,
        };
        options.push((flag.name, value));
    }
    Ok(Options(options))
}

fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let seconds = match unit {
        "" | "s" => number,
        "m" => number.checked_mul(60)?,
        "h" => number.checked_mul(3600)?,
        "d" => number.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The configured secret: `--secret-file`, else `WSGATE_SECRET`, else `None`.
fn secret(options: &Options) -> Result<Option<Vec<u8>>, Usage> {
    if let Some(path) = options.get("secret-file") {
        return read_secret(path).map(Some);
    }
    match std::env::var_os("WSGATE_SECRET") {
        // Set but empty is more likely a deploy script that failed to fill it than a wish
        // for dev mode: say so rather than guess.
        Some(s) if s.is_empty() => Err(Usage(
            "WSGATE_SECRET is set but empty; unset it for dev mode".to_owned(),
        )),
        other => Ok(other.map(|s| s.into_encoded_bytes())),
    }
}

fn read_secret(path: &str) -> Result<Vec<u8>, Usage> {
    let mut bytes = std::fs::read(path).map_err(|e| Usage(format!("cannot read secret file {path}: {e}")))?;
    // A trailing newline is an editor's, not part of the secret.
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Ok(bytes)
}

fn key(secret: &[u8], kid: Option<&str>) -> Result<Key, Usage> {
    let key = match kid {
        Some(kid) => Key::with_kid(kid, secret),
        None => Key::new(secret),
    };
    key.map_err(|e| match e {
        KeyError::TooShort { len } => Usage(format!(
            "the secret is {len} bytes; HS256 needs at least 32 (try: openssl rand -hex 32)"
        )),
        other => Usage(other.to_string()),
    })
}

fn serve(options: &Options) -> Result<ExitCode, Usage> {
    let mut config = Config::default();
    if let Some(addr) = options.get("addr") {
        config.addr = addr
            .parse::<SocketAddr>()
            .map_err(|_| Usage(format!("--addr: {addr:?} is not an address like 127.0.0.1:8080")))?;
    }
    let dev_mode = match secret(options)? {
        Some(secret) => {
            config.keys.push(key(&secret, options.get("kid"))?);
            false
        }
        None => {
            if !config.addr.ip().is_loopback() {
                return Err(Usage(format!(
                    "dev mode (no secret given) listens on loopback only; set WSGATE_SECRET or --secret-file to listen on {}",
                    config.addr
                )));
            }
            config.keys.push(Key::new(&random_secret()?)?);
            // The demo page, its token helper, and close codes a browser script can read.
            config.demo = true;
            config.dev_tokens = true;
            config.reject_with = RejectMode::Close;
            true
        }
    };
    for extra in options.all("extra-key") {
        let (kid, path) = extra
            .split_once('=')
            .ok_or_else(|| Usage("--extra-key: expected KID=PATH".to_owned()))?;
        config.keys.push(key(&read_secret(path)?, Some(kid))?);
    }
    config.validation.issuer = options.get("issuer").map(str::to_owned);
    config.validation.audience = options.get("audience").map(str::to_owned);
    if let Some(leeway) = options.duration("leeway")? {
        config.validation.leeway = leeway.as_secs();
    }
    if let Some(origins) = options.get("origins") {
        config.origins = match origins.trim() {
            "*" => OriginPolicy::Any,
            list_value => OriginPolicy::List(list(list_value)),
        };
    }
    if let Some(mode) = options.get("reject-with") {
        config.reject_with = match mode {
            "http" => RejectMode::Http,
            "close" => RejectMode::Close,
            other => return Err(Usage(format!("--reject-with: expected http or close, got {other:?}"))),
        };
    }
    if let Some(protocols) = options.get("protocols") {
        config.protocols = list(protocols);
    }
    if let Some(name) = options.get("jwt-cookie") {
        config.carriers.jwt_cookie = name.to_owned();
    }
    if let Some(name) = options.get("session-cookie") {
        config.carriers.session_cookie = name.to_owned();
    }
    config.max_connections = options.parsed("max-connections")?.unwrap_or(config.max_connections);
    config.handshake_timeout = options
        .duration("handshake-timeout")?
        .unwrap_or(config.handshake_timeout);
    config.max_message_size = options.parsed("max-message-size")?.unwrap_or(config.max_message_size);
    config.rate_limit = options.parsed("rate-limit")?.unwrap_or(config.rate_limit);
    config.rate_burst = options.parsed("rate-burst")?.unwrap_or(config.rate_burst);
    config.ping_interval = options.duration("ping-interval")?.unwrap_or(config.ping_interval);
    config.idle_timeout = options.duration("idle-timeout")?.unwrap_or(config.idle_timeout);
    config.room_buffer = options.parsed("room-buffer")?.unwrap_or(config.room_buffer);
    if let Some(demo) = options.get("demo") {
        config.demo = match demo {
            "on" => true,
            "off" => false,
            other => return Err(Usage(format!("--demo: expected on or off, got {other:?}"))),
        };
    }
    config.validate()?;

    let verifier = Verifier::new(config.keys.clone(), config.validation.clone())?;
    let redis = options.get("redis").map(str::to_owned);
    if redis.is_none() && options.get("session-redis-prefix").is_some() {
        return Err(Usage("--session-redis-prefix needs --redis".to_owned()));
    }
    init_logging();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match redis {
            None => run_server(config, JwtAuthenticator::new(verifier), dev_mode).await,
            #[cfg(feature = "redis")]
            Some(url) => {
                let prefix = options.get("session-redis-prefix").unwrap_or("wsgate:session:");
                let sessions = wsgate::relay::RedisSessionStore::new(&url, prefix)
                    .map_err(|e| Usage(format!("--redis {url:?}: {e}")))?;
                config.redis_url = Some(url);
                run_server(config, JwtAuthenticator::with_sessions(verifier, sessions), dev_mode).await
            }
            #[cfg(not(feature = "redis"))]
            Some(_) => Err(Usage("--redis needs wsgate built with `--features redis`".to_owned())),
        }
    })
}

async fn run_server<A: Authenticator>(config: Config, authenticator: A, dev_mode: bool) -> Result<ExitCode, Usage> {
    let primary = config.keys[0].clone();
    let server = match Server::bind_with(config, authenticator).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("wsgate serve: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if dev_mode {
        print_dev_banner(server.local_addr(), &primary);
    }
    server.run(shutdown_signal()).await;
    Ok(ExitCode::SUCCESS)
}

/// The only place wsgate ever prints a token, and on purpose (SPEC §6): dev mode's key is
/// random and dies with the process, and this goes to stdout for the person who started it,
/// never to the logs (stderr), which carry no token or query string anywhere.
fn print_dev_banner(addr: SocketAddr, key: &Key) {
    let jwt = key.sign(&Claims::new("alice", unix_now() + 3600));
    println!("wsgate dev mode: no secret was given, so a random one was made; its tokens die with this process.");
    println!("Listening on {addr} (loopback only).\n");
    println!("A token for alice, valid for one hour:\n\n  {jwt}\n");
    println!("Open the demo page: http://{addr}/\n");
    println!("Or try:");
    println!("  websocat 'ws://{addr}/ws/chat/lobby?token={jwt}'");
    println!("  curl http://{addr}/healthz");
    println!("  curl http://{addr}/metrics\n");
    println!("Then send {{\"message\":\"hello\"}}. Stop with Ctrl-C.");
}

fn token(options: &Options) -> Result<ExitCode, Usage> {
    let sub = options
        .get("sub")
        .ok_or_else(|| Usage("--sub is required".to_owned()))?;
    let secret = secret(options)?.ok_or_else(|| Usage("no secret: set WSGATE_SECRET or --secret-file".to_owned()))?;
    let key = key(&secret, options.get("kid"))?;
    let ttl = options.duration("ttl")?.unwrap_or(Duration::from_secs(3600));
    let now = unix_now();
    let mut claims = Claims::new(
        sub,
        now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
    );
    claims.iat = Some(now);
    claims.rooms = options.get("rooms").map(list);
    claims.iss = options.get("issuer").map(str::to_owned);
    claims.aud = options.get("audience").map(|a| vec![a.to_owned()]).unwrap_or_default();
    if sub.is_empty() || sub.chars().count() > wsgate::jwt::MAX_SUBJECT_CHARS {
        return Err(Usage("--sub must be 1-128 characters".to_owned()));
    }
    println!("{}", key.sign(&claims));
    Ok(ExitCode::SUCCESS)
}

/// 32 random bytes for dev mode, from the kernel.
fn random_secret() -> Result<Vec<u8>, Usage> {
    use std::io::Read as _;
    let mut bytes = vec![0; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Usage(format!("cannot read /dev/urandom for a dev-mode secret: {e}")))?;
    Ok(bytes)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        // Without signal handlers the process still stops on SIGINT/SIGTERM, just not gracefully.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}
