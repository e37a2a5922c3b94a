//! `wsgate connect`: a terminal client that shows what each credential carrier puts on the
//! wire (PROTOCOL.md §6). Lines typed on stdin go out as chat messages, every frame received
//! is printed, and the way the connection ended is printed with its meaning and reflected in
//! the exit code, so a script can tell "re-authenticate" from "go away".

use std::process::ExitCode;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::{Duration, Instant, timeout_at};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::Usage;

/// `println!` that does not panic when stdout is gone (`wsgate connect … | head -1`).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
use crate::args::{Carrier, ConnectArgs};

/// How long to wait, after stdin ends, for the echoes of what we sent before closing.
const DRAIN: Duration = Duration::from_secs(2);

/// Exit codes, for scripts (also in `wsgate connect --help`).
pub(crate) const EXIT_UNAUTHENTICATED: u8 = 3;
pub(crate) const EXIT_FORBIDDEN: u8 = 4;
pub(crate) const EXIT_TRY_LATER: u8 = 5;

pub(crate) fn connect(args: ConnectArgs) -> Result<ExitCode, Usage> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = runtime.block_on(run(args));
    // tokio reads stdin on a blocking thread that a runtime's drop waits for: when the server
    // ends the connection while the terminal is still open, that wait would last until the
    // user types a line or Ctrl-D. Nothing else is left running here.
    runtime.shutdown_background();
    result
}

async fn run(args: ConnectArgs) -> Result<ExitCode, Usage> {
    // An empty `--token` (an unset variable) is sent as it is, so the server can say so.
    let token = args.token.as_deref();
    let mut request = request(&args.url, token, args.carrier)?;
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| Usage(format!("-H {header:?}: expected NAME: VALUE")))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| Usage(format!("-H: bad header name {name:?}")))?;
        let value =
            HeaderValue::from_str(value.trim()).map_err(|_| Usage("-H: a header value cannot carry that".into()))?;
        request.headers_mut().append(name, value);
    }
    if args.verbose {
        let target = request.uri().path_and_query().map_or("/".to_owned(), |p| p.to_string());
        eprintln!("> {} {} HTTP/1.1", request.method(), redact_target(&target));
        for (name, value) in request.headers() {
            eprintln!(
                "> {name}: {}",
                redact_header(name.as_str(), value.to_str().unwrap_or("<binary>"))
            );
        }
        eprintln!(">");
    }
    let (ws, response) = match tokio_tungstenite::connect_async(request).await {
        Ok(connected) => connected,
        Err(WsError::Http(response)) => {
            let status = response.status();
            if args.verbose {
                print_head(status.as_u16(), status.canonical_reason(), response.headers());
            }
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let meaning = match status.as_u16() {
                401 => "unauthenticated: get a new token and reconnect",
                403 => "forbidden: this credential may not be here; reconnecting will not help",
                404 if !args.url.contains("/ws/chat/") => "not found: rooms are at ws://HOST:PORT/ws/chat/ROOM",
                429 | 503 => "busy: retry later",
                _ => "",
            };
            say!("refused: HTTP {status} {}", body.trim());
            if !meaning.is_empty() {
                say!("({meaning})");
            }
            return Ok(ExitCode::from(match status.as_u16() {
                401 => EXIT_UNAUTHENTICATED,
                403 => EXIT_FORBIDDEN,
                429 | 503 => EXIT_TRY_LATER,
                _ => 1,
            }));
        }
        Err(e) => {
            say!("could not connect: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if args.verbose {
        let status = response.status();
        print_head(status.as_u16(), status.canonical_reason(), response.headers());
    }
    let (mut sink, mut stream) = ws.split();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut username = None;
    let (mut sent, mut echoed) = (0u64, 0u64);
    let mut drain_until: Option<Instant> = None;
    let mut we_closed = false;
    let close = loop {
        let deadline = drain_until.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) => {
                    // A line that is a JSON object goes out as typed (a refresh, say); any other
                    // line is a chat message. Never wrap a `{"type":"refresh",…}` as chat: that
                    // would show the new token to the whole room.
                    let message = match line.trim_start().starts_with('{') {
                        true => line,
                        false => serde_json::json!({ "message": line }).to_string(),
                    };
                    if sink.send(Message::text(message)).await.is_err() {
                        break None;
                    }
                    sent += 1;
                }
                // Stdin ended: wait (boundedly) for our own messages to come back, then leave.
                _ => {
                    stdin_open = false;
                    drain_until = Some(Instant::now() + DRAIN);
                    if echoed >= sent {
                        we_closed = sink.send(Message::Close(None)).await.is_ok();
                    }
                }
            },
            frame = timeout_at(deadline, stream.next()) => match frame {
                Err(_) => {
                    we_closed = sink.send(Message::Close(None)).await.is_ok();
                    drain_until = None;
                }
                Ok(None) => break None,
                Ok(Some(Err(e))) => {
                    say!("connection lost: {e}");
                    break None;
                }
                Ok(Some(Ok(Message::Text(text)))) => {
                    say!("{text}");
                    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    match json["type"].as_str() {
                        Some("welcome") => username = json["username"].as_str().map(str::to_owned),
                        Some("message") if json["username"].as_str() == username.as_deref() => echoed += 1,
                        _ => {}
                    }
                    if !stdin_open && echoed >= sent && !we_closed {
                        we_closed = sink.send(Message::Close(None)).await.is_ok();
                    }
                }
                Ok(Some(Ok(Message::Close(frame)))) => break Some(frame),
                Ok(Some(Ok(_))) => {}
            },
        }
    };
    if we_closed && !matches!(close, Some(Some(_))) {
        say!("closed by us: stdin ended");
        return Ok(ExitCode::SUCCESS);
    }
    Ok(ended(close))
}

/// The upgrade request for `url`, with `token` where `carrier` puts it.
fn request(url: &str, token: Option<&str>, carrier: Carrier) -> Result<Request, Usage> {
    let mut url = url.to_owned();
    if let (Some(token), Carrier::Query) = (token, carrier) {
        let separator = if url.contains('?') { '&' } else { '?' };
        url = format!("{url}{separator}token={token}");
    }
    let mut request = url.as_str().into_client_request().map_err(|e| {
        Usage(format!(
            "{}: {e} (expected ws://host:port/ws/chat/ROOM)",
            redact_target(&url)
        ))
    })?;
    let Some(token) = token else { return Ok(request) };
    let value = |text: String| {
        HeaderValue::from_str(&text).map_err(|_| Usage("the token has characters a header cannot carry".into()))
    };
    let headers = request.headers_mut();
    match carrier {
        Carrier::Header => {
            headers.insert("Authorization", value(format!("Bearer {token}"))?);
        }
        Carrier::Subprotocol => {
            // What a browser must send: a protocol to echo, and the token as a second entry.
            headers.insert("Sec-WebSocket-Protocol", value(format!("chat, bearer.{token}"))?);
        }
        Carrier::Query => {}
        Carrier::Cookie => {
            // A cookie only counts with an allowed Origin: present the server's own, as a page
            // it served would.
            let host = request.uri().authority().map(|a| a.to_string()).unwrap_or_default();
            let scheme = if request.uri().scheme_str() == Some("wss") {
                "https"
            } else {
                "http"
            };
            let headers = request.headers_mut();
            headers.insert("Cookie", value(format!("access_token={token}"))?);
            headers.insert("Origin", value(format!("{scheme}://{host}"))?);
        }
    }
    Ok(request)
}

fn print_head(status: u16, reason: Option<&str>, headers: &tokio_tungstenite::tungstenite::http::HeaderMap) {
    eprintln!("< HTTP/1.1 {status} {}", reason.unwrap_or(""));
    for (name, value) in headers {
        eprintln!("< {name}: {}", value.to_str().unwrap_or("<binary>"));
    }
    eprintln!("<");
}

/// The request target with the value of every `token` parameter replaced: what `-v` shows
/// never carries a credential, wherever it came from (`--token` or the URL itself).
fn redact_target(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if name == "token" => format!("{name}=<token>"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

/// A request header's value with its credentials replaced, whether `--token` or `-H` put them
/// there: the `Authorization` credentials, every cookie value, `bearer.` protocol entries.
fn redact_header(name: &str, value: &str) -> String {
    match name {
        "authorization" => match value.split_once(' ') {
            Some((scheme, _)) => format!("{scheme} <token>"),
            None => "<token>".to_owned(),
        },
        "cookie" => value
            .split(';')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{}=<redacted>", name.trim()),
                None => pair.trim().to_owned(),
            })
            .collect::<Vec<_>>()
            .join("; "),
        "sec-websocket-protocol" => value
            .split(',')
            .map(|entry| match entry.trim().strip_prefix("bearer.") {
                Some(_) => "bearer.<token>".to_owned(),
                None => entry.trim().to_owned(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => value.to_owned(),
    }
}

/// Prints how the connection ended and what it means; the exit code says the same.
fn ended(close: Option<Option<CloseFrame>>) -> ExitCode {
    let Some(Some(frame)) = close else {
        say!("closed without a close frame");
        return ExitCode::FAILURE;
    };
    let code = u16::from(frame.code);
    let (meaning, exit) = match code {
        1000 => ("normal closure", 0),
        1001 => ("going away: the server is shutting down, or the connection was idle", 0),
        1003 => ("binary frames are not accepted", 1),
        1007 => ("a text frame was not UTF-8", 1),
        1008 => ("policy: the client did not read what the server sent", 1),
        1009 => ("message too big", 1),
        4401 => ("unauthenticated: get a new token and reconnect", EXIT_UNAUTHENTICATED),
        4403 => (
            "forbidden: this credential may not be here; reconnecting will not help",
            EXIT_FORBIDDEN,
        ),
        4429 => ("too many connections for this user: retry later", EXIT_TRY_LATER),
        _ => ("", 1),
    };
    say!("closed {code} {:?}: {meaning}", frame.reason.as_str());
    ExitCode::from(exit)
}
