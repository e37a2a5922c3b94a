//! wsgate inside your own program: a configured server, run until Ctrl-C.
//!
//! Run: `cargo run --example embed` (a random secret), or with your own:
//! `WSGATE_SECRET=$(openssl rand -hex 32) cargo run --example embed`

use wsgate::jwt::{Claims, Key, unix_now};
use wsgate::{Config, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // wsgate logs through `tracing`; without a subscriber an embedded server says nothing.
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();

    let secret = match std::env::var("WSGATE_SECRET") {
        Ok(secret) => secret.into_bytes(),
        Err(_) => {
            println!("WSGATE_SECRET is not set: using a random secret for this run.");
            let mut secret = vec![0; 32];
            getrandom::fill(&mut secret)?;
            secret
        }
    };
    let key = Key::new(&secret)?;
    let token = key.sign(&Claims::new("alice", unix_now() + 3600));

    let mut config = Config::default(); // #[non_exhaustive]: start from the defaults
    config.addr = "127.0.0.1:0".parse()?;
    config.keys = vec![key];
    let server = Server::bind(config).await?;
    println!(
        "try: cargo run -- connect ws://{}/ws/chat/lobby --token {token}",
        server.local_addr()
    );

    server
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    Ok(())
}
