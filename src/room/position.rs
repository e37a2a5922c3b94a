//! Where a client stands in a room's history (PROTOCOL.md §10): the `epoch` that names the
//! history, the `seq` it last saw, and the `since` it resumes from.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::messages::Welcome;
use crate::rejection::Rejection;

use super::is_token;

/// Where a reconnecting client left off: `?since=<epoch>:<seq>` (PROTOCOL.md §10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    /// The room history the client saw (the welcome's `epoch`).
    pub epoch: String,
    /// The last `seq` it received.
    pub seq: u64,
}

impl Since {
    /// Parses `<epoch>:<seq>`: an epoch of 1–64 characters of `[A-Za-z0-9_.-]` and a decimal
    /// seq. Anything else is a `400` that says so: a client that sends a broken value should
    /// learn it, not silently lose its resume.
    pub fn parse(value: &str) -> Result<Since, Rejection> {
        let bad = || Rejection::BadRequest("since must be <epoch>:<seq>, as the welcome gave them".into());
        let (epoch, seq) = value.split_once(':').ok_or_else(bad)?;
        if !is_token(epoch, 64) || seq.is_empty() || seq.len() > 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let seq = seq.parse().map_err(|_| bad())?;
        Ok(Since {
            epoch: epoch.to_owned(),
            seq,
        })
    }
}

/// What the welcome tells a member about the room's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Names this room's history; a `since` with another epoch cannot resume.
    pub epoch: Arc<str>,
    /// The last `seq` in the room when the member joined.
    pub seq: u64,
    /// Whether the `since` the member gave was resumed; `None` when it gave none.
    pub recovered: Option<bool>,
}

impl Position {
    /// The welcome that reports this position to `username`, whose credential expires at
    /// `exp`.
    pub(crate) fn welcome<'a>(&'a self, room: &'a str, username: &'a str, exp: Option<i64>) -> Welcome<'a> {
        Welcome {
            r#type: "welcome",
            room,
            username,
            message: format!("Welcome, {username}!"),
            exp,
            epoch: &self.epoch,
            seq: self.seq,
            recovered: self.recovered,
        }
    }
}

/// A name for a new room's history, unique within this process and, by its time part,
/// across restarts.
pub(super) fn new_epoch() -> Arc<str> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("{micros:x}-{:x}", COUNTER.fetch_add(1, Relaxed)).into()
}
