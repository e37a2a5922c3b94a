//! Option values as typed on the command line, each parsed and checked before the server
//! starts: durations, lists, sizes, addresses, origins.

use std::fmt;
use std::net::SocketAddr;
use std::num::{IntErrorKind, ParseIntError};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use wsgate::OriginPolicy;
use wsgate::config::{MAX_DURATION, MAX_MESSAGE_SIZE_LIMIT};

/// A duration as written on the command line: `250ms`, `30s`, `10m`, `1h`, `2d`, or bare
/// seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;

    fn from_str(text: &str) -> Result<Span, String> {
        let expected = || "expected a number with ms, s, m, h or d, e.g. 30s (a bare number is seconds)".to_owned();
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "" | "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(expected()),
        };
        let too_large = || format!("too large: at most {}", Span(MAX_DURATION));
        let number: u64 = number.parse().map_err(|e: ParseIntError| match e.kind() {
            IntErrorKind::PosOverflow => too_large(),
            _ => expected(),
        })?;
        match number.checked_mul(millis_per_unit).map(Duration::from_millis) {
            Some(duration) if duration <= MAX_DURATION => Ok(Span(duration)),
            _ => Err(too_large()),
        }
    }
}

/// The largest unit that writes it exactly: what `--help` shows as a default.
impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.subsec_millis() != 0 {
            return write!(f, "{}ms", self.0.as_millis());
        }
        let seconds = self.0.as_secs();
        match [(86_400, "d"), (3600, "h"), (60, "m")]
            .into_iter()
            .find(|(unit, _)| seconds != 0 && seconds.is_multiple_of(*unit))
        {
            Some((unit, suffix)) => write!(f, "{}{suffix}", seconds / unit),
            None => write!(f, "{seconds}s"),
        }
    }
}

/// A comma-separated list; blanks around items and empty items are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct List(pub Vec<String>);

impl FromStr for List {
    type Err = String;

    fn from_str(text: &str) -> Result<List, String> {
        Ok(List(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        ))
    }
}

impl fmt::Display for List {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// `--extra-key KID=PATH`.
#[derive(Debug, Clone)]
pub(crate) struct ExtraKey {
    pub kid: String,
    pub path: PathBuf,
}

pub(crate) fn extra_key(text: &str) -> Result<ExtraKey, String> {
    match text.split_once('=') {
        Some((kid, path)) if !kid.is_empty() && !path.is_empty() => Ok(ExtraKey {
            kid: kid.to_owned(),
            path: path.into(),
        }),
        _ => Err("expected KID=PATH, e.g. 2024=/run/secrets/old-key".to_owned()),
    }
}

pub(crate) fn address(text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| "expected an IP address and port, e.g. 127.0.0.1:8080 or [::1]:8080".to_owned())
}

pub(crate) fn whole<T: FromStr<Err = ParseIntError>>(text: &str) -> Result<T, String> {
    text.trim().parse().map_err(|e: ParseIntError| match e.kind() {
        IntErrorKind::PosOverflow => "too large".to_owned(),
        _ => "expected a whole number, e.g. 100".to_owned(),
    })
}

pub(crate) fn message_size(text: &str) -> Result<usize, String> {
    match whole::<usize>(text)? {
        size if size > MAX_MESSAGE_SIZE_LIMIT => Err(format!("too large: at most {MAX_MESSAGE_SIZE_LIMIT} (64 MiB)")),
        size => Ok(size),
    }
}

/// `--rooms`: each entry a room name, or a prefix of one followed by `*`, so a token is never
/// signed for rooms no request could name.
pub(crate) fn rooms(text: &str) -> Result<List, String> {
    let list = List::from_str(text)?;
    for entry in &list.0 {
        let valid = match entry.strip_suffix('*') {
            Some("") => true,
            Some(prefix) => wsgate::room::check_name(prefix).is_ok(),
            None => wsgate::room::check_name(entry).is_ok(),
        };
        if !valid {
            return Err(format!(
                "{entry:?} is not a room name or prefix*: 1-64 characters of [A-Za-z0-9_.-], * only at the end"
            ));
        }
    }
    Ok(list)
}

/// `--sub`: the one rule every username follows.
pub(crate) fn subject(text: &str) -> Result<String, String> {
    wsgate::jwt::check_subject(text).map_err(|e| e.to_string())?;
    Ok(text.to_owned())
}

/// `--origins`: `*`, or `scheme://host[:port]` entries checked one by one. The server compares
/// an `Origin` header with each entry as a string, so an entry a browser never sends (no
/// scheme, a path, a trailing slash) would lock out the very page it was meant for.
pub(crate) fn origins(text: &str) -> Result<OriginPolicy, String> {
    let entries = List::from_str(text)?.0;
    match entries.as_slice() {
        [] => Err("expected scheme://host[:port] entries, comma-separated, or *".to_owned()),
        [any] if any == "*" => Ok(OriginPolicy::Any),
        _ => {
            for entry in &entries {
                check_origin(entry)?;
            }
            Ok(OriginPolicy::List(entries))
        }
    }
}

pub(crate) fn check_origin(entry: &str) -> Result<(), String> {
    let refuse = |why: &str| {
        Err(format!(
            "{entry:?} is not scheme://host[:port]{why} (e.g. https://app.example)"
        ))
    };
    if entry == "*" {
        return refuse(": * stands alone, for any origin");
    }
    let Some((scheme, rest)) = entry.split_once("://") else {
        return refuse("");
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => return refuse(": the scheme is http or https"),
    };
    if rest.contains(['/', '?', '#']) {
        return refuse(": an Origin has no path, query or trailing slash");
    }
    // A colon after the last `]` starts the port (an IPv6 host is bracketed).
    let (host, port) = match rest.rfind(':') {
        Some(at) if !rest[at..].contains(']') => (&rest[..at], Some(&rest[at + 1..])),
        _ => (rest, None),
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(ipv6) => ipv6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        }
    };
    if !host_ok {
        return refuse(": the host is a name or an IP address");
    }
    match port {
        None => Ok(()),
        Some(port) if port == default_port => refuse(": a browser leaves out the scheme's default port"),
        Some(port) if port.parse::<u16>().is_ok_and(|p| p != 0) => Ok(()),
        Some(_) => refuse(": the port is 1 to 65535"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let secs = |s: &str| s.parse::<Span>().map(|d| d.0.as_secs());
        assert_eq!(secs("30s"), Ok(30));
        assert_eq!(secs("45"), Ok(45));
        assert_eq!(secs("10m"), Ok(600));
        assert_eq!(secs("1h"), Ok(3600));
        assert_eq!(secs("2d"), Ok(172_800));
        assert_eq!(secs("365d"), Ok(MAX_DURATION.as_secs()));
        for bad in ["", "s", "1w", "1.5h", "-1", "1 h", "h1"] {
            assert!(secs(bad).unwrap_err().contains("ms, s, m, h or d"), "{bad:?}");
        }
        for huge in [
            "366d",
            "10000000000000000000",
            "99999999999999999999999",
            "999999999999999999d",
        ] {
            assert!(secs(huge).unwrap_err().starts_with("too large"), "{huge:?}");
        }
        assert_eq!(Span(Duration::from_secs(60)).to_string(), "1m");
        assert_eq!(Span(Duration::from_secs(90)).to_string(), "90s");
        assert_eq!(Span(Duration::ZERO).to_string(), "0s");
        assert_eq!("250ms".parse::<Span>(), Ok(Span(Duration::from_millis(250))));
        assert_eq!(Span(Duration::from_millis(1500)).to_string(), "1500ms");
        assert_eq!("1000ms".parse::<Span>().map(|s| s.to_string()), Ok("1s".to_owned()));
    }

    #[test]
    fn origin_entries() {
        for good in [
            "https://app.example",
            "http://localhost:3000",
            "HTTPS://App.Example",
            "http://[::1]:8080",
            "https://127.0.0.1",
        ] {
            assert!(origins(good).is_ok(), "{good}");
        }
        assert_eq!(origins(" * "), Ok(OriginPolicy::Any));
        assert_eq!(
            origins("https://a.example, http://b.example:8080"),
            Ok(OriginPolicy::List(vec![
                "https://a.example".to_owned(),
                "http://b.example:8080".to_owned()
            ]))
        );
        for bad in [
            "app.example",
            "https://app.example/",
            "https://app.example/path",
            "https://app.example?x",
            "ftp://app.example",
            "ws://app.example",
            "https://",
            "https://user@app.example",
            "https://app.example:0",
            "https://app.example:443",
            "https://app.example:x",
            "https://a.example,*",
            "",
        ] {
            let error = origins(bad).unwrap_err();
            assert!(error.contains("scheme://host[:port]"), "{bad:?}: {error}");
        }
    }
}
