//! A `redis-server` of a test's own, on a free port (the Redis tests need Debian's
//! `redis-server` on PATH).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{SECRET, within};

/// A control message as PROTOCOL.md §12 says an application signs it, written here from the
/// spec rather than with the server's code: `{"body":B,"mac":M}`, M = base64url(HMAC(K, B)),
/// K = HMAC(secret, "wsgate control v1").
pub fn signed(body: &str) -> String {
    signed_with(SECRET, body)
}

pub fn signed_with(secret: &[u8], body: &str) -> String {
    let mut derive = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    derive.update(b"wsgate control v1");
    let control_key = derive.finalize().into_bytes();
    let mut mac = Hmac::<Sha256>::new_from_slice(&control_key).unwrap();
    mac.update(body.as_bytes());
    let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    serde_json::json!({ "body": body, "mac": mac }).to_string()
}

pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_on(RedisServer::free_port())
    }

    pub fn start_on(port: u16) -> RedisServer {
        RedisServer::start_with(port, &[])
    }

    /// A free port on 127.0.0.1.
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Plain on `port`, plus `extra` arguments (a TLS port, persistence).
    pub fn start_with(port: u16, extra: &[&str]) -> RedisServer {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            // Last, so they win over the defaults above.
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is not on PATH; install it (Debian: apt-get install redis-server)");
        let server = RedisServer { child, port };
        // Ready when it answers PING: one restarted with its data answers LOADING meanwhile.
        for _ in 0..500 {
            if pong(port) {
                return server;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not start on port {port}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills it and starts a new, empty one on the same port.
    pub fn restart_empty(&mut self) {
        self.kill();
        let fresh = RedisServer::start_on(self.port);
        let old = std::mem::replace(self, fresh);
        std::mem::forget(old); // its child is already reaped
    }

    /// SIGSTOP: the process keeps its sockets and answers nothing (a stalled Redis).
    pub fn pause(&self) {
        signal(self.child.id(), "-STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        signal(self.child.id(), "-CONT");
    }

    /// PUBLISHes `payload` on the control channel; returns how many nodes received it.
    pub async fn publish_control(&self, payload: &str) -> i64 {
        self.query(redis::cmd("PUBLISH").arg("wsgate:control").arg(payload))
            .await
    }

    /// The keys matching `pattern`, polled until `done` says so (bounded).
    pub async fn await_keys(&self, pattern: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for _ in 0..1000 {
            keys = self.query(redis::cmd("KEYS").arg(pattern)).await;
            if done(&keys) {
                return keys;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("keys {pattern} never reached the expected state: {keys:?}");
    }

    pub async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> T {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = within(client.get_multiplexed_async_connection()).await.unwrap();
        within(command.query_async(&mut conn)).await.unwrap()
    }

    /// Waits (boundedly) until the control channel has `n` subscribing nodes.
    pub async fn await_control_subscribers(&self, n: i64) {
        for _ in 0..500 {
            let reply: Vec<redis::Value> = self
                .query(redis::cmd("PUBSUB").arg("NUMSUB").arg("wsgate:control"))
                .await;
            if redis::from_redis_value_ref::<i64>(&reply[1]).unwrap() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the control channel never reached {n} subscribers");
    }

    /// How many subscribers a room's channel has.
    pub async fn subscribers(&self, room: &str) -> i64 {
        let reply: Vec<redis::Value> = self
            .query(redis::cmd("PUBSUB").arg("NUMSUB").arg(format!("wsgate:room:{room}")))
            .await;
        redis::from_redis_value_ref::<i64>(&reply[1]).unwrap()
    }

    /// Waits (boundedly) until `room` has `n` subscribing nodes.
    pub async fn await_subscribers(&self, room: &str, n: i64) {
        for _ in 0..500 {
            if self.subscribers(room).await == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("room {room} never reached {n} subscribing nodes");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill(1) runs");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Whether the Redis on `port` answers a plain-text PING with PONG.
fn pong(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}
