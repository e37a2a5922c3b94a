//! Where the binary's secrets come from: the HS256 secret and the admin key, each from a file
//! or from the environment, with one trailing newline dropped, checked before the server
//! starts.

use std::path::Path;

use wsgate::jwt::{Key, KeyError};

use crate::Usage;

/// The primary secret: `--secret-file`, else `WSGATE_SECRET`, else `None`.
pub(crate) fn secret(file: Option<&Path>) -> Result<Option<Vec<u8>>, Usage> {
    if let Some(path) = file {
        return read_secret(path).map(Some);
    }
    let Some(value) = std::env::var_os("WSGATE_SECRET") else {
        return Ok(None);
    };
    let secret = without_newline(value.into_encoded_bytes());
    if secret.is_empty() {
        // More likely a deploy script that failed to fill it than a wish for dev mode: say
        // so rather than guess.
        return Err(Usage(
            "WSGATE_SECRET is set but empty; unset it for dev mode".to_owned(),
        ));
    }
    Ok(Some(secret))
}

/// The admin key: `--admin-key-file`, else `WSGATE_ADMIN_KEY`; only with `--admin-addr`.
pub(crate) fn admin_key(file: Option<&Path>, wanted: bool) -> Result<Option<wsgate::config::AdminKey>, Usage> {
    let key = match (file, std::env::var_os("WSGATE_ADMIN_KEY")) {
        (Some(path), _) => read_secret(path)?,
        (None, Some(value)) => without_newline(value.into_encoded_bytes()),
        (None, None) if wanted => {
            return Err(Usage(
                "--admin-addr needs a key: --admin-key-file or WSGATE_ADMIN_KEY (try: openssl rand -hex 32)".to_owned(),
            ));
        }
        (None, None) => return Ok(None),
    };
    if !wanted {
        return Err(Usage("an admin key was given without --admin-addr".to_owned()));
    }
    wsgate::config::AdminKey::new(&key)
        .map(Some)
        .ok_or_else(|| Usage(format!("the admin key is {} bytes; it needs at least 32", key.len())))
}

pub(crate) fn read_secret(path: &Path) -> Result<Vec<u8>, Usage> {
    std::fs::read(path)
        .map(without_newline)
        .map_err(|e| Usage(format!("cannot read secret file {}: {e}", path.display())))
}

/// Drops one trailing `\n` or `\r\n`, the same from a file and from `WSGATE_SECRET`: editors
/// and `echo` add one, and a secret must not depend on how it was delivered. Only one, so
/// nothing else a secret was written with is silently changed.
fn without_newline(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    bytes
}

pub(crate) fn key(secret: &[u8], kid: Option<&str>) -> Result<Key, Usage> {
    let key = match kid {
        Some(kid) => Key::with_kid(kid, secret),
        None => Key::new(secret),
    };
    key.map_err(|e| match e {
        KeyError::TooShort { len } => Usage(format!(
            "the secret is {len} bytes; HS256 needs at least 32 (try: openssl rand -hex 32)"
        )),
        other => Usage(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_not_part_of_a_secret() {
        assert_eq!(without_newline(b"abc\n".to_vec()), b"abc");
        assert_eq!(without_newline(b"abc\r\n".to_vec()), b"abc");
        assert_eq!(without_newline(b"abc\n\n".to_vec()), b"abc\n");
        assert_eq!(without_newline(b"abc\r".to_vec()), b"abc\r");
        assert_eq!(without_newline(b"abc ".to_vec()), b"abc ");
    }
}
