//! `rediss://` (PROTOCOL.md §12): nodes reach a Redis that speaks TLS only to clients that
//! check its certificate against `--redis-ca`. Run with `cargo test --features redis,tls`.
#![cfg(all(feature = "redis", feature = "tls"))]

mod common;

use common::redis_server::RedisServer;
use common::*;
use wsgate::Config;

/// A CA, and a certificate for 127.0.0.1 it signed: (CA PEM, certificate PEM, key PEM).
fn ca_and_server_certificate() -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let certificate = params.signed_by(&key, &ca).unwrap();
    (ca.pem(), certificate.pem(), key.serialize_pem())
}

#[tokio::test]
async fn nodes_share_rooms_and_revocations_over_rediss() {
    let dir = std::env::temp_dir().join(format!("wsgate-rediss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, certificate, key) = ca_and_server_certificate();
    let path = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (ca_file, cert_file, key_file) = (
        path("ca.pem", &ca),
        path("cert.pem", &certificate),
        path("key.pem", &key),
    );
    let tls_port = RedisServer::free_port();
    let redis = RedisServer::start_with(
        RedisServer::free_port(),
        &[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &cert_file,
            "--tls-key-file",
            &key_file,
            "--tls-ca-cert-file",
            &ca_file,
            "--tls-auth-clients",
            "no",
        ],
    );
    let rediss = format!("rediss://127.0.0.1:{tls_port}");
    let node = |c: &mut Config| {
        c.redis_url = Some(rediss.clone());
        c.redis_ca = Some(ca.clone().into_bytes());
    };
    let a = TestServer::start(config().with(node)).await;
    let b = TestServer::start(config().with(node)).await;
    redis.await_control_subscribers(2).await;
    let mut on_a = a.join("secure", "ann").await;
    let mut on_b = b.join("secure", "ben").await;
    redis.await_subscribers("secure", 2).await;
    send(&mut on_a, r#"{"message":"over TLS"}"#).await;
    loop {
        let got = next_json(&mut on_b).await;
        if got["type"] == "message" {
            assert_eq!(
                (got["message"].as_str(), got["seq"].as_u64().is_some()),
                (Some("over TLS"), true)
            );
            break;
        }
    }
    a.handle.revoke_user("carl");
    redis
        .await_keys("wsgate:revoked:user:carl", |keys| keys.len() == 1)
        .await;

    // A node that does not trust that CA (the system's roots) never links.
    let c = TestServer::start(config().with(|c| c.redis_url = Some(rediss.clone()))).await;
    await_metric(&c, "wsgate_redis_reconnects_total", |n| n >= 2.0).await;
    assert_eq!(c.metric("wsgate_redis_up").await, 0.0);
    redis.await_control_subscribers(2).await;
    let _ = std::fs::remove_dir_all(&dir);
}
