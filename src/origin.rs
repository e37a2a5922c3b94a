//! Which web pages may open a connection: the `Origin` check (PROTOCOL.md §4).
//!
//! A browser attaches cookies to a WebSocket request whatever page opens it, and WebSockets
//! are not covered by CORS. Without this check any site a user visits could open a socket
//! with the user's cookie and act as the user: cross-site WebSocket hijacking (CSWSH). The
//! `Origin` header, which a page's script cannot forge, says which site is asking.
//!
//! ```
//! use wsgate::OriginPolicy;
//! use wsgate::credentials::Carrier;
//! use wsgate::head::RequestHead;
//!
//! let raw = b"GET /ws/chat/lobby HTTP/1.1\r\nHost: chat.example\r\nOrigin: https://evil.example\r\n\r\n";
//! let (head, _) = RequestHead::parse(raw).unwrap().unwrap();
//! // `*` lets any page connect with a token it holds, but never with the user's cookie.
//! assert!(OriginPolicy::Any.check(&head, Some(Carrier::Query)).is_ok());
//! assert!(OriginPolicy::Any.check(&head, Some(Carrier::Cookie)).is_err());
//! ```

use crate::credentials::Carrier;
use crate::head::RequestHead;
use crate::rejection::Rejection;

/// Which `Origin`s may connect.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OriginPolicy {
    /// The `Origin`'s host and port must equal the `Host` header. The default.
    #[default]
    SameOrigin,
    /// These `scheme://host[:port]` origins (compared case-insensitively), besides the same
    /// origin: a page this server serves itself (the demo) is never refused.
    List(Vec<String>),
    /// Any origin, for credentials a page must hold itself (header, subprotocol, query).
    /// Cookie credentials still need the same origin: `*` cannot reopen CSWSH.
    Any,
}

impl OriginPolicy {
    /// Checks the request's `Origin` for a credential found in `carrier`.
    ///
    /// An `Origin` that is present must be allowed, whatever the credential: browsers always
    /// send it on WebSocket requests, so a foreign one means a page on another site. A missing
    /// `Origin` means a non-browser client, which is fine unless the credential is a cookie,
    /// which only a browser would attach on its own.
    pub fn check(&self, head: &RequestHead, carrier: Option<Carrier>) -> Result<(), Rejection> {
        let ambient = carrier.is_some_and(Carrier::is_ambient);
        let mut origins = head.headers("origin");
        match (origins.next(), origins.next()) {
            (Some(_), Some(_)) => Err(Rejection::OriginNotAllowed("more than one Origin header".into())),
            (Some(origin), None) if self.allows(origin, head.host(), ambient) => Ok(()),
            (Some(origin), None) => Err(Rejection::OriginNotAllowed(self.refusal(origin, ambient).into())),
            (None, _) if ambient => Err(Rejection::OriginNotAllowed(
                "cookie credentials require an allowed Origin".into(),
            )),
            (None, _) => Ok(()),
        }
    }

    /// Whether `origin` is allowed for a request whose `Host` header is `host`; `ambient`:
    /// the credential is a cookie, which `*` never covers.
    pub fn allows(&self, origin: &str, host: Option<&str>, ambient: bool) -> bool {
        same_origin(origin, host)
            || match self {
                OriginPolicy::SameOrigin => false,
                OriginPolicy::List(allowed) => allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)),
                OriginPolicy::Any => !ambient,
            }
    }

    /// What to tell the page that was refused: its own Origin (it knows it anyway; quoted
    /// and cut short, since it is the client's text) and what would have been allowed, so a
    /// typo in `--origins` shows at the first refusal.
    fn refusal(&self, origin: &str, ambient: bool) -> String {
        let origin: String = origin.chars().take(100).collect();
        let allowed = match self {
            OriginPolicy::SameOrigin => "the same origin as Host".to_owned(),
            OriginPolicy::List(list) => format!("the same origin as Host, {}", list.join(", ")),
            OriginPolicy::Any => "any origin, but for cookie credentials only the same origin".to_owned(),
        };
        let cookie = if ambient { " with a cookie credential" } else { "" };
        format!("origin {origin:?} not allowed{cookie}; allowed: {allowed}")
    }
}

/// The `Origin`'s host[:port] equals `Host` (default ports ignored). The opaque origin
/// `null` (sandboxed frames, `file:` pages) is never the same origin.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let (Some((scheme, authority)), Some(host)) = (origin.split_once("://"), host) else {
        return false;
    };
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return false;
    }
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => ":80",
        "https" | "wss" => ":443",
        _ => return false,
    };
    let strip = |a: &str| -> String {
        let a = a.to_ascii_lowercase();
        a.strip_suffix(default_port).map(str::to_owned).unwrap_or(a)
    };
    strip(authority) == strip(host.trim())
}
