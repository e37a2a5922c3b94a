//! Counters for `/metrics` (PROTOCOL.md §7), updated on the hot path with relaxed atomics:
//! no lock is ever taken to count, and a scrape reads each value once.
//!
//! Labels are fixed, low-cardinality words (a result, a reason): never a user, room or token.
//! Labelled counters are arrays indexed by the label's enum ([`Outcome`], [`Reason`]), so
//! every value of the enum has its counter by construction.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::rejection::{Outcome, Reason, Rejection};

/// Values `/metrics` reads from the rooms and budgets rather than from counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Rooms with at least one member.
    pub rooms_active: usize,
    /// Rooms without members kept for their history.
    pub rooms_kept: usize,
    /// Sockets not yet admitted.
    pub pending_sockets: usize,
    /// Bytes held in the rooms' rings.
    pub queued_bytes: usize,
    /// Entries in the revocation list.
    pub revocations: usize,
    /// Revocations waiting in the control outbox for Redis; `None` without Redis.
    pub control_pending: Option<usize>,
    /// Whether the server terminates TLS itself (feature `tls`).
    pub tls: bool,
    /// The expiry of the TLS certificate being served, in Unix seconds, when known.
    pub tls_not_after: Option<i64>,
}

/// The server's counters. Shared by reference; every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    connections_active: AtomicI64,
    handshakes: [AtomicU64; Outcome::ALL.len()],
    rejections: [AtomicU64; Reason::ALL.len()],
    messages_received: AtomicU64,
    messages_delivered: AtomicU64,
    messages_lagged: AtomicU64,
    without_protocol: AtomicU64,
    /// -1: no Redis configured; else 0 or 1.
    redis_up: AtomicI64,
    redis_reconnects: AtomicU64,
    relay_dropped: AtomicU64,
    control_rejected: AtomicU64,
    tls_failures: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            connections_active: AtomicI64::new(0),
            handshakes: Default::default(),
            rejections: Default::default(),
            messages_received: AtomicU64::new(0),
            messages_delivered: AtomicU64::new(0),
            messages_lagged: AtomicU64::new(0),
            without_protocol: AtomicU64::new(0),
            redis_up: AtomicI64::new(-1),
            redis_reconnects: AtomicU64::new(0),
            relay_dropped: AtomicU64::new(0),
            control_rejected: AtomicU64::new(0),
            tls_failures: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub(crate) fn accepted(&self) {
        self.handshakes[Outcome::Accepted as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn rejected(&self, rejection: &Rejection) {
        self.handshakes[rejection.outcome() as usize].fetch_add(1, Relaxed);
        self.rejections[rejection.label() as usize].fetch_add(1, Relaxed);
    }

    /// Counts an open connection until the returned guard is dropped. A guard rather than a
    /// pair of calls: the gauge is right even if the connection's task panics or is cancelled.
    pub(crate) fn connection_opened(self: &Arc<Metrics>) -> OpenConnection {
        self.connections_active.fetch_add(1, Relaxed);
        OpenConnection(self.clone())
    }

    /// A TLS handshake that failed or timed out (plain HTTP on the TLS port included).
    #[cfg(feature = "tls")]
    pub(crate) fn tls_failed(&self) {
        self.tls_failures.fetch_add(1, Relaxed);
    }

    pub(crate) fn without_protocol(&self) {
        self.without_protocol.fetch_add(1, Relaxed);
    }

    pub(crate) fn received(&self) {
        self.messages_received.fetch_add(1, Relaxed);
    }

    pub(crate) fn delivered(&self, n: u64) {
        self.messages_delivered.fetch_add(n, Relaxed);
    }

    pub(crate) fn lagged(&self, n: u64) {
        self.messages_lagged.fetch_add(n, Relaxed);
    }

    /// Upgraded connections open now.
    pub fn connections_active(&self) -> i64 {
        self.connections_active.load(Relaxed)
    }

    /// Handshakes so far with `result` (`accepted`, `unauthenticated`, `forbidden`,
    /// `bad_request`, `overloaded`).
    pub fn handshakes(&self, result: &str) -> u64 {
        Outcome::ALL
            .iter()
            .position(|r| r.as_str() == result)
            .map_or(0, |i| self.handshakes[i].load(Relaxed))
    }

    /// Handshakes refused so far for `reason`.
    pub fn rejections(&self, reason: Reason) -> u64 {
        self.rejections[reason as usize].load(Relaxed)
    }

    /// Messages delivered to members so far (one per recipient).
    pub fn messages_delivered(&self) -> u64 {
        self.messages_delivered.load(Relaxed)
    }

    /// The Prometheus text exposition (format 0.0.4) of every counter, plus the gauges the
    /// server reads from elsewhere.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(2048);
        describe(
            &mut out,
            "wsgate_connections_active",
            "gauge",
            "Upgraded WebSocket connections open now.",
        );
        let _ = writeln!(out, "wsgate_connections_active {}", self.connections_active());
        describe(&mut out, "wsgate_handshakes_total", "counter", "Handshakes by result.");
        for (result, count) in Outcome::ALL.iter().zip(&self.handshakes) {
            let _ = writeln!(
                out,
                "wsgate_handshakes_total{{result=\"{}\"}} {}",
                result.as_str(),
                count.load(Relaxed)
            );
        }
        describe(
            &mut out,
            "wsgate_handshake_rejections_total",
            "counter",
            "Refused handshakes by reason.",
        );
        for (reason, count) in Reason::ALL.iter().zip(&self.rejections) {
            let _ = writeln!(
                out,
                "wsgate_handshake_rejections_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                count.load(Relaxed)
            );
        }
        counter(
            &mut out,
            "wsgate_handshakes_without_protocol_total",
            "Upgrades with a bearer. subprotocol but no protocol to echo (browsers then fail them).",
            &self.without_protocol,
        );
        counter(
            &mut out,
            "wsgate_messages_received_total",
            "Chat messages accepted from clients.",
            &self.messages_received,
        );
        counter(
            &mut out,
            "wsgate_messages_delivered_total",
            "Messages written to members, one per recipient.",
            &self.messages_delivered,
        );
        counter(
            &mut out,
            "wsgate_messages_lagged_total",
            "Messages slow members missed (each reported to them).",
            &self.messages_lagged,
        );
        describe(
            &mut out,
            "wsgate_rooms_active",
            "gauge",
            "Rooms with at least one member.",
        );
        let _ = writeln!(out, "wsgate_rooms_active {}", gauges.rooms_active);
        describe(
            &mut out,
            "wsgate_rooms_kept",
            "gauge",
            "Rooms without members kept until their history expires (PROTOCOL.md §10).",
        );
        let _ = writeln!(out, "wsgate_rooms_kept {}", gauges.rooms_kept);
        describe(
            &mut out,
            "wsgate_pending_sockets",
            "gauge",
            "Sockets accepted but not yet admitted (reading a head, being decided or refused).",
        );
        let _ = writeln!(out, "wsgate_pending_sockets {}", gauges.pending_sockets);
        describe(
            &mut out,
            "wsgate_queued_bytes",
            "gauge",
            "Bytes of messages held in the rooms' rings (kept for members that fall behind and for history).",
        );
        let _ = writeln!(out, "wsgate_queued_bytes {}", gauges.queued_bytes);
        describe(
            &mut out,
            "wsgate_revocations",
            "gauge",
            "Entries in the revocation list (jti, user and session revocations not yet expired).",
        );
        let _ = writeln!(out, "wsgate_revocations {}", gauges.revocations);
        let redis_up = self.redis_up.load(Relaxed);
        if redis_up >= 0 {
            describe(
                &mut out,
                "wsgate_redis_up",
                "gauge",
                "1 while the link to Redis for other nodes is up.",
            );
            let _ = writeln!(out, "wsgate_redis_up {redis_up}");
            counter(
                &mut out,
                "wsgate_redis_reconnects_total",
                "Attempts to reconnect to Redis.",
                &self.redis_reconnects,
            );
            let dropped = "Messages not published to other nodes (Redis down or too slow).";
            counter(&mut out, "wsgate_relay_dropped_total", dropped, &self.relay_dropped);
            let rejected =
                "Control messages and stored revocations ignored: signature does not verify, or unknown shape.";
            counter(
                &mut out,
                "wsgate_control_rejected_total",
                rejected,
                &self.control_rejected,
            );
        }
        if let Some(pending) = gauges.control_pending {
            describe(
                &mut out,
                "wsgate_control_pending",
                "gauge",
                "Revocations made on this node waiting in the control outbox to be stored in Redis.",
            );
            let _ = writeln!(out, "wsgate_control_pending {pending}");
        }
        if gauges.tls {
            let failed = "TLS handshakes that failed or timed out, plain HTTP on the TLS port included.";
            counter(
                &mut out,
                "wsgate_tls_handshake_failures_total",
                failed,
                &self.tls_failures,
            );
        }
        if let Some(not_after) = gauges.tls_not_after {
            describe(
                &mut out,
                "wsgate_tls_cert_not_after_seconds",
                "gauge",
                "Expiry (notAfter, Unix seconds) of the TLS certificate served to new handshakes.",
            );
            let _ = writeln!(out, "wsgate_tls_cert_not_after_seconds {not_after}");
        }
        out
    }
}

/// What only the link to other nodes counts (feature `redis`).
#[cfg(feature = "redis")]
impl Metrics {
    pub(crate) fn redis_configured(&self) {
        let _ = self.redis_up.compare_exchange(-1, 0, Relaxed, Relaxed);
    }

    pub(crate) fn redis_up(&self, up: bool) {
        self.redis_up.store(i64::from(up), Relaxed);
    }

    pub(crate) fn redis_reconnect(&self) {
        self.redis_reconnects.fetch_add(1, Relaxed);
    }

    pub(crate) fn relay_dropped(&self, n: u64) {
        self.relay_dropped.fetch_add(n, Relaxed);
    }

    pub(crate) fn control_rejected(&self) {
        self.control_rejected.fetch_add(1, Relaxed);
    }
}

fn describe(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

fn counter(out: &mut String, name: &str, help: &str, value: &AtomicU64) {
    describe(out, name, "counter", help);
    let _ = writeln!(out, "{name} {}", value.load(Relaxed));
}

/// An open connection, counted in `wsgate_connections_active` while it lives.
#[derive(Debug)]
pub(crate) struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_active.fetch_sub(1, Relaxed);
    }
}
