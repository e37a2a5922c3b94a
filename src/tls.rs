//! `wss://` without a proxy (PROTOCOL.md §11, feature `tls`): the certificate a server serves,
//! swappable while it runs.
//!
//! The listener does the TLS handshake inside the socket's pending place and handshake
//! timeout (`socket.rs`), so a client that opens TCP and never says hello holds a place no
//! longer, and no more places, than one that never sends its HTTP head. Everything after the
//! handshake (head, gate, upgrade, connection) is the same code over the TLS stream.
//!
//! A [`Tls`] is a cloneable handle: put one in [`Config::tls`](crate::Config::tls), keep a
//! clone, and [`Tls::reload`] (the binary does it on SIGHUP) or [`Tls::serve`] a new
//! certificate. New handshakes get the new one; open connections keep theirs. A pair that
//! does not load is an error and the old one stays served, so a bad deploy of a certificate
//! cannot take the server down.
//!
//! ```no_run
//! use wsgate::{Config, Server};
//! use wsgate::tls::Tls;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let tls = Tls::new(wsgate::tls::load("cert.pem".as_ref(), "key.pem".as_ref())?);
//! let mut config = Config::default();
//! config.tls = Some(tls.clone());
//! # config.keys = vec![wsgate::jwt::Key::new(b"an example secret of at least 32 bytes!!")?];
//! let server = Server::bind(config).await?;
//! tokio::spawn(server.run(std::future::pending()));
//! // Later, when the files were renewed:
//! match tls.reload("cert.pem".as_ref(), "key.pem".as_ref()) {
//!     Ok(served) => println!("now serving a certificate valid until {:?}", served.not_after),
//!     Err(e) => eprintln!("kept the old certificate: {e}"),
//! }
//! # Ok(()) }
//! ```
//!
//! An embedder who already has a rustls `ServerConfig` (its own resolver, client
//! certificates, another crypto provider) hands it over as it is:
//! `Tls::new(Arc::new(server_config))`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The rustls this crate is built with, so an embedder's `ServerConfig` is of the same version.
pub use rustls;

/// Why a certificate and key could not be served.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file could not be read, or holds no PEM `CERTIFICATE`.
    Certificate {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: pem::Error,
    },
    /// The key file could not be read, or holds no PEM private key (PKCS#8, PKCS#1 or SEC1).
    Key {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: pem::Error,
    },
    /// rustls refused the pair: the key does not match the certificate, or is of a kind it
    /// cannot sign with.
    Refused(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Certificate { path, error } => {
                write!(f, "certificate {}: {}", path.display(), pem_error(error))
            }
            TlsError::Key { path, error } => write!(f, "key {}: {}", path.display(), pem_error(error)),
            TlsError::Refused(error) => write!(f, "certificate and key not usable together: {error}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// `pem::Error` in words an operator can act on.
fn pem_error(error: &pem::Error) -> String {
    match error {
        pem::Error::Io(e) => e.to_string(),
        pem::Error::NoItemsFound => "no PEM block of the expected kind in it".to_owned(),
        pem::Error::MissingSectionEnd { end_marker } => {
            format!(
                "a PEM block is not terminated (no -----END {}-----)",
                String::from_utf8_lossy(end_marker)
            )
        }
        other => format!("not valid PEM ({other:?})"),
    }
}

/// The most bytes a certificate chain or key file may have: real ones are a few KiB.
const MAX_PEM_FILE: u64 = 1 << 20;

/// Reads a PEM file, refusing what is not a regular file (a FIFO or a device would block or
/// never end) and anything over [`MAX_PEM_FILE`].
fn read_pem(path: &Path) -> Result<Vec<u8>, pem::Error> {
    use std::io::{Error, ErrorKind, Read};
    let read = || {
        if !std::fs::metadata(path)?.is_file() {
            return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
        }
        let mut bytes = Vec::new();
        std::fs::File::open(path)?
            .take(MAX_PEM_FILE + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_PEM_FILE {
            return Err(Error::new(ErrorKind::InvalidData, "larger than 1 MiB"));
        }
        Ok(bytes)
    };
    read().map_err(pem::Error::Io)
}

/// When a certificate stops being valid (its X.509 `notAfter`), in Unix seconds. Shown as a
/// UTC date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expiry(pub i64);

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (days, seconds) = (self.0.div_euclid(86_400), self.0.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        let (hour, minute, second) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
        write!(f, "{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02} UTC")
    }
}

/// A certificate chain and key, checked and ready to serve.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// The rustls settings handshakes are made with.
    pub config: Arc<ServerConfig>,
    /// The end-entity certificate's expiry, when known (from [`load`]; not from a
    /// `ServerConfig` handed over as it is). `/metrics` shows it as
    /// `wsgate_tls_cert_not_after_seconds`.
    pub not_after: Option<Expiry>,
}

impl From<Arc<ServerConfig>> for Certificate {
    fn from(config: Arc<ServerConfig>) -> Certificate {
        Certificate {
            config,
            not_after: None,
        }
    }
}

impl From<ServerConfig> for Certificate {
    fn from(config: ServerConfig) -> Certificate {
        Certificate::from(Arc::new(config))
    }
}

/// Loads a PEM certificate chain (end-entity first) and its PEM private key, with rustls'
/// default crypto provider, checking that the key belongs to the certificate.
pub fn load(cert_path: &Path, key_path: &Path) -> Result<Certificate, TlsError> {
    let cert_error = |error| TlsError::Certificate {
        path: cert_path.to_owned(),
        error,
    };
    let chain = read_pem(cert_path)
        .and_then(|pem| CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>())
        .map_err(cert_error)?;
    if chain.is_empty() {
        return Err(cert_error(pem::Error::NoItemsFound));
    }
    let key = read_pem(key_path)
        .and_then(|pem| PrivateKeyDer::from_pem_slice(&pem))
        .map_err(|error| TlsError::Key {
            path: key_path.to_owned(),
            error,
        })?;
    let not_after = not_after(&chain[0]).map(Expiry);
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Refused)?;
    Ok(Certificate {
        config: Arc::new(config),
        not_after,
    })
}

/// The certificate being served, swappable while the server runs; clones share it.
#[derive(Clone)]
pub struct Tls {
    served: Arc<RwLock<Certificate>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("not_after", &self.not_after())
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Serves `certificate`: a [`Certificate`] from [`load`], or your own
    /// `Arc<rustls::ServerConfig>`.
    pub fn new(certificate: impl Into<Certificate>) -> Tls {
        Tls {
            served: Arc::new(RwLock::new(certificate.into())),
        }
    }

    /// From now on, new handshakes get `certificate`; open connections are not touched.
    pub fn serve(&self, certificate: impl Into<Certificate>) {
        *self.served.write().unwrap_or_else(|e| e.into_inner()) = certificate.into();
    }

    /// Loads the pair again (renewed files) and serves it. On an error the certificate served
    /// so far stays served.
    pub fn reload(&self, cert_path: &Path, key_path: &Path) -> Result<Certificate, TlsError> {
        let certificate = load(cert_path, key_path)?;
        self.serve(certificate.clone());
        Ok(certificate)
    }

    /// The expiry of the certificate being served, when known.
    pub fn not_after(&self) -> Option<Expiry> {
        self.current().not_after
    }

    /// The certificate being served.
    pub fn current(&self) -> Certificate {
        // Only ever replaced whole, so a poisoned lock still holds a usable value.
        self.served.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// An acceptor for one handshake, with the certificate served at this moment.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current().config)
    }
}

/// The first byte of every TLS connection: a handshake record (RFC 8446 §5.1). Anything else
/// on a TLS port is most likely plain HTTP.
pub(crate) const HANDSHAKE_RECORD: u8 = 0x16;

/// The `notAfter` of a DER X.509 certificate (RFC 5280 §4.1), in Unix seconds. Only walks
/// the few fields before it; `None` for anything it does not understand. The file is the
/// operator's, and the value only feeds a log line and a gauge.
fn not_after(der: &[u8]) -> Option<i64> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, certificate, _) = tlv(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(certificate)? else {
        return None;
    };
    let mut fields = tbs;
    // version [0] EXPLICIT is optional.
    if fields.first() == Some(&0xa0) {
        fields = tlv(fields)?.2;
    }
    let fields = tlv(fields)?.2; // serialNumber
    let fields = tlv(fields)?.2; // signature
    let fields = tlv(fields)?.2; // issuer
    let (SEQUENCE, validity, _) = tlv(fields)? else {
        return None;
    };
    let after_not_before = tlv(validity)?.2;
    let (tag, time, _) = tlv(after_not_before)?;
    let text = std::str::from_utf8(time).ok()?;
    // UTCTime (YYMMDDHHMMSSZ; 50–99 are 19xx) or GeneralizedTime (YYYYMMDDHHMMSSZ).
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    if rest.len() != 11 || !rest.ends_with('Z') || !rest[..10].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |at: usize| -> i64 { rest[at..at + 2].parse().unwrap_or(0) };
    let days = days_from_civil(year, field(0), field(2));
    Some(days * 86_400 + field(4) * 3600 + field(6) * 60 + field(8))
}

/// One DER tag-length-value: the tag, the value, and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(n)?;
        rest = after;
        bytes.iter().fold(0usize, |len, b| len << 8 | usize::from(*b))
    };
    let (value, rest) = rest.split_at_checked(len)?;
    Some((tag, value, rest))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for days in [-1, 0, 59, 365, 11_016, 11_017, 20_000, 60_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(Expiry(951_782_400).to_string(), "2000-02-29 00:00:00 UTC");
        assert_eq!(Expiry(1_767_225_599).to_string(), "2025-12-31 23:59:59 UTC");
    }

    #[test]
    fn not_after_is_read_from_a_real_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 7, 15);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(not_after(cert.der()), Some(days_from_civil(2031, 7, 15) * 86_400));
        // A year past 2049 is a GeneralizedTime (RFC 5280 §4.1.2.5).
        params.not_after = rcgen::date_time_ymd(2051, 1, 2);
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(not_after(cert.der()), Some(days_from_civil(2051, 1, 2) * 86_400));
    }

    #[test]
    fn garbage_is_no_date_and_no_panic() {
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(not_after(&[0x30, 0x03, 0x30, 0x01, 0x02]), None);
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 7, 15);
        let cert = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap();
        let der = cert.der().to_vec();
        for cut in 0..der.len() {
            let _ = not_after(&der[..cut]);
        }
    }
}
