//! The control channel between nodes (PROTOCOL.md §9 and §12): revocations and notices
//! travel as signed JSON on the Redis channel `wsgate:control`, and revocations are also
//! stored in Redis, signed the same way, so a node that starts or relinks later enforces them.
//!
//! The body is the admin API's JSON wrapped in one key, so an application that already talks
//! to Redis (a Django or FastAPI backend at logout) can publish it itself, signed:
//!
//! ```text
//! {"revoke":{"user":"alice"}}
//! {"revoke":{"session":"3f1c9a7e5b2d4c6f"}}
//! {"publish":{"room":"lobby","message":"back in 5 minutes"}}
//! ```
//!
//! **Why signed.** Redis is shared infrastructure: a client that may `PUBLISH` there (a
//! metrics exporter, a compromised worker) would otherwise speak for every node, closing any
//! user's sockets or refusing their tokens for good. So each message on the wire is
//! `{"body":B,"mac":M}`: `B` the JSON above as a string, `M` the base64url HMAC-SHA256 of `B`
//! under a key derived from the token secret (`HMAC(secret, "wsgate control v1")`, never the
//! secret itself, so no control message can pass for a token or the other way round). A
//! message whose MAC fails is ignored and counted (`wsgate_control_rejected_total`).
//!
//! A notice published this way reaches the members connected now, on every node, without a
//! `seq` and outside history (every node gets it, so none can number it once); the admin
//! API's publish goes through the room's history instead (PROTOCOL.md §10).
//!
//! A message a node sent itself carries `"origin":"<node id>"` and is skipped when it comes
//! back. `"at"` says when a revocation was made (default: now; a moment in the future is
//! taken as now, so no message can make a revocation outlast its TTL).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::jwt::{Key, unix_now};
use crate::revocation::Revoke;

/// What the control key is derived with: a new version of the format gets a new label.
const LABEL: &[u8] = b"wsgate control v1";

/// One control message: the body inside the signed envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Control {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke: Option<Revoke>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Notice>,
    /// When the revocation was made (Unix seconds); absent: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<i64>,
    /// The node that sent it, which skips it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// `{"room":…,"message":…}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Notice {
    pub room: String,
    pub message: String,
}

impl Control {
    /// A revocation made at `at` by `origin` (`None`: restored, not sent by anyone).
    pub fn revoke(revoke: Revoke, at: i64, origin: Option<&str>) -> Control {
        Control {
            revoke: Some(revoke),
            publish: None,
            at: Some(at),
            origin: origin.map(str::to_owned),
        }
    }

    /// When the revocation was made: never later than now.
    pub fn made_at(&self) -> i64 {
        let now = unix_now();
        self.at.unwrap_or(now).min(now)
    }

    /// The body's JSON.
    fn to_json(&self) -> String {
        serde_json::to_string(self).expect("control messages hold only strings and numbers")
    }
}

/// The envelope on the wire.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(borrow)]
    body: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    mac: std::borrow::Cow<'a, str>,
}

/// Why a control message was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not an envelope, or its MAC fails under every key: forged, or signed with another secret.
    BadSignature,
    /// Signed, but not a control message this version knows.
    Unknown,
}

/// Signs control messages with the primary key's control key and accepts any key's.
#[derive(Clone)]
pub(crate) struct Signer {
    /// The first is the signing key; all are accepted, so keys rotate as tokens' do.
    keys: Vec<Hmac<Sha256>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("keys", &self.keys.len()).finish()
    }
}

impl Signer {
    /// Control keys derived from the token keys; `None` without any key.
    pub fn new(keys: &[Key]) -> Option<Signer> {
        let keys: Vec<_> = keys
            .iter()
            .map(|key| Hmac::<Sha256>::new_from_slice(&key.derive(LABEL)).expect("HMAC takes a key of any length"))
            .collect();
        (!keys.is_empty()).then_some(Signer { keys })
    }

    /// `control` in its signed envelope.
    pub fn seal(&self, control: &Control) -> String {
        let body = control.to_json();
        let mut mac = self.keys[0].clone();
        mac.update(body.as_bytes());
        let mac = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        serde_json::to_string(&Envelope {
            body: body.into(),
            mac: mac.into(),
        })
        .expect("an envelope holds two strings")
    }

    /// The control message in `payload`, if its MAC holds under one of the keys. The MAC is
    /// checked before the body is parsed: a forger's JSON is never even read.
    pub fn open(&self, payload: &[u8]) -> Result<Control, Refused> {
        let envelope: Envelope<'_> = serde_json::from_slice(payload).map_err(|_| Refused::BadSignature)?;
        let mac = URL_SAFE_NO_PAD
            .decode(envelope.mac.as_bytes())
            .map_err(|_| Refused::BadSignature)?;
        // `verify_slice` compares in constant time.
        let signed = self.keys.iter().any(|key| {
            let mut key = key.clone();
            key.update(envelope.body.as_bytes());
            key.verify_slice(&mac).is_ok()
        });
        if !signed {
            return Err(Refused::BadSignature);
        }
        serde_json::from_str(&envelope.body).map_err(|_| Refused::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &[u8]) -> Key {
        Key::new(secret).unwrap()
    }

    #[test]
    fn a_sealed_message_opens_under_any_of_the_keys_and_nothing_else_does() {
        let old = key(b"an old secret of at least thirty-two bytes");
        let new = key(b"a new secret of at least thirty-two bytes!");
        let signer = Signer::new(&[new.clone(), old.clone()]).unwrap();
        let control = Control::revoke(Revoke::User { user: "alice".into() }, 100, Some("n1"));
        let sealed = signer.seal(&control);
        assert!(matches!(signer.open(sealed.as_bytes()), Ok(c) if c.origin.as_deref() == Some("n1")));
        // An application still signing with the old key is accepted during a rotation.
        let by_old = Signer::new(&[old]).unwrap().seal(&control);
        assert!(signer.open(by_old.as_bytes()).is_ok());

        // Forged: unsigned, signed with another secret, body changed, MAC truncated.
        let stranger = Signer::new(&[key(b"somebody else's secret, 32 bytes or more")]).unwrap();
        let tampered = sealed.replace("alice", "alicf");
        let value: serde_json::Value = serde_json::from_str(&sealed).unwrap();
        let short = serde_json::json!({"body": value["body"], "mac": &value["mac"].as_str().unwrap()[..20]});
        for forged in [
            r#"{"revoke":{"user":"alice"},"at":9000000000000000000}"#.to_owned(),
            stranger.seal(&control),
            tampered,
            short.to_string(),
        ] {
            assert_eq!(
                signer.open(forged.as_bytes()).unwrap_err(),
                Refused::BadSignature,
                "{forged}"
            );
        }
    }

    #[test]
    fn a_signed_body_of_unknown_shape_is_refused_as_unknown() {
        let k = key(b"an example secret of at least 32 bytes!!");
        let signer = Signer::new(std::slice::from_ref(&k)).unwrap();
        // The revocation's shape is the admin API's: exactly one kind, nothing else.
        for body in [
            r#"{"revoke":{"user":"a"},"extra":1}"#,
            r#"{"revoke":{"user":"a","extra":1}}"#,
            r#"{"revoke":{"user":"a","session":"s"}}"#,
            r#"{"revoke":{"jti":"j"}}"#,
        ] {
            let mut mac = Hmac::<Sha256>::new_from_slice(&k.derive(LABEL)).unwrap();
            mac.update(body.as_bytes());
            let envelope =
                serde_json::json!({"body": body, "mac": URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())});
            assert_eq!(
                signer.open(envelope.to_string().as_bytes()).unwrap_err(),
                Refused::Unknown,
                "{body}"
            );
        }
    }

    #[test]
    fn any_value_a_node_can_revoke_opens_on_every_other_node() {
        let signer = Signer::new(&[key(b"an example secret of at least 32 bytes!!")]).unwrap();
        for revoke in [
            Revoke::Jti {
                jti: "j".repeat(300),
                exp: 1,
            },
            Revoke::Jti {
                jti: String::new(),
                exp: 1,
            },
            Revoke::User { user: "u".repeat(140) },
            Revoke::Session { session: String::new() },
        ] {
            let sealed = signer.seal(&Control::revoke(revoke.clone(), 100, Some("n1")));
            assert_eq!(signer.open(sealed.as_bytes()).unwrap().revoke, Some(revoke));
        }
    }

    #[test]
    fn a_revocation_dated_in_the_future_counts_from_now() {
        let control = Control::revoke(Revoke::User { user: "a".into() }, i64::MAX, None);
        assert!(control.made_at() <= unix_now());
    }
}
