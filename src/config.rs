//! Everything a server can be told, with PROTOCOL.md's defaults, in one struct.
//!
//! Every limit on what a client controls lives here, so an operator can find and tune them in
//! one place (and `wsgate serve --help` lists the same set). `Config` is `#[non_exhaustive]`:
//! start from [`Config::default`] and set the fields you need, so a new setting in a later
//! version does not break your code.
//!
//! ```
//! use wsgate::Config;
//! use wsgate::jwt::Key;
//!
//! let mut config = Config::default();
//! config.addr = "127.0.0.1:0".parse().unwrap();
//! config.keys = vec![Key::new(b"an example secret of at least 32 bytes!!").unwrap()];
//! assert!(config.validate().is_ok());
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::credentials::Carriers;
use crate::jwt::{Key, Validation};
use crate::origin::{OriginPolicy, Transport};
use crate::room::RoomSettings;

/// The deadline of a Redis call unless configured (`--redis-timeout`).
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest duration a setting may have. Timers are computed as "now + duration", which
/// overflows (and panics) for absurd values; a year is far beyond any sensible setting.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// The largest `max_message_size`: buffers are sized from it, so it must stay usable.
pub const MAX_MESSAGE_SIZE_LIMIT: usize = 64 * 1024 * 1024;

/// The admin key, kept as its SHA-256 digest; `Debug` never shows it.
#[derive(Clone)]
pub struct AdminKey([u8; 32]);

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey(<redacted>)")
    }
}

impl AdminKey {
    /// A key of at least 32 bytes; `None` if shorter.
    pub fn new(key: &[u8]) -> Option<AdminKey> {
        (key.len() >= 32).then(|| AdminKey(Sha256::digest(key).into()))
    }

    /// Whether `offered` is the key, in time that does not depend on where they differ.
    pub fn matches(&self, offered: &[u8]) -> bool {
        let offered: [u8; 32] = Sha256::digest(offered).into();
        self.0.iter().zip(offered).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
    }
}

/// How authentication failures are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RejectMode {
    /// An HTTP `401`/`403` before the upgrade. The default, and the only mode that never
    /// upgrades an unauthenticated connection.
    #[default]
    Http,
    /// Upgrade, then close at once with `4401`/`4403` and a reason: a browser script cannot
    /// read an HTTP status, but it can read a close code. Origin failures stay HTTP `403`.
    Close,
}

/// Server configuration. `Config::default()` holds every default but no key.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where to listen. Default `127.0.0.1:8080`; port 0 picks a free port.
    pub addr: SocketAddr,
    /// HS256 keys; the first is the primary (tokens without `kid` are checked with it).
    /// Unused when the server is given a custom authenticator.
    pub keys: Vec<Key>,
    /// Leeway, issuer and audience rules for tokens.
    pub validation: Validation,
    /// Which `Origin`s may connect. Default: same origin.
    pub origins: OriginPolicy,
    /// Cookie names for the cookie carriers.
    pub carriers: Carriers,
    /// Subprotocols we speak, in preference order; the first one offered is echoed.
    /// Default `["chat"]`.
    pub protocols: Vec<String>,
    /// HTTP status or close code for authentication failures. Default HTTP.
    pub reject_with: RejectMode,
    /// Upgraded connections at most; past it new upgrades get `503`. Default 10,000.
    pub max_connections: usize,
    /// Sockets not yet admitted (reading their head, being authenticated, being refused) at
    /// most. When full, a new socket evicts the oldest one still reading its head, so silent
    /// sockets cannot keep honest clients out. Default 1,024.
    pub max_pending: usize,
    /// Open connections one identity (`sub`) may hold on this node; more get `429`.
    /// Default 32.
    pub max_connections_per_user: usize,
    /// Connects per second one identity may make on this node, on average; more get `429`.
    /// Default 2.
    pub user_connect_rate: u32,
    /// Connects one identity may make in a burst above that rate. Default 32.
    pub user_connect_burst: u32,
    /// The request head must arrive, and be decided, within this; else the socket is
    /// dropped (slowloris) or refused. Default 10 s.
    pub handshake_timeout: Duration,
    /// Largest message a client may send, in bytes; larger closes with `1009`. Default 64 KiB.
    pub max_message_size: usize,
    /// Messages per second a connection may send on average. Default 50.
    pub rate_limit: u32,
    /// Messages a connection may send in a burst above the average. Default 100.
    pub rate_burst: u32,
    /// A connection is sent `expiring` this long before its credential's `exp`, so it can
    /// send a `refresh` in time. Default 60 s.
    pub refresh_window: Duration,
    /// How long a revocation of a user or a session lasts (a `jti` revocation lasts until the
    /// token's `exp`). Default 24 h.
    pub revocation_ttl: Duration,
    /// Connections that came in with a session cookie re-check their session this often and
    /// close when it is gone (logout in the application that owns it). Default 30 s.
    pub session_recheck: Duration,
    /// Where the admin API listens (`POST /admin/revoke`, `POST /admin/publish`). `None`, the
    /// default: no admin listener. Never the public address.
    pub admin_addr: Option<SocketAddr>,
    /// The key the admin API requires (`Authorization: Bearer <key>`), 32 bytes or more.
    pub admin_key: Option<AdminKey>,
    /// A connection that takes none of our writes for this long is closed with `1008`.
    /// Default 10 s.
    pub write_timeout: Duration,
    /// An idle connection is pinged this often. Default 20 s.
    pub ping_interval: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed. Default 60 s.
    pub idle_timeout: Duration,
    /// Messages a room buffers for its slowest member before that member is told it lagged.
    /// Also the most payloads a room keeps alive. Default 256.
    pub room_buffer: usize,
    /// Bytes of messages all rooms together may hold for slow members; one room may hold an
    /// eighth of it. Past either, the oldest messages go and the slowest members lag.
    /// Default 64 MiB.
    pub max_queued_bytes: usize,
    /// Bytes one identity's messages may hold in rooms (buffers, history, kept rooms), all its
    /// rooms together; past it its messages are refused with an `error` and nobody else's
    /// are given up for it. `None`, the default: an eighth of `max_queued_bytes`.
    pub max_queued_bytes_per_user: Option<usize>,
    /// Above this many members a room no longer announces `join` and `leave`. Default 100.
    pub presence_limit: usize,
    /// Messages a room keeps for clients that resume (`?since=`, PROTOCOL.md §10); 0 turns
    /// history off. Default 100.
    pub history: usize,
    /// Bytes that resumes may make the server send for one identity (`sub`) per second, with
    /// bursts of as much; a resume past it is answered `"recovered":false` rather than a
    /// partial replay (PROTOCOL.md §10). Default 8 MiB.
    pub max_replay_bytes_per_user: u32,
    /// How long a message stays in history; an empty room is freed this long after its
    /// newest message. Default 5 minutes.
    pub history_ttl: Duration,
    /// Serve the demo page at `/`. Default off; dev mode turns it on.
    pub demo: bool,
    /// Mint tokens at `GET /dev/token?sub=NAME` with the primary key, for loopback clients
    /// only, so the demo page needs no copy-paste. Dev mode only: never turn it on with a
    /// real secret, since anyone on the machine could then become anyone.
    pub dev_tokens: bool,
    /// With the `redis` feature: the Redis through which rooms span every node that shares it,
    /// e.g. `redis://127.0.0.1:6379`. `None`: a single node.
    #[cfg(feature = "redis")]
    pub redis_url: Option<String>,
    /// With the `redis` and `tls` features: the CA certificate(s), PEM, that a `rediss://`
    /// Redis's certificate must chain to. `None`: the system's roots.
    #[cfg(feature = "redis")]
    pub redis_ca: Option<Vec<u8>>,
    /// The deadline of every Redis call (link, history, sessions): a Redis that stops
    /// answering costs a handshake at most this (PROTOCOL.md §12). Default 1 s.
    pub redis_timeout: Duration,
    /// Session-cookie handshakes that may wait on the session store at once; more are
    /// answered `503` at once, so a slow store never holds the places that handshakes decided
    /// locally need. Default 256, a quarter of `max_pending`'s default.
    pub max_deciding: usize,
    /// Revocations that may wait for Redis on this node before a new one is refused with
    /// `503` (it still applies here). Default 10,000.
    pub control_outbox: usize,
    /// With the `tls` feature: speak TLS on `addr` for every endpoint (`wss://`, `https://`)
    /// with this certificate, which a clone of it can replace while the server runs. With it,
    /// the same-origin check requires an `https://` Origin. `None`, the default: plain TCP.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::Tls>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            keys: Vec::new(),
            validation: Validation::default(),
            origins: OriginPolicy::default(),
            carriers: Carriers::default(),
            protocols: vec!["chat".to_owned()],
            reject_with: RejectMode::default(),
            max_connections: 10_000,
            max_pending: 1024,
            max_connections_per_user: 32,
            user_connect_rate: 2,
            user_connect_burst: 32,
            handshake_timeout: Duration::from_secs(10),
            max_message_size: 64 * 1024,
            rate_limit: 50,
            rate_burst: 100,
            refresh_window: Duration::from_secs(60),
            revocation_ttl: Duration::from_secs(86_400),
            admin_addr: None,
            admin_key: None,
            session_recheck: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            room_buffer: 256,
            max_queued_bytes: 64 << 20,
            max_queued_bytes_per_user: None,
            presence_limit: 100,
            history: 100,
            max_replay_bytes_per_user: 8 << 20,
            history_ttl: Duration::from_secs(300),
            demo: false,
            dev_tokens: false,
            #[cfg(feature = "redis")]
            redis_url: None,
            #[cfg(feature = "redis")]
            redis_ca: None,
            redis_timeout: DEFAULT_REDIS_TIMEOUT,
            control_outbox: 10_000,
            max_deciding: 256,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// A configuration the server refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Applies `change` and returns the config: one expression for a few settings.
    ///
    /// ```
    /// use wsgate::Config;
    /// let config = Config::default().with(|c| {
    ///     c.max_connections = 100;
    ///     c.demo = true;
    /// });
    /// assert_eq!(config.max_connections, 100);
    /// ```
    pub fn with(mut self, change: impl FnOnce(&mut Config)) -> Config {
        change(&mut self);
        self
    }

    /// How clients reach this server: through TLS it terminates itself, or plain TCP (always,
    /// without the `tls` feature). The same-origin check depends on it.
    pub fn transport(&self) -> Transport {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return Transport::Tls;
        }
        Transport::Plain
    }

    /// The rooms' part of the settings.
    pub fn room_settings(&self) -> RoomSettings {
        RoomSettings {
            buffer: self.room_buffer,
            room_queued_bytes: self.max_queued_bytes / 8,
            max_queued_bytes: self.max_queued_bytes,
            max_queued_bytes_per_user: self.max_queued_bytes_per_user.unwrap_or(self.max_queued_bytes / 8),
            presence_limit: self.presence_limit,
            history: self.history,
            history_ttl: self.history_ttl,
        }
    }

    /// Checks the limits are usable. Keys are checked when they are made ([`Key::new`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |why: &str| Err(ConfigError(why.to_owned()));
        if self.max_connections == 0 || self.max_pending == 0 || self.max_connections_per_user == 0 {
            return fail("max connections, max pending and max connections per user must be at least 1");
        }
        if self.max_deciding == 0 || self.max_deciding > Semaphore::MAX_PERMITS {
            return fail("max deciding must be at least 1");
        }
        if self.user_connect_rate == 0 || self.user_connect_burst == 0 {
            return fail("user connect rate and burst must be at least 1");
        }
        if self.refresh_window > MAX_DURATION || self.revocation_ttl > MAX_DURATION {
            return fail("the refresh window and revocation TTL must be at most 365 days");
        }
        let second = Duration::from_secs(1);
        if self.revocation_ttl < second || self.session_recheck < second || self.session_recheck > MAX_DURATION {
            return fail("the revocation TTL and session recheck must be 1 s to 365 days");
        }
        let durations = [
            self.handshake_timeout,
            self.write_timeout,
            self.ping_interval,
            self.idle_timeout,
        ];
        if durations.iter().any(Duration::is_zero) {
            return fail("timeouts and intervals must be greater than zero");
        }
        if durations.iter().any(|d| *d > MAX_DURATION) {
            return fail("timeouts and intervals must be at most 365 days");
        }
        if self.idle_timeout <= self.ping_interval {
            return fail(
                "idle timeout must be longer than the ping interval, or idle clients are closed before they are pinged",
            );
        }
        if !(16..=MAX_MESSAGE_SIZE_LIMIT).contains(&self.max_message_size) {
            return fail("max message size must be 16 bytes to 64 MiB");
        }
        if self.rate_limit == 0 || self.rate_burst == 0 {
            return fail("rate limit and burst must be at least 1");
        }
        if self.room_buffer == 0 || self.room_buffer > 1 << 16 {
            return fail("room buffer must be 1 to 65536 messages");
        }
        if self.history > 1 << 16 {
            return fail("history must be 0 to 65536 messages");
        }
        if self.history_ttl < Duration::from_secs(1) || self.history_ttl > MAX_DURATION {
            return fail("history TTL must be 1 s to 365 days");
        }
        if self.redis_timeout < Duration::from_millis(1) || self.redis_timeout > Duration::from_secs(60) {
            return fail("the Redis timeout must be 1 ms to 60 s");
        }
        if !(1..=1_000_000).contains(&self.control_outbox) {
            return fail("the control outbox must hold 1 to 1,000,000 revocations");
        }
        if self.max_queued_bytes < 8 * self.max_message_size {
            return fail("max queued bytes must be at least 8 times the max message size (a room holds an eighth)");
        }
        if let Some(per_user) = self.max_queued_bytes_per_user
            && !(self.max_message_size..=self.max_queued_bytes).contains(&per_user)
        {
            return fail("max queued bytes per user must be from the max message size to max queued bytes");
        }
        if self
            .protocols
            .iter()
            .any(|p| p.is_empty() || p.starts_with(crate::credentials::BEARER_PROTOCOL_PREFIX))
        {
            return fail("a supported protocol must be non-empty and must not start with bearer.");
        }
        match (self.admin_addr, &self.admin_key) {
            (Some(_), None) => return fail("the admin API needs an admin key (32 bytes or more)"),
            (Some(admin), Some(_)) if admin == self.addr && admin.port() != 0 => {
                return fail("the admin API must listen on another address than the public port");
            }
            _ => {}
        }
        if self.dev_tokens && !self.addr.ip().is_loopback() {
            return fail("dev tokens are only served on a loopback address");
        }
        Ok(())
    }
}
