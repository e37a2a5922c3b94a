//! What a revocation names (PROTOCOL.md §9), as the admin API, the Redis control channel and
//! stored entries write it: `{"jti":…,"exp":E}`, `{"user":…}` or `{"session":…}`, exactly
//! one, nothing else.

use serde::Deserialize;

use crate::jwt::check_subject;

/// What to revoke. Also the JSON of `POST /admin/revoke` and of the Redis control channel.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(untagged, try_from = "RevokeBody")]
pub enum Revoke {
    /// One token, by its `jti`, until its `exp` (plus leeway).
    Jti {
        /// The token's `jti`.
        jti: String,
        /// The token's `exp`: the entry is dropped once the token could not be used anyway.
        exp: i64,
    },
    /// Every credential of `user` issued before now (and every one without `iat`).
    User {
        /// The `sub`.
        user: String,
    },
    /// Every connection that came in with this session id, and the id itself.
    Session {
        /// The session id (the `sessionid` cookie's value).
        session: String,
    },
}

/// `{"jti":…,"exp":E}`, `{"user":…}` or `{"session":…}`: exactly one, nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    jti: Option<String>,
    exp: Option<i64>,
    user: Option<String>,
    session: Option<String>,
}

impl Revoke {
    /// A revocation from a client's JSON body (the admin API), checked strictly: exactly one
    /// kind, nothing else, and values a real credential can have (a `user` under the `sub`
    /// rule, a `jti` or `session` of 1–256 bytes).
    pub(crate) fn parse(body: &[u8]) -> Result<Revoke, String> {
        let body: RevokeBody = serde_json::from_slice(body).map_err(|e| json_error(&e, EXPECTED))?;
        let revoke = Revoke::try_from(body)?;
        let short = |what: &str, value: &str| match value.is_empty() || value.len() > 256 {
            true => Err(format!("{what} must be 1-256 bytes")),
            false => Ok(()),
        };
        match &revoke {
            Revoke::Jti { jti, .. } => short("jti", jti)?,
            Revoke::User { user } => check_subject(user).map_err(|e| format!("user: {e}"))?,
            Revoke::Session { session } => short("session", session)?,
        }
        Ok(revoke)
    }
}

/// The shape of a revocation, wherever it comes from: exactly one kind, nothing else. The
/// values are not checked here: a signed control message or stored entry (PROTOCOL.md §12)
/// carries what a node or the application revoked, and a node revokes whatever credential it
/// was asked to (an empty `jti`, a session store's long username), so every other node must
/// take it as it is.
impl TryFrom<RevokeBody> for Revoke {
    type Error = String;

    fn try_from(body: RevokeBody) -> Result<Revoke, String> {
        match body {
            RevokeBody {
                jti: Some(jti),
                exp: Some(exp),
                user: None,
                session: None,
            } => Ok(Revoke::Jti { jti, exp }),
            RevokeBody {
                jti: Some(_),
                exp: None,
                ..
            } => Err("a jti revocation needs the token's exp".to_owned()),
            RevokeBody {
                jti: None,
                exp: None,
                user: Some(user),
                session: None,
            } => Ok(Revoke::User { user }),
            RevokeBody {
                jti: None,
                exp: None,
                user: None,
                session: Some(session),
            } => Ok(Revoke::Session { session }),
            _ => Err(EXPECTED.to_owned()),
        }
    }
}

/// What a revocation body looks like, for the error that says it was not one.
const EXPECTED: &str = r#"expected exactly one of {"jti":…,"exp":…}, {"user":…}, {"session":…}"#;

/// Why a JSON body was refused, saying what was `expected` and quoting nothing from the body
/// (serde's own messages quote field names and values a client sent: PROTOCOL.md §4).
pub(crate) fn json_error(e: &serde_json::Error, expected: &str) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Data => "unknown field, missing field or wrong type",
        Category::Syntax | Category::Eof | Category::Io => "not valid JSON",
    };
    format!("bad JSON body: {what}; {expected}")
}
