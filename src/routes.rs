//! The plain-HTTP endpoints beside the chat route (PROTOCOL.md §1): `/healthz`, `/metrics`,
//! and in dev mode the demo page at `/` and its token helper `/dev/token`.

use std::net::SocketAddr;

use crate::config::Config;
use crate::credentials::percent_decode;
use crate::head::RequestHead;
use crate::http::Response;
use crate::jwt::{Claims, check_subject, unix_now};
use crate::metrics::{Gauges, Metrics};
use crate::rejection::Rejection;

/// The demo page, compiled in: one file, no external assets, no build step.
const DEMO_PAGE: &str = include_str!("demo.html");

/// The demo page may run its own inline script and talk to this origin only; nothing may
/// frame it, and no URL (which may carry a `?token=`) leaks through `Referer`.
const DEMO_HEADERS: [(&str, &str); 3] = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
    ),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
];

/// How long a dev token lives, at most (and by default).
const DEV_TOKEN_TTL: i64 = 3600;

/// The answer to a request for any path but the chat route. `gauges` are for `/metrics`.
pub(crate) fn answer(
    head: &RequestHead,
    peer: SocketAddr,
    config: &Config,
    metrics: &Metrics,
    gauges: &Gauges,
) -> Result<Response, Rejection> {
    let get = head.method() == "GET";
    if head.is_http11() && head.host().is_none() {
        return Err(Rejection::BadRequest(
            "exactly one Host header is required (RFC 9112 section 3.2)".into(),
        ));
    }
    match head.path() {
        "/healthz" if get => Ok(Response::ok("text/plain", "ok\n")),
        "/metrics" if get => Ok(Response::ok(
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(gauges),
        )),
        "/" if config.demo && get => {
            let mut page = Response::ok("text/html; charset=utf-8", DEMO_PAGE);
            page.headers
                .extend(DEMO_HEADERS.iter().map(|(n, v)| (*n, (*v).to_owned())));
            Ok(page)
        }
        "/dev/token" if config.dev_tokens && get => dev_token(head, peer, config),
        "/healthz" | "/metrics" => Err(Rejection::MethodNotAllowed),
        "/" if config.demo => Err(Rejection::MethodNotAllowed),
        "/dev/token" if config.dev_tokens => Err(Rejection::MethodNotAllowed),
        _ => Err(Rejection::NotFound),
    }
}

/// A token for `?sub=NAME`, any room, for `&ttl=SECONDS` (1 to 3600, default 3600: short ones
/// let the demo show a refresh). Only a client on this machine that addresses
/// us by a loopback name gets one: checking `Host` too stops DNS rebinding, where a web page
/// on an attacker's domain that resolves to 127.0.0.1 would otherwise count as "local".
fn dev_token(head: &RequestHead, peer: SocketAddr, config: &Config) -> Result<Response, Rejection> {
    let host_is_loopback = head.host().is_some_and(is_loopback_host);
    if !peer.ip().is_loopback() || !host_is_loopback {
        return Err(Rejection::Forbidden("dev tokens are for this machine only".into()));
    }
    let param = |name: &str| {
        let prefix = format!("{name}=");
        head.query()
            .unwrap_or_default()
            .split('&')
            .find_map(|pair| pair.strip_prefix(prefix.as_str()).map(str::to_owned))
    };
    let sub = param("sub")
        .as_deref()
        .and_then(percent_decode)
        .ok_or_else(|| Rejection::BadRequest("missing ?sub=NAME".into()))?;
    check_subject(&sub).map_err(|e| Rejection::BadRequest(format!("sub: {e}").into()))?;
    let ttl = match param("ttl") {
        None => DEV_TOKEN_TTL,
        Some(ttl) => match ttl.parse::<i64>() {
            Ok(ttl @ 1..=DEV_TOKEN_TTL) => ttl,
            _ => return Err(Rejection::BadRequest("ttl must be 1 to 3600 seconds".into())),
        },
    };
    let key = config.keys.first().ok_or(Rejection::NotFound)?;
    let mut claims = Claims::new(sub, unix_now() + ttl);
    claims.iat = Some(unix_now());
    let token = key.sign(&claims);
    Ok(Response::ok("text/plain; charset=utf-8", token))
}

/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
