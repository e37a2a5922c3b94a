//! The `wsgate` command line: `wsgate serve` (the default), `wsgate token` and `wsgate connect`.
//!
//! Each command's options are one clap struct: the parser, `--help` and the environment
//! variables (`--max-connections` ↔ `WSGATE_MAX_CONNECTIONS`) all come from it, so the help
//! cannot drift from what is accepted. Everything is checked before the server starts, and a
//! bad value stops it with one line on stderr and exit code 2: a mistyped flag, a duration or
//! size too large to use, an `--origins` entry no browser would send. A bad value found later,
//! inside a connection, would cost every client instead of the one operator.

mod args;
mod connect;
mod secrets;
mod values;

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::FromArgMatches;
use wsgate::auth::{Authenticator, JwtAuthenticator};
use wsgate::jwt::{Claims, Key, Verifier, unix_now};
use wsgate::{Config, RejectMode, Server};

use args::{Cli, Command, ServeArgs, Switch, TokenArgs, command, one_line};
use secrets::{admin_key, key, read_secret, secret};

/// A usage or configuration error: one line for the user, exit code 2.
struct Usage(String);

impl<E: fmt::Display> From<E> for Usage {
    fn from(e: E) -> Usage {
        Usage(e.to_string())
    }
}

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    if args.is_empty() {
        args.push("wsgate".into());
    }
    // `wsgate [OPTIONS]` is `wsgate serve [OPTIONS]`: serving is what the binary is for.
    let serve_by_default = args.get(1).is_none_or(|first| {
        first
            .to_str()
            .is_some_and(|a| a.starts_with('-') && !matches!(a, "-h" | "--help" | "-V" | "--version"))
    });
    if serve_by_default {
        args.insert(1, "serve".into());
    }
    let name = match args[1].to_str() {
        Some("serve") => "wsgate serve",
        Some("token") => "wsgate token",
        Some("connect") => "wsgate connect",
        _ => "wsgate",
    };
    let cli = match command()
        .try_get_matches_from(&args)
        .and_then(|matches| Cli::from_arg_matches(&matches))
    {
        Ok(cli) => cli,
        // `--help` and `--version`: not errors.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{name}: {}", one_line(&e, &args));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Token(args) => token(args),
        Command::Connect(args) => connect::connect(args),
    };
    match result {
        Ok(code) => code,
        Err(Usage(message)) => {
            eprintln!("{name}: {message}");
            ExitCode::from(2)
        }
    }
}

fn serve(args: ServeArgs) -> Result<ExitCode, Usage> {
    let mut config = Config::default();
    config.addr = args.addr;
    let dev_mode = match secret(args.secret_file.as_deref())? {
        Some(secret) => {
            config.keys.push(key(&secret, args.kid.as_deref())?);
            false
        }
        None => {
            // Dev mode's key is random: an old key beside it means a secret went missing.
            if !args.extra_key.is_empty() {
                return Err(Usage(
                    "--extra-key needs a primary secret (--secret-file or WSGATE_SECRET); without one this is dev mode"
                        .to_owned(),
                ));
            }
            if !config.addr.ip().is_loopback() {
                return Err(Usage(format!(
                    "dev mode (no secret given) listens on loopback only; set WSGATE_SECRET or --secret-file to listen on {}",
                    config.addr
                )));
            }
            config.keys.push(key(&random_secret()?, None)?);
            // The demo page, its token helper, and close codes a browser script can read.
            config.demo = true;
            config.dev_tokens = true;
            config.reject_with = RejectMode::Close;
            true
        }
    };
    for extra in &args.extra_key {
        config.keys.push(key(&read_secret(&extra.path)?, Some(&extra.kid))?);
    }
    config.validation.issuer = args.issuer;
    config.validation.audience = args.audience;
    config.validation.leeway = args.leeway.0.as_secs();
    if let Some(origins) = args.origins {
        config.origins = origins;
    }
    if let Some(mode) = args.reject_with {
        config.reject_with = mode.into();
    }
    config.protocols = args.protocols.0;
    config.carriers.jwt_cookie = args.jwt_cookie;
    config.carriers.session_cookie = args.session_cookie;
    config.max_connections = args.max_connections;
    config.max_pending = args.max_pending;
    config.max_connections_per_user = args.max_connections_per_user;
    config.user_connect_rate = args.user_connect_rate;
    config.user_connect_burst = args.user_connect_burst;
    config.write_timeout = args.write_timeout.0;
    config.refresh_window = args.refresh_window.0;
    config.admin_addr = args.admin_addr;
    config.admin_key = admin_key(args.admin_key_file.as_deref(), args.admin_addr.is_some())?;
    config.revocation_ttl = args.revocation_ttl.0;
    config.session_recheck = args.session_recheck.0;
    config.max_queued_bytes = args.max_queued_bytes;
    config.max_queued_bytes_per_user = args.max_queued_bytes_per_user;
    config.presence_limit = args.presence_limit;
    config.history = args.history;
    config.max_replay_bytes_per_user = args.max_replay_bytes_per_user;
    config.history_ttl = args.history_ttl.0;
    config.redis_timeout = args.redis_timeout.0;
    config.control_outbox = args.control_outbox;
    config.max_deciding = args.max_deciding;
    config.handshake_timeout = args.handshake_timeout.0;
    config.max_message_size = args.max_message_size;
    config.rate_limit = args.rate_limit;
    config.rate_burst = args.rate_burst;
    config.ping_interval = args.ping_interval.0;
    config.idle_timeout = args.idle_timeout.0;
    config.room_buffer = args.room_buffer;
    if let Some(demo) = args.demo {
        config.demo = demo == Switch::On;
    }
    let tls_files = tls_files(args.tls_cert, args.tls_key)?;
    #[cfg(feature = "tls")]
    if let Some(files) = &tls_files {
        config.tls = Some(wsgate::tls::Tls::new(wsgate::tls::load(&files.cert, &files.key)?));
    }
    config.validate()?;

    let verifier = Verifier::new(config.keys.clone(), config.validation.clone())?;
    let redis = args.redis;
    if redis.is_none() && args.session_redis_prefix.is_some() {
        return Err(Usage("--session-redis-prefix needs --redis".to_owned()));
    }
    if redis.is_none() && args.redis_ca.is_some() {
        return Err(Usage("--redis-ca needs --redis".to_owned()));
    }
    #[cfg(not(feature = "tls"))]
    if args.redis_ca.is_some() {
        return Err(Usage("--redis-ca needs wsgate built with `--features tls`".to_owned()));
    }
    init_logging();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match redis {
            None => run_server(config, JwtAuthenticator::new(verifier), dev_mode, tls_files).await,
            #[cfg(feature = "redis")]
            Some(url) => {
                let prefix = args.session_redis_prefix.as_deref().unwrap_or("wsgate:session:");
                let ca = match &args.redis_ca {
                    Some(path) => {
                        Some(std::fs::read(path).map_err(|e| Usage(format!("--redis-ca {}: {e}", path.display())))?)
                    }
                    None => None,
                };
                // The URL is not repeated: it may hold a password.
                let sessions = wsgate::cluster::RedisSessionStore::with_ca(&url, prefix, ca.as_deref())
                    .map_err(|e| Usage(format!("--redis: {e}")))?
                    .with_timeout(config.redis_timeout);
                config.redis_url = Some(url);
                config.redis_ca = ca;
                let authenticator = JwtAuthenticator::with_sessions(verifier, sessions);
                run_server(config, authenticator, dev_mode, tls_files).await
            }
            #[cfg(not(feature = "redis"))]
            Some(_) => Err(Usage("--redis needs wsgate built with `--features redis`".to_owned())),
        }
    })
}

async fn run_server<A: Authenticator>(
    config: Config,
    authenticator: A,
    dev_mode: bool,
    tls_files: Option<TlsFiles>,
) -> Result<ExitCode, Usage> {
    let primary = config.keys[0].clone();
    let tls = tls_files.map(|files| {
        let cert = files.cert.display().to_string();
        (serve_tls(&config, files), cert)
    });
    let server = match Server::bind_with(config, authenticator).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("wsgate serve: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if dev_mode {
        print_dev_banner(server.local_addr(), &primary, tls.map(|(_, cert)| cert).as_deref());
    }
    server.run(shutdown_signal()).await;
    Ok(ExitCode::SUCCESS)
}

/// The certificate and key files given with `--tls-cert` and `--tls-key`.
#[derive(Clone)]
struct TlsFiles {
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    cert: PathBuf,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    key: PathBuf,
}

/// Both TLS files or neither (clap already requires them together); an error without the
/// `tls` feature, as `--redis` is without `redis`.
fn tls_files(cert: Option<PathBuf>, key: Option<PathBuf>) -> Result<Option<TlsFiles>, Usage> {
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    if cfg!(not(feature = "tls")) {
        return Err(Usage("--tls-cert needs wsgate built with `--features tls`".to_owned()));
    }
    Ok(Some(TlsFiles { cert, key }))
}

/// Logs which certificate is served, and reloads the files on SIGHUP for as long as the
/// process runs: new handshakes get the new pair, open connections keep theirs, and a pair
/// that does not load is logged and the old one kept. The handler is installed here, before
/// the server listens, so a SIGHUP from then on never kills the process.
#[cfg(feature = "tls")]
fn serve_tls(config: &Config, files: TlsFiles) {
    use tokio::signal::unix::{SignalKind, signal};
    let Some(tls) = config.tls.clone() else { return };
    let not_after = |tls: &wsgate::tls::Tls| tls.not_after().map_or("unknown".to_owned(), |e| e.to_string());
    tracing::info!(cert = %files.cert.display(), not_after = %not_after(&tls), "serving TLS");
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(e) => return tracing::warn!(error = %e, "no SIGHUP handler: the certificate will not be reloaded"),
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            // Off the runtime's workers, and bounded: a file on a stalled mount must not stop
            // the server from serving, nor the next SIGHUP from being heard.
            let (reloading, files_now) = (tls.clone(), files.clone());
            let reload = tokio::task::spawn_blocking(move || reloading.reload(&files_now.cert, &files_now.key));
            match tokio::time::timeout(std::time::Duration::from_secs(10), reload).await {
                Ok(Ok(Ok(_))) => {
                    tracing::info!(cert = %files.cert.display(), not_after = %not_after(&tls), "TLS certificate reloaded")
                }
                Ok(Ok(Err(e))) => {
                    tracing::error!(error = %e, not_after = %not_after(&tls), "TLS reload failed; still serving the previous certificate")
                }
                Ok(Err(_)) | Err(_) => {
                    tracing::error!(not_after = %not_after(&tls), "TLS reload did not finish within 10 s (a file that does not answer?); still serving the previous certificate")
                }
            }
        }
    });
}

#[cfg(not(feature = "tls"))]
fn serve_tls(_: &Config, _: TlsFiles) {}

/// The only place wsgate ever prints a token, and on purpose (PROTOCOL.md §6): dev mode's key is
/// random and dies with the process, and this goes to stdout for the person who started it,
/// never to the logs (stderr), which carry no token or query string anywhere.
fn print_dev_banner(addr: SocketAddr, key: &Key, tls_cert: Option<&str>) {
    let jwt = key.sign(&Claims::new("alice", unix_now() + 3600));
    println!("wsgate dev mode: no secret was given, so a random one was made; its tokens die with this process.");
    println!("Listening on {addr} (loopback only).\n");
    println!("A token for alice, valid for one hour:\n\n  {jwt}\n");
    if let Some(cert) = tls_cert {
        println!("Open the demo page: https://{addr}/ (it connects with wss://)\n");
        println!("Rooms are at wss://{addr}/ws/chat/ROOM; `wsgate connect` speaks ws:// only.\n");
        println!("Health and metrics: curl --cacert {cert} https://{addr}/healthz (and /metrics). Stop with Ctrl-C.");
        return;
    }
    // The path of this very binary, so the lines below run as printed.
    let exe = std::env::current_exe().map_or_else(|_| "wsgate".to_owned(), |p| p.display().to_string());
    println!("Open the demo page: http://{addr}/\n");
    println!("Or chat from a terminal (type lines; Ctrl-D leaves):");
    println!("  {exe} connect ws://{addr}/ws/chat/lobby --token {jwt}\n");
    println!("As another user, with a token from this server:");
    println!("  {exe} connect ws://{addr}/ws/chat/lobby --token \"$(curl -s 'http://{addr}/dev/token?sub=bob')\"\n");
    println!("Health and metrics: curl http://{addr}/healthz, curl http://{addr}/metrics. Stop with Ctrl-C.");
}

fn token(args: TokenArgs) -> Result<ExitCode, Usage> {
    let secret = secret(args.secret_file.as_deref())?.ok_or_else(|| {
        Usage(
            "no secret: set WSGATE_SECRET or --secret-file (a dev-mode server's secret is its own: \
                 curl 'http://127.0.0.1:8080/dev/token?sub=NAME')"
                .to_owned(),
        )
    })?;
    let key = key(&secret, args.kid.as_deref())?;
    let now = unix_now();
    // At most a year (MAX_DURATION), so it fits.
    let ttl = i64::try_from(args.ttl.0.as_secs()).unwrap_or(i64::MAX);
    let mut claims = Claims::new(&args.sub, now.saturating_add(ttl));
    claims.iat = Some(now);
    claims.rooms = args.rooms.map(|rooms| rooms.0);
    claims.iss = args.issuer;
    claims.aud = args.audience.into_iter().collect();
    claims.jti = args.jti;
    println!("{}", key.sign(&claims));
    Ok(ExitCode::SUCCESS)
}

/// 32 random bytes for dev mode, from the operating system.
fn random_secret() -> Result<[u8; 32], Usage> {
    let mut bytes = [0; 32];
    getrandom::fill(&mut bytes).map_err(|e| Usage(format!("no randomness for a dev-mode secret: {e}")))?;
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
