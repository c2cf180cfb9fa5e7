//! Certificates and private keys from PEM, through `rustls::pki_types::pem::PemObject`.

use std::path::Path;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// Every `CERTIFICATE` section of the PEM file at `path`, in order.
///
/// # Errors
/// [`TlsError::Io`], [`TlsError::Pem`], or [`TlsError::NoCertificates`] when there is none.
pub(crate) fn certs_from_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let what = path.display().to_string();
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| pem_error(e, Some(path), &what))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e, Some(path), &what))?;
    non_empty(certs, what)
}

/// Every `CERTIFICATE` section of `pem`, in order; `what` names the bytes in errors.
///
/// # Errors
/// [`TlsError::Pem`], or [`TlsError::NoCertificates`] when there is none.
pub(crate) fn certs_from_pem(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e, None, what))?;
    non_empty(certs, what.to_owned())
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of the PEM file at `path`.
///
/// # Errors
/// [`TlsError::Io`], [`TlsError::Pem`], or [`TlsError::NoPrivateKey`].
pub(crate) fn key_from_file(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: Some(path.to_owned()),
        },
        e => pem_error(e, Some(path), &path.display().to_string()),
    })
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of `pem`.
///
/// # Errors
/// [`TlsError::Pem`] or [`TlsError::NoPrivateKey`].
pub(crate) fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey { path: None },
        e => pem_error(e, None, "private key PEM"),
    })
}

fn non_empty(
    certs: Vec<CertificateDer<'static>>,
    what: String,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    if certs.is_empty() {
        Err(TlsError::NoCertificates { what })
    } else {
        Ok(certs)
    }
}

fn pem_error(e: pem::Error, path: Option<&Path>, what: &str) -> TlsError {
    match (e, path) {
        (pem::Error::Io(source), Some(path)) => TlsError::Io {
            path: path.to_owned(),
            source,
        },
        (source, _) => TlsError::Pem {
            what: what.to_owned(),
            source,
        },
    }
}
