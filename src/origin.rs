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

/// How clients reach the server, which decides the scheme of the same origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Plain TCP: `ws://`, or `wss://` through a proxy that terminates TLS. The same origin
    /// may be `http://` or `https://` (behind a proxy the page is `https://`).
    #[default]
    Plain,
    /// TLS terminated by wsgate itself (feature `tls`): the same origin is `https://` only. A
    /// page served over plain `http://` from the same host is not the page this server
    /// serves, and anyone on the network path could have written it.
    Tls,
}

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
    ///
    /// This is the check for a plain listener; [`OriginPolicy::check_via`] says how clients
    /// reach the server.
    pub fn check(&self, head: &RequestHead, carrier: Option<Carrier>) -> Result<(), Rejection> {
        self.check_via(head, carrier, Transport::Plain)
    }

    /// [`OriginPolicy::check`] for a server reached through `transport`: with TLS, the same
    /// origin must be `https://`.
    ///
    /// ```
    /// use wsgate::origin::{OriginPolicy, Transport};
    /// use wsgate::credentials::Carrier;
    /// use wsgate::head::RequestHead;
    ///
    /// let raw = b"GET /ws/chat/lobby HTTP/1.1\r\nHost: chat.example\r\nOrigin: http://chat.example\r\n\r\n";
    /// let (head, _) = RequestHead::parse(raw).unwrap().unwrap();
    /// let cookie = Some(Carrier::Cookie);
    /// assert!(OriginPolicy::SameOrigin.check_via(&head, cookie, Transport::Plain).is_ok());
    /// assert!(OriginPolicy::SameOrigin.check_via(&head, cookie, Transport::Tls).is_err());
    /// ```
    pub fn check_via(
        &self,
        head: &RequestHead,
        carrier: Option<Carrier>,
        transport: Transport,
    ) -> Result<(), Rejection> {
        let ambient = carrier.is_some_and(Carrier::is_ambient);
        let mut origins = head.headers("origin");
        match (origins.next(), origins.next()) {
            (Some(_), Some(_)) => Err(Rejection::OriginNotAllowed("more than one Origin header".into())),
            (Some(origin), None) if self.allows_via(origin, head.host(), ambient, transport) => Ok(()),
            (Some(origin), None) => Err(Rejection::OriginNotAllowed(
                self.refusal(origin, ambient, transport).into(),
            )),
            (None, _) if ambient => Err(Rejection::OriginNotAllowed(
                "cookie credentials require an allowed Origin".into(),
            )),
            (None, _) => Ok(()),
        }
    }

    /// Whether `origin` is allowed for a request whose `Host` header is `host`; `ambient`:
    /// the credential is a cookie, which `*` never covers.
    pub fn allows(&self, origin: &str, host: Option<&str>, ambient: bool) -> bool {
        self.allows_via(origin, host, ambient, Transport::Plain)
    }

    /// [`OriginPolicy::allows`] for a server reached through `transport`.
    pub fn allows_via(&self, origin: &str, host: Option<&str>, ambient: bool, transport: Transport) -> bool {
        same_origin(origin, host, transport)
            || match self {
                OriginPolicy::SameOrigin => false,
                OriginPolicy::List(allowed) => allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)),
                OriginPolicy::Any => !ambient,
            }
    }

    /// What to tell the page that was refused: its own Origin (it knows it anyway; quoted
    /// and cut short, since it is the client's text) and what would have been allowed, so a
    /// typo in `--origins` shows at the first refusal.
    fn refusal(&self, origin: &str, ambient: bool, transport: Transport) -> String {
        let origin: String = origin.chars().take(100).collect();
        let same = match transport {
            Transport::Plain => "the same origin as Host",
            Transport::Tls => "the same origin as Host, over https",
        };
        let allowed = match self {
            OriginPolicy::SameOrigin => same.to_owned(),
            OriginPolicy::List(list) => format!("{same}, {}", list.join(", ")),
            OriginPolicy::Any => format!("any origin, but for cookie credentials only {same}"),
        };
        let cookie = if ambient { " with a cookie credential" } else { "" };
        format!("origin {origin:?} not allowed{cookie}; allowed: {allowed}")
    }
}

/// The `Origin`'s host[:port] equals `Host` (default ports ignored), and over TLS its scheme
/// is `https`. The opaque origin `null` (sandboxed frames, `file:` pages) is never the same
/// origin.
fn same_origin(origin: &str, host: Option<&str>, transport: Transport) -> bool {
    let (Some((scheme, authority)), Some(host)) = (origin.split_once("://"), host) else {
        return false;
    };
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return false;
    }
    let default_port = match (scheme.to_ascii_lowercase().as_str(), transport) {
        ("https", _) => ":443",
        (_, Transport::Tls) => return false,
        ("http" | "ws", Transport::Plain) => ":80",
        ("wss", Transport::Plain) => ":443",
        _ => return false,
    };
    let strip = |a: &str| -> String {
        let a = a.to_ascii_lowercase();
        a.strip_suffix(default_port).map(str::to_owned).unwrap_or(a)
    };
    strip(authority) == strip(host.trim())
}
