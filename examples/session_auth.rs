//! The cookie-session flow of a web application: the app's login writes a session (id →
//! user) to a store and sets a `sessionid` cookie; the browser sends that cookie with the
//! WebSocket handshake; this custom `Authenticator` resolves it.
//!
//! Run: `cargo run --example session_auth`, then try the printed `wsgate connect` command.
//!
//! Two things wsgate still does around the custom authenticator, whatever it says: the
//! Origin check (a cookie is honoured only from the app's own origin, which stops
//! cross-site WebSocket hijacking) and the room check against `Identity::rooms`.

use wsgate::OriginPolicy;
use wsgate::auth::{Authenticator, Identity, MemorySessionStore, SessionStore};
use wsgate::credentials::{Carrier, Credential};
use wsgate::head::RequestHead;
use wsgate::jwt::unix_now;
use wsgate::rejection::Rejection;
use wsgate::{Config, Server};

/// Accepts session cookies only, resolved through the app's session store.
struct AppSessions<S> {
    store: S,
}

impl<S: SessionStore> Authenticator for AppSessions<S> {
    async fn authenticate(&self, credential: &Credential, _head: &RequestHead) -> Result<Identity, Rejection> {
        if credential.carrier() != Carrier::SessionCookie {
            return Err(Rejection::InvalidCredential(
                "log in first: this server takes session cookies only".into(),
            ));
        }
        let session = self.store.load(credential.secret()).await.map_err(|e| {
            eprintln!("session store failed: {e}");
            Rejection::Unavailable("session store unavailable".into())
        })?;
        match session {
            Some(identity) if !identity.is_expired_at(unix_now()) => Ok(identity),
            _ => Err(Rejection::InvalidCredential("unknown or expired session".into())),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // What the web app's login handler would do: create a session for carol, who may only
    // enter support rooms, valid for an hour.
    let store = MemorySessionStore::default();
    let session_id = "9c1f7e4b2a6d8f3e5b7c9a1d3f5e7b9c";
    store.insert(
        session_id,
        Identity {
            rooms: Some(vec!["support-*".into()]),
            expires_at: Some(unix_now() + 3600),
            ..Identity::new("carol")
        },
    );

    let app_origin = "http://localhost:3000";
    let mut config = Config::default();
    config.addr = "127.0.0.1:0".parse()?;
    config.origins = OriginPolicy::List(vec![app_origin.into()]);
    let server = Server::bind_with(config, AppSessions { store }).await?;
    let addr = server.local_addr();
    println!("Session-cookie server on {addr}. As the browser on {app_origin} would connect:\n");
    println!(
        "  cargo run -- connect ws://{addr}/ws/chat/support-1 -H 'Cookie: sessionid={session_id}' -H 'Origin: {app_origin}'\n"
    );
    println!("Without the Origin, from another origin, or in a room outside support-*, it is refused.");
    server
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    Ok(())
}
