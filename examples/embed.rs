//! wsgate inside your own program: a configured server, run until Ctrl-C.
//!
//! Run: `WSGATE_SECRET=$(openssl rand -hex 32) cargo run --example embed`

use wsgate::jwt::{Claims, Key, unix_now};
use wsgate::{Config, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("WSGATE_SECRET").map_err(|_| "set WSGATE_SECRET to a secret of at least 32 bytes")?;
    let key = Key::new(secret.as_bytes())?;
    let token = key.sign(&Claims::new("alice", unix_now() + 3600));

    let mut config = Config::default();
    config.addr = "127.0.0.1:0".parse()?;
    config.keys = vec![key];
    let server = Server::bind(config).await?;
    println!(
        "try: websocat 'ws://{}/ws/chat/lobby?token={token}'",
        server.local_addr()
    );

    server
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    Ok(())
}
