//! The HTTP request head: a bounded, strict parse of what a client sends before the upgrade.
//!
//! Everything wsgate decides about a connection (route, credential, origin, upgrade) is read
//! from a [`RequestHead`]. The parse is done once, with `httparse`, under fixed limits so a
//! client cannot make us buffer or scan more than [`MAX_HEAD_BYTES`].
//!
//! ```
//! use wsgate::head::RequestHead;
//!
//! let raw = b"GET /ws/chat/lobby?token=abc HTTP/1.1\r\nHost: example.com\r\n\r\n";
//! let (head, len) = RequestHead::parse(raw).unwrap().unwrap();
//! assert_eq!((head.path(), head.query(), len), ("/ws/chat/lobby", Some("token=abc"), raw.len()));
//! assert_eq!(head.header("host"), Some("example.com"));
//! ```

use std::fmt;

/// The largest request head we read; a larger one is answered `431`.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// The most header fields we accept; more is answered `431`.
pub const MAX_HEADERS: usize = 64;

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Over [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`].
    TooLarge,
    /// Not a valid HTTP/1.x request head; the text says what is wrong.
    Malformed(&'static str),
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::TooLarge => write!(f, "request head too large"),
            HeadError::Malformed(why) => write!(f, "malformed request: {why}"),
        }
    }
}

impl std::error::Error for HeadError {}

/// A parsed HTTP/1.x request head. Header names keep their spelling; lookups ignore case.
///
/// Its `Debug` output leaves out the query string and header values, which may hold a
/// credential.
#[derive(Clone)]
pub struct RequestHead {
    method: String,
    path: String,
    query: Option<String>,
    /// The authority of an absolute-form target (`GET http://host/path`), which stands in for
    /// `Host` (RFC 9112 §3.2.2).
    authority: Option<String>,
    minor_version: u8,
    headers: Vec<(String, String)>,
}

impl fmt::Debug for RequestHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("RequestHead")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query.as_ref().map(|_| "<redacted>"))
            .field("header_names", &names)
            .finish()
    }
}

impl RequestHead {
    /// Parses the head at the start of `buf`.
    ///
    /// Returns `Ok(None)` while the head is incomplete (and still within the limits), or the
    /// head and its length in bytes; whatever follows it in `buf` belongs to the next protocol.
    pub fn parse(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let len = match request.parse(buf) {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
            Ok(httparse::Status::Complete(_)) => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(_) => return Err(HeadError::Malformed("invalid HTTP request head")),
        };
        // `Complete` guarantees method, path and version are set.
        let method = request.method.unwrap_or_default().to_owned();
        let target = request.path.unwrap_or_default();
        let minor_version = request.version.unwrap_or_default();
        let (authority, target) = split_target(target)?;
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
            None => (target.to_owned(), None),
        };
        let headers = request
            .headers
            .iter()
            .map(|h| {
                // httparse allows obs-text bytes in values; they can never be part of a valid
                // credential, origin or upgrade token, so a lossy conversion loses nothing.
                (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned())
            })
            .collect();
        Ok(Some((
            RequestHead {
                method,
                path,
                query,
                authority,
                minor_version,
                headers,
            },
            len,
        )))
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path, without the query string, exactly as sent (not percent-decoded).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query string after `?`, if any, exactly as sent. It may hold a credential: never
    /// log it.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The host the request is for: the authority of an absolute-form target, else the `Host`
    /// header. `None` when there is not exactly one non-empty `Host` header, which RFC 9112
    /// §3.2 requires of every HTTP/1.1 request: with two, a proxy and this server could each
    /// believe a different one, and the same-origin check would compare against a guess.
    pub fn host(&self) -> Option<&str> {
        let mut hosts = self.headers("host");
        let host = match (hosts.next().map(str::trim), hosts.next()) {
            (Some(host), None) if !host.is_empty() => host,
            _ => return None,
        };
        Some(self.authority.as_deref().unwrap_or(host))
    }

    /// `true` for HTTP/1.1, the only version a WebSocket upgrade may use (RFC 6455 §4.1).
    pub fn is_http11(&self) -> bool {
        self.minor_version == 1
    }

    /// The value of the first header field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The values of every header field named `name` (case-insensitive), in order.
    pub fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The elements of a comma-separated header list (RFC 9110 §5.6.1) across every field
    /// named `name`, trimmed, empty elements skipped.
    pub fn list<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers(name)
            .flat_map(|v| v.split(','))
            .map(|e| e.trim_matches([' ', '\t']))
            .filter(|e| !e.is_empty())
    }
}

/// Splits a request target into the authority of an absolute-form target, if any, and the
/// origin-form rest (`/path?query`). Other forms (`*`, authority-form) are refused: they are
/// for `OPTIONS` and `CONNECT`, which no route here answers.
fn split_target(target: &str) -> Result<(Option<String>, &str), HeadError> {
    if target.starts_with('/') {
        return Ok((None, target));
    }
    let rest = ["http://", "https://", "ws://", "wss://"]
        .iter()
        .find_map(|scheme| {
            let prefix = target.get(..scheme.len())?;
            prefix.eq_ignore_ascii_case(scheme).then(|| &target[scheme.len()..])
        })
        .ok_or(HeadError::Malformed(
            "request target must be /path or an absolute http URL",
        ))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return Err(HeadError::Malformed(
            "absolute request target needs a host and no userinfo",
        ));
    }
    match path {
        "" => Ok((Some(authority.to_owned()), "/")),
        _ if path.starts_with('?') => Err(HeadError::Malformed("absolute request target needs a path before ?")),
        _ => Ok((Some(authority.to_owned()), path)),
    }
}
