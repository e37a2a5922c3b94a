//! Room history in Redis (PROTOCOL.md §10 with §8, feature `redis`): one Lua script gives
//! every message its `seq`, appends it to the room's history and publishes it, so a client
//! resumes on any node, and across node restarts, from the same numbers.
//!
//! Per room, two keys:
//!
//! - `wsgate:seq:{room}`, a hash `{epoch, seq, bytes}`: the counter, the name of this
//!   history, and the bytes its list holds.
//! - `wsgate:history:{room}`, a list of the last `--history` messages, each `"<ms> <json>"`,
//!   and at most the node's per-room byte budget (`--max-queued-bytes` / 8) of them.
//!
//! A list plus a counter rather than a stream: seqs are consecutive, so "everything after
//! seq s" is the last `seq - s` entries (`LRANGE -n -1`) and "keep the last N" is an `LPOP`
//! or two; a stream's IDs are not consecutive, and reading one live would take a blocking
//! `XREAD` per room beside the pub/sub subscription the relay already has. The script runs
//! atomically, so the order of seqs is the order Redis ran the scripts, the same on every
//! node, and a message costs one round trip (pipelined with the others queued).
//!
//! The list expires `--history-ttl` after the last message, the counter a minute later; a node
//! renews the counter of every room it has members in, so an epoch does not change under
//! connected clients. When the counter is gone anyway (expired, evicted, or Redis restarted
//! empty), the next use starts a new epoch: every `since` that names the old one gets
//! `"recovered":false`, and each node tells its members `lagged` when it first hears of it.
//!
//! What one resume reads is a copy for that connection, so it is capped at
//! [`Keep::reply_bytes`]; needing more, it is not recovered.

use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite::Message;

use super::keys;
use crate::messages::Seq;
use crate::room::{Since, Synced};

/// See the module docs. `ARGV`: json to publish (`''`: none), history, TTL in ms, channel,
/// mode (`publish` or `sync`), the room's byte cap, the reply's byte cap, since epoch (`''`:
/// none), since seq.
const SCRIPT: &str = r#"
local seqkey, histkey = KEYS[1], KEYS[2]
local json, history, ttl, channel = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local room_bytes, reply_bytes = tonumber(ARGV[6]), tonumber(ARGV[7])
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local epoch = redis.call('HGET', seqkey, 'epoch')
if not epoch then
  local t = redis.call('TIME')
  epoch = string.format('%x%05x', tonumber(t[1]), tonumber(t[2]))
  redis.call('DEL', histkey)
  redis.call('HSET', seqkey, 'epoch', epoch, 'seq', 0, 'bytes', 0)
end
local seq = tonumber(redis.call('HGET', seqkey, 'seq'))
if json ~= '' then
  seq = redis.call('HINCRBY', seqkey, 'seq', 1)
  local sequenced = string.sub(json, 1, -2) .. ',"seq":' .. seq .. '}'
  if history > 0 then
    -- The list may have expired before the counter (which lives longer): start it afresh.
    if redis.call('LLEN', histkey) == 0 then redis.call('HSET', seqkey, 'bytes', 0) end
    local entry = now_ms() .. ' ' .. sequenced
    redis.call('RPUSH', histkey, entry)
    local bytes = redis.call('HINCRBY', seqkey, 'bytes', #entry)
    local len = redis.call('LLEN', histkey)
    while len > 1 and (len > history or bytes > room_bytes) do
      bytes = redis.call('HINCRBY', seqkey, 'bytes', -#redis.call('LPOP', histkey))
      len = len - 1
    end
    redis.call('PEXPIRE', histkey, ttl)
  end
  redis.call('PUBLISH', channel, epoch .. '\n' .. seq .. '\n' .. sequenced)
end
-- The counter outlives its history by a minute, so nodes that renew it every ttl/2 keep
-- the epoch of a quiet room with connected clients.
redis.call('PEXPIRE', seqkey, ttl + 60000)
if ARGV[5] ~= 'sync' then return seq end
local reply = {epoch, tostring(seq)}
if ARGV[8] == '' then return reply end
local since = tonumber(ARGV[9])
if ARGV[8] ~= epoch or since > seq or seq - since > history then
  reply[3] = '0'
  return reply
end
reply[3] = '1'
if since == seq then return reply end
local entries = redis.call('LRANGE', histkey, -(seq - since), -1)
local first = entries[1] and tonumber(string.match(entries[1], '^(%d+) '))
if #entries < seq - since or not first or now_ms() - first >= ttl then
  reply[3] = '0'
  return reply
end
local total = 0
for i, entry in ipairs(entries) do
  local frame = string.sub(entry, string.find(entry, ' ', 1, true) + 1)
  total = total + #frame
  if total > reply_bytes then
    return {epoch, tostring(seq), '0'}
  end
  reply[3 + i] = frame
end
return reply
"#;

/// How long history is kept, and how much of it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keep {
    /// Frames per room.
    pub history: usize,
    /// Bytes of frames per room (the node's per-room budget, `--max-queued-bytes` / 8).
    pub room_bytes: usize,
    /// The most bytes of frames one resume (or repair) reads: what it reads is a copy for that
    /// one connection, held until written. A resume that would need more is
    /// `"recovered":false`. Half a room's bytes.
    pub reply_bytes: usize,
    pub ttl: Duration,
}

impl Keep {
    /// The script's keys and first arguments, in its order.
    fn args(&self, room: &str, json: &str, mode: &str) -> ([String; 2], [String; 7]) {
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        (
            [keys::seq(room), keys::history(room)],
            [
                json.to_owned(),
                self.history.to_string(),
                ttl.to_string(),
                keys::room_channel(room),
                mode.to_owned(),
                self.room_bytes.to_string(),
                self.reply_bytes.to_string(),
            ],
        )
    }

    /// Adds "publish `json` to `room`" to `pipe`, calling the script by the hash [`load`]
    /// returned.
    pub(crate) fn publish(&self, pipe: &mut redis::Pipeline, script: &str, room: &str, json: &str) {
        let (keys, args) = self.args(room, json, "publish");
        pipe.cmd("EVALSHA")
            .arg(script)
            .arg(keys.len())
            .arg(&keys)
            .arg(&args)
            .ignore();
    }

    /// Adds "renew `room`'s counter" to `pipe`: the room has members on this node.
    pub(crate) fn touch(&self, pipe: &mut redis::Pipeline, room: &str) {
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        pipe.cmd("PEXPIRE")
            .arg(keys::seq(room))
            .arg(ttl.saturating_add(60_000))
            .ignore();
    }

    /// Publishes `presence` (if any), then reads `room`'s position and, for `since`, what
    /// history holds after it: one round trip.
    pub(crate) async fn sync(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        script: &str,
        room: &str,
        presence: Option<&str>,
        since: Option<&Since>,
    ) -> redis::RedisResult<Synced> {
        let (keys, args) = self.args(room, presence.unwrap_or(""), "sync");
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script).arg(keys.len()).arg(&keys).arg(&args);
        match since {
            Some(since) => cmd.arg(&since.epoch).arg(since.seq),
            None => cmd.arg("").arg(0),
        };
        let reply: Vec<String> = cmd.query_async(conn).await?;
        let invalid = || redis::RedisError::from((redis::ErrorKind::Parse, "unexpected reply from the history script"));
        let mut reply = reply.into_iter();
        let epoch: Arc<str> = reply.next().ok_or_else(invalid)?.into();
        let seq = reply.next().and_then(|s| s.parse().ok()).ok_or_else(invalid)?;
        let missed = match reply.next().as_deref() {
            Some("1") => Some(reply.map(Message::text).collect()),
            _ => None,
        };
        Ok(Synced { epoch, seq, missed })
    }
}

/// Loads the script into Redis; returns the hash to call it by. Each connection loads it
/// when it connects, so a Redis that restarted (and forgot its scripts) gets it again.
pub(crate) async fn load(conn: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<String> {
    redis::cmd("SCRIPT").arg("LOAD").arg(SCRIPT).query_async(conn).await
}

/// A publication on a room channel: `(epoch, seq, json)`.
pub(crate) fn parse(payload: &[u8]) -> Option<(&str, Seq, &str)> {
    let payload = std::str::from_utf8(payload).ok()?;
    let mut parts = payload.splitn(3, '\n');
    let epoch = parts.next()?;
    let seq = parts.next()?.parse().ok()?;
    Some((epoch, seq, parts.next()?))
}
