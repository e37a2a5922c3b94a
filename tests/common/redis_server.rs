//! A `redis-server` of a test's own, on a free port (the Redis tests need Debian's
//! `redis-server` on PATH).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::within;

pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        RedisServer::start_on(port)
    }

    pub fn start_on(port: u16) -> RedisServer {
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
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is not on PATH; install it (Debian: apt-get install redis-server)");
        let server = RedisServer { child, port };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
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

    pub async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> T {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = within(client.get_multiplexed_async_connection()).await.unwrap();
        within(command.query_async(&mut conn)).await.unwrap()
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
