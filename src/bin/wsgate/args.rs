//! The command line's shape: one clap struct per command, whose fields are the options, their
//! help, their defaults (taken from `Config::default()`, so they cannot drift) and their
//! environment variables.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use wsgate::{Config, OriginPolicy, RejectMode};

use crate::values::{ExtraKey, List, Span, address, extra_key, message_size, origins, rooms, subject, whole};

/// A WebSocket chat server that authenticates every connection during the opening handshake.
#[derive(Parser)]
#[command(
    name = "wsgate",
    version,
    override_usage = "wsgate [serve] [OPTIONS]\n       wsgate token --sub <NAME> [OPTIONS]\n       wsgate connect <URL> [--token <TOKEN>] [--carrier <CARRIER>] [-v]",
    // A fixed width: the help reads the same in any terminal, and README.md holds a copy.
    term_width = 100
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the server (the default command); with no secret given, dev mode
    #[command(after_help = SERVE_NOTES)]
    Serve(Box<ServeArgs>),
    /// Print a token signed with the configured secret
    #[command(after_help = TOKEN_NOTES)]
    Token(TokenArgs),
    /// A terminal client: stdin lines become chat messages, every frame received is printed
    #[command(after_help = CONNECT_NOTES)]
    Connect(ConnectArgs),
}

pub(crate) const CONNECT_NOTES: &str = "\
Each line typed is sent as {\"message\": LINE}; a line that is a JSON object is sent as it is,
e.g. {\"type\":\"refresh\",\"token\":\"NEW-TOKEN\"} to renew the credential without reconnecting.

Exit codes: 0 closed normally (1000, 1001); 3 unauthenticated (401, 4401: get a new token);
4 forbidden (403, 4403: reconnecting will not help); 5 try later (429, 503, 4429); 1 anything
else; 2 usage.

Example: wsgate connect ws://127.0.0.1:8080/ws/chat/lobby --token \"$TOKEN\" --carrier subprotocol -v";

#[derive(Args)]
pub(crate) struct ConnectArgs {
    /// The room's URL, e.g. ws://127.0.0.1:8080/ws/chat/lobby
    #[arg(value_name = "URL")]
    pub url: String,

    /// The token to send (none: see what the server says without one)
    #[arg(long, env = "WSGATE_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Where to put the token: Authorization header, a bearer. subprotocol entry, the query
    /// string, or a cookie (with this server's own Origin, as a page it served would send)
    #[arg(long, value_name = "CARRIER", default_value = "header")]
    pub carrier: Carrier,

    /// Another request header, e.g. -H 'Cookie: sessionid=…' -H 'Origin: https://app.example';
    /// repeatable
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// Print the handshake's request and response heads (the token redacted)
    #[arg(short, long)]
    pub verbose: bool,
}

/// The credential carriers a client can choose (PROTOCOL.md §2).
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Carrier {
    Header,
    Subprotocol,
    Query,
    Cookie,
}

pub(crate) const SERVE_NOTES: &str = "\
DURATION: a number with ms, s, m, h or d (500ms, 30s, 10m, 1h, 2d), at most 365d; a bare number is seconds.

Every option can also be set by an environment variable named after it: --max-connections by
WSGATE_MAX_CONNECTIONS, --addr by WSGATE_ADDR. The option on the command line wins.

TLS (a build with --features tls): a certificate to try it on this machine, valid 30 days (a
P-256 key: a handshake costs the server a quarter of what RSA-2048 costs):
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj /CN=localhost \\
    -addext subjectAltName=IP:127.0.0.1,DNS:localhost -addext basicConstraints=critical,CA:FALSE \\
    -keyout key.pem -out cert.pem
then --tls-cert cert.pem --tls-key key.pem: the demo is at https://127.0.0.1:8080/ (the browser
warns once about the self-signed certificate), rooms at wss://127.0.0.1:8080/ws/chat/ROOM.
kill -HUP reloads both files; a pair that does not load is logged and the old one kept.";

pub(crate) const TOKEN_NOTES: &str = "\
DURATION: a number with ms, s, m, h or d (500ms, 30s, 10m, 1h, 2d), at most 365d; a bare number is seconds.

--secret-file, --kid, --issuer and --audience also read WSGATE_SECRET_FILE, WSGATE_KID,
WSGATE_ISSUER and WSGATE_AUDIENCE, as `wsgate serve` does: in the same environment, the token
is one that server accepts.";

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on
    #[arg(long, env = "WSGATE_ADDR", value_name = "ADDR", value_parser = address,
          default_value_t = Config::default().addr)]
    pub addr: SocketAddr,

    /// File holding the HS256 secret, 32 bytes or more; one trailing newline is not part of
    /// it. Or put the secret itself in WSGATE_SECRET (same rule). Neither: dev mode, loopback only
    #[arg(long, env = "WSGATE_SECRET_FILE", value_name = "PATH")]
    pub secret_file: Option<PathBuf>,

    /// Key id of that secret; tokens naming it in their header are checked with it
    #[arg(long, env = "WSGATE_KID", value_name = "KID")]
    pub kid: Option<String>,

    /// Another key, by key id, still accepted (rotation); needs a primary secret; repeatable
    #[arg(long, env = "WSGATE_EXTRA_KEY", value_name = "KID=PATH", value_parser = extra_key)]
    pub extra_key: Vec<ExtraKey>,

    /// Require this `iss` claim
    #[arg(long, env = "WSGATE_ISSUER", value_name = "ISS")]
    pub issuer: Option<String>,

    /// Require this value in the `aud` claim
    #[arg(long, env = "WSGATE_AUDIENCE", value_name = "AUD")]
    pub audience: Option<String>,

    /// Clock skew allowed for exp, nbf and iat
    #[arg(long, env = "WSGATE_LEEWAY", value_name = "DURATION",
          default_value_t = Span(Duration::from_secs(Config::default().validation.leeway)))]
    pub leeway: Span,

    /// Pages allowed to connect: comma-separated scheme://host[:port] (http or https, no path),
    /// or * for any page; * never covers cookie credentials, which still need the same origin
    /// [default: same origin]
    #[arg(long, env = "WSGATE_ORIGINS", value_name = "LIST", value_parser = origins)]
    pub origins: Option<OriginPolicy>,

    /// Answer auth failures with HTTP 401/403 before the upgrade, or upgrade and close with
    /// 4401/4403, which a browser script can read [default: http; close in dev mode]
    #[arg(
        long,
        env = "WSGATE_REJECT_WITH",
        value_name = "http|close",
        hide_possible_values = true
    )]
    pub reject_with: Option<RejectWith>,

    /// Subprotocols spoken, comma-separated, in preference order
    #[arg(long, env = "WSGATE_PROTOCOLS", value_name = "LIST",
          default_value_t = List(Config::default().protocols))]
    pub protocols: List,

    /// Cookie carrying a JWT
    #[arg(long, env = "WSGATE_JWT_COOKIE", value_name = "NAME",
          default_value_t = Config::default().carriers.jwt_cookie)]
    pub jwt_cookie: String,

    /// Cookie carrying a session id
    #[arg(long, env = "WSGATE_SESSION_COOKIE", value_name = "NAME",
          default_value_t = Config::default().carriers.session_cookie)]
    pub session_cookie: String,

    /// Upgraded connections at most; more get 503
    #[arg(long, env = "WSGATE_MAX_CONNECTIONS", value_name = "N", value_parser = whole::<usize>,
          default_value_t = Config::default().max_connections)]
    pub max_connections: usize,

    /// Sockets not yet admitted at most; when full, a new socket evicts the oldest one still
    /// sending its head (silent sockets cannot lock honest clients out)
    #[arg(long, env = "WSGATE_MAX_PENDING", value_name = "N", value_parser = whole::<usize>,
          default_value_t = Config::default().max_pending)]
    pub max_pending: usize,

    /// Open connections per user (token `sub`) on this node; more get 429
    #[arg(long, env = "WSGATE_MAX_CONNECTIONS_PER_USER", value_name = "N", value_parser = whole::<usize>,
          default_value_t = Config::default().max_connections_per_user)]
    pub max_connections_per_user: usize,

    /// Connects per second per user on this node, on average; more get 429
    #[arg(long, env = "WSGATE_USER_CONNECT_RATE", value_name = "N", value_parser = whole::<u32>,
          default_value_t = Config::default().user_connect_rate)]
    pub user_connect_rate: u32,

    /// Connects per user in a burst above that rate
    #[arg(long, env = "WSGATE_USER_CONNECT_BURST", value_name = "N", value_parser = whole::<u32>,
          default_value_t = Config::default().user_connect_burst)]
    pub user_connect_burst: u32,

    /// Time a client has to send its request head and be decided; else it is dropped (slowloris)
    #[arg(long, env = "WSGATE_HANDSHAKE_TIMEOUT", value_name = "DURATION",
          default_value_t = Span(Config::default().handshake_timeout))]
    pub handshake_timeout: Span,

    /// Largest client message in bytes, at most 64 MiB; larger closes with 1009
    #[arg(long, env = "WSGATE_MAX_MESSAGE_SIZE", value_name = "BYTES", value_parser = message_size,
          default_value_t = Config::default().max_message_size)]
    pub max_message_size: usize,

    /// Messages per second per connection, on average
    #[arg(long, env = "WSGATE_RATE_LIMIT", value_name = "N", value_parser = whole::<u32>,
          default_value_t = Config::default().rate_limit)]
    pub rate_limit: u32,

    /// Messages a connection may send in a burst above the rate
    #[arg(long, env = "WSGATE_RATE_BURST", value_name = "N", value_parser = whole::<u32>,
          default_value_t = Config::default().rate_burst)]
    pub rate_burst: u32,

    /// Send `expiring` this long before a connection's token expires, so it can refresh
    #[arg(long, env = "WSGATE_REFRESH_WINDOW", value_name = "DURATION",
          default_value_t = Span(Config::default().refresh_window))]
    pub refresh_window: Span,

    /// How long a revocation of a user or a session lasts (a token's, until its exp)
    #[arg(long, env = "WSGATE_REVOCATION_TTL", value_name = "DURATION",
          default_value_t = Span(Config::default().revocation_ttl))]
    pub revocation_ttl: Span,

    /// Re-check the session of session-cookie connections this often; gone: close 4401
    #[arg(long, env = "WSGATE_SESSION_RECHECK", value_name = "DURATION",
          default_value_t = Span(Config::default().session_recheck))]
    pub session_recheck: Span,

    /// Close a connection that takes none of our writes this long, with 1008
    #[arg(long, env = "WSGATE_WRITE_TIMEOUT", value_name = "DURATION",
          default_value_t = Span(Config::default().write_timeout))]
    pub write_timeout: Span,

    /// Ping idle connections this often
    #[arg(long, env = "WSGATE_PING_INTERVAL", value_name = "DURATION",
          default_value_t = Span(Config::default().ping_interval))]
    pub ping_interval: Span,

    /// Close connections silent this long, pongs included; longer than the ping interval
    #[arg(long, env = "WSGATE_IDLE_TIMEOUT", value_name = "DURATION",
          default_value_t = Span(Config::default().idle_timeout))]
    pub idle_timeout: Span,

    /// Messages a room buffers for its slowest member, 1 to 65536
    #[arg(long, env = "WSGATE_ROOM_BUFFER", value_name = "N", value_parser = whole::<usize>,
          default_value_t = Config::default().room_buffer)]
    pub room_buffer: usize,

    /// Bytes of messages all rooms may hold for slow members; one room an eighth of it
    #[arg(long, env = "WSGATE_MAX_QUEUED_BYTES", value_name = "BYTES", value_parser = whole::<usize>,
          default_value_t = Config::default().max_queued_bytes)]
    pub max_queued_bytes: usize,

    /// Bytes one user's messages may hold in rooms; past it they are refused [default: an eighth of --max-queued-bytes]
    #[arg(long, env = "WSGATE_MAX_QUEUED_BYTES_PER_USER", value_name = "BYTES", value_parser = whole::<usize>)]
    pub max_queued_bytes_per_user: Option<usize>,

    /// Above this many members a room stops announcing join and leave
    #[arg(long, env = "WSGATE_PRESENCE_LIMIT", value_name = "N", value_parser = whole::<usize>,
          default_value_t = Config::default().presence_limit)]
    pub presence_limit: usize,

    /// Messages a room keeps for clients that resume with ?since=, 0 (off) to 65536
    #[arg(long, env = "WSGATE_HISTORY", value_name = "N", value_parser = whole::<usize>,
          default_value_t = Config::default().history)]
    pub history: usize,

    /// Bytes resumes may replay to one user per second; past it a resume is not recovered
    #[arg(long, env = "WSGATE_MAX_REPLAY_BYTES_PER_USER", value_name = "BYTES", value_parser = whole::<u32>,
          default_value_t = Config::default().max_replay_bytes_per_user)]
    pub max_replay_bytes_per_user: u32,

    /// How long a message stays in history (an empty room is freed after it)
    #[arg(long, env = "WSGATE_HISTORY_TTL", value_name = "DURATION",
          default_value_t = Span(Config::default().history_ttl))]
    pub history_ttl: Span,

    /// Serve the demo page at / [default: on in dev mode, else off]
    #[arg(long, env = "WSGATE_DEMO", value_name = "on|off", hide_possible_values = true)]
    pub demo: Option<Switch>,

    /// Serve the admin API (POST /admin/revoke, /admin/publish) on this address; needs a key
    #[arg(long, env = "WSGATE_ADMIN_ADDR", value_name = "ADDR", value_parser = address)]
    pub admin_addr: Option<SocketAddr>,

    /// File holding the admin API's key, 32 bytes or more (one trailing newline ignored); or
    /// put the key itself in WSGATE_ADMIN_KEY
    #[arg(long, env = "WSGATE_ADMIN_KEY_FILE", value_name = "PATH")]
    pub admin_key_file: Option<PathBuf>,

    /// Share rooms with every node on this Redis, and read sessions from it (needs a build
    /// with --features redis)
    #[arg(long, env = "WSGATE_REDIS", value_name = "URL")]
    pub redis: Option<String>,

    /// With rediss:// (a build with --features redis,tls): the CA certificate (PEM) Redis's
    /// certificate must chain to [default: the system's roots]
    #[arg(long, env = "WSGATE_REDIS_CA", value_name = "PATH")]
    pub redis_ca: Option<PathBuf>,

    /// Deadline of every Redis call, 1ms to 60s: a Redis that stops answering costs a
    /// session-cookie handshake at most this (then 503), and the link notices it within a
    /// second plus this
    #[arg(long, env = "WSGATE_REDIS_TIMEOUT", value_name = "DURATION",
          default_value_t = Span(Config::default().redis_timeout))]
    pub redis_timeout: Span,

    /// With --redis: revocations that may wait on this node for Redis to come back; past it
    /// the admin API answers 503 (the revocation still applies on this node)
    #[arg(long, env = "WSGATE_CONTROL_OUTBOX", value_name = "N",
          default_value_t = Config::default().control_outbox)]
    pub control_outbox: usize,

    /// Session-cookie handshakes that may wait on the session store (in Redis, or your own)
    /// at once; more get 503 at once, so a slow store never holds the places token handshakes
    /// need
    #[arg(long, env = "WSGATE_MAX_DECIDING", value_name = "N",
          default_value_t = Config::default().max_deciding)]
    pub max_deciding: usize,

    /// Redis key prefix of session ids [default: wsgate:session:]
    #[arg(long, env = "WSGATE_SESSION_REDIS_PREFIX", value_name = "PREFIX")]
    pub session_redis_prefix: Option<String>,

    /// Speak TLS on --addr for every endpoint (wss://, https://) with this PEM certificate
    /// chain; needs --tls-key and a build with --features tls. SIGHUP reloads both files
    #[arg(long, env = "WSGATE_TLS_CERT", value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert
    #[arg(long, env = "WSGATE_TLS_KEY", value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct TokenArgs {
    /// The user: the token's `sub` (required)
    #[arg(long, value_name = "NAME", value_parser = subject)]
    pub sub: String,

    /// A token id (`jti`), by which this one token can be revoked
    #[arg(long, value_name = "ID")]
    pub jti: Option<String>,

    /// Lifetime
    #[arg(long, value_name = "DURATION", default_value_t = Span(Duration::from_secs(3600)))]
    pub ttl: Span,

    /// Rooms the token may join, comma-separated: names, or prefix* [default: any]
    #[arg(long, value_name = "LIST", value_parser = rooms)]
    pub rooms: Option<List>,

    /// Key id to put in the header
    #[arg(long, env = "WSGATE_KID", value_name = "KID")]
    pub kid: Option<String>,

    /// `iss` claim
    #[arg(long, env = "WSGATE_ISSUER", value_name = "ISS")]
    pub issuer: Option<String>,

    /// `aud` claim
    #[arg(long, env = "WSGATE_AUDIENCE", value_name = "AUD")]
    pub audience: Option<String>,

    /// File holding the HS256 secret (one trailing newline ignored); or set WSGATE_SECRET
    #[arg(long, env = "WSGATE_SECRET_FILE", value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum RejectWith {
    Http,
    Close,
}

impl From<RejectWith> for RejectMode {
    fn from(mode: RejectWith) -> RejectMode {
        match mode {
            RejectWith::Http => RejectMode::Http,
            RejectWith::Close => RejectMode::Close,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Switch {
    On,
    Off,
}

/// The parser, with each option's environment variable left out of its help line: the
/// after-help states the naming rule once, and the help (copied into README.md) must not
/// change with what the environment holds.
pub(crate) fn command() -> clap::Command {
    Cli::command().mut_subcommand("serve", |serve| serve.mut_args(|arg| arg.hide_env(true)))
}

/// A clap error as one line: its first paragraph without the `error: ` prefix, the closest
/// option or value when one was misspelled (clap puts it on a later line), and the environment
/// variable that held a bad value, since clap names only the flag.
pub(crate) fn one_line(error: &clap::Error, args: &[OsString]) -> String {
    let rendered = error.render().to_string();
    let mut line = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(rest) = line.strip_prefix("error: ") {
        line = rest.to_owned();
    }
    for kind in [ContextKind::SuggestedArg, ContextKind::SuggestedValue] {
        if let Some(ContextValue::String(similar)) = error.get(kind) {
            line.push_str(&format!(" (did you mean {similar}?)"));
        }
    }
    // A bad value for a flag that is not on the command line came from its variable.
    if let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg)
        && let Some(flag) = arg.split(' ').next().and_then(|a| a.strip_prefix("--"))
        && !args.iter().any(|a| {
            a.to_str()
                .and_then(|a| a.strip_prefix("--"))
                .is_some_and(|a| a == flag || a.starts_with(&format!("{flag}=")))
        })
    {
        let variable = format!("WSGATE_{}", flag.to_uppercase().replace('-', "_"));
        if std::env::var_os(&variable).is_some() {
            line.push_str(&format!(" (from {variable})"));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_is_well_formed() {
        command().debug_assert();
    }

    /// PROTOCOL.md §6: every `serve` flag has an environment variable named after it.
    #[test]
    fn every_serve_flag_has_its_environment_variable() {
        let command = command();
        let serve = command.find_subcommand("serve").unwrap();
        for arg in serve.get_arguments().filter(|a| a.get_id() != "help") {
            let long = arg.get_long().unwrap();
            let expected = format!("WSGATE_{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(expected.as_str()),
                "--{long}"
            );
        }
    }
}
