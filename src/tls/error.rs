//! [`TlsError`]: why a TLS configuration could not be built.

use std::fmt;
use std::io;
use std::path::PathBuf;

use rustls::pki_types::pem;
use rustls::server::VerifierBuilderError;

/// Why a [`ServerTlsConfig`](super::ServerTlsConfig) or a
/// [`ClientTlsConfig`](super::ClientTlsConfig) could not be built. Every variant names what
/// it was reading (a path, or which PEM bytes); none ever prints key material.
#[non_exhaustive]
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be opened or read.
    Io {
        /// The file.
        path: PathBuf,
        /// The error `open(2)` or `read(2)` gave.
        source: io::Error,
    },
    /// The PEM text in `what` is malformed (a section without its END line, bad base64, ...).
    Pem {
        /// What was being read: a file's path, or which PEM bytes (e.g. "client CA PEM").
        what: String,
        /// The PEM parser's error.
        source: pem::Error,
    },
    /// `what` holds no `CERTIFICATE` PEM section.
    NoCertificates {
        /// What was being read: a file's path, or which PEM bytes.
        what: String,
    },
    /// No private key (`PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` (PKCS#1) or
    /// `EC PRIVATE KEY` (SEC1) PEM section) in the key file at `path`, or in the key PEM
    /// bytes when `path` is `None`.
    NoPrivateKey {
        /// The key file; `None` for key PEM given as bytes.
        path: Option<PathBuf>,
    },
    /// A certificate in `what` is not usable as a trusted root (its DER does not parse).
    BadCertificate {
        /// What was being read: a file's path, or which PEM bytes.
        what: String,
        /// Why rustls refused it.
        source: rustls::Error,
    },
    /// A client configuration with no trusted root at all: give a CA
    /// ([`ca_file`](super::ClientTlsBuilder::ca_file), [`ca_pem`](super::ClientTlsBuilder::ca_pem))
    /// or the system's roots ([`system_roots`](super::ClientTlsBuilder::system_roots)).
    NoRoots,
    /// The system's root certificates were asked for, none could be loaded, and loading
    /// reported errors (the errors, joined with "; ").
    SystemRoots(String),
    /// rustls refused the configuration: typically a private key that does not match the
    /// certificate, or a key type it does not support.
    Rustls(rustls::Error),
    /// The client-certificate verifier could not be built from the client CA bundle.
    Verifier(VerifierBuilderError),
    /// The name given to [`server_name`](super::ClientTlsBuilder::server_name) is neither a
    /// DNS name nor an IP address.
    BadServerName(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Io { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            TlsError::Pem { what, source } => write!(f, "{what}: malformed PEM: {source}"),
            TlsError::NoCertificates { what } => {
                write!(f, "{what}: no certificate (PEM CERTIFICATE section) in it")
            }
            TlsError::NoPrivateKey { path } => {
                match path {
                    Some(path) => write!(f, "{}", path.display())?,
                    None => f.write_str("private key PEM")?,
                }
                f.write_str(": no private key (PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY section) in it")
            }
            TlsError::BadCertificate { what, source } => {
                write!(
                    f,
                    "{what}: certificate not usable as a trusted root: {source}"
                )
            }
            TlsError::NoRoots => f.write_str(
                "no trusted root certificate: give a CA certificate or use the system's roots",
            ),
            TlsError::SystemRoots(errors) => {
                write!(f, "no system root certificate could be loaded: {errors}")
            }
            TlsError::Rustls(e) => write!(f, "TLS configuration refused: {e}"),
            TlsError::Verifier(e) => write!(f, "client certificate verifier: {e}"),
            TlsError::BadServerName(name) => {
                write!(
                    f,
                    "bad TLS server name {name:?}: not a DNS name or an IP address"
                )
            }
        }
    }
}

/// `Display` already includes the inner error, so `source` is not used to repeat it.
impl std::error::Error for TlsError {}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Rustls(e)
    }
}

impl From<VerifierBuilderError> for TlsError {
    fn from(e: VerifierBuilderError) -> Self {
        TlsError::Verifier(e)
    }
}
