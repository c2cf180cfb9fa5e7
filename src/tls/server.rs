//! [`ServerTlsConfig`]: a server's certificate, key and optional client CA.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use super::{pem, provider, TlsError, ALPN};

/// A server's TLS configuration: TLS 1.3 only, the ring provider, ALPN `courier/1` (the
/// only protocol offered: a client that offers ALPN without it fails the handshake with
/// `no_application_protocol`; a client that offers no ALPN is accepted), and optionally a
/// client CA that every client certificate must chain to (mutual TLS).
///
/// Cloning is cheap: the rustls configuration is shared.
#[derive(Clone, Debug)]
pub struct ServerTlsConfig {
    config: Arc<rustls::ServerConfig>,
    requires_client_certificate: bool,
}

impl ServerTlsConfig {
    /// Reads the server's certificate chain (PEM, leaf first, then any intermediates) and its
    /// private key (the first PKCS#8, PKCS#1 or SEC1 key in the PEM file). `client_ca`: a
    /// PEM bundle of CA certificates; when given, every client must present a certificate
    /// chaining to one of them, and a client without one fails the handshake.
    ///
    /// # Errors
    /// [`TlsError::Io`] (the error names the file), [`TlsError::Pem`],
    /// [`TlsError::NoCertificates`], [`TlsError::NoPrivateKey`], [`TlsError::BadCertificate`]
    /// (a client CA certificate that does not parse), [`TlsError::Verifier`], or
    /// [`TlsError::Rustls`] (typically a key that does not match the certificate).
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
        client_ca: Option<&Path>,
    ) -> Result<Self, TlsError> {
        let chain = pem::certs_from_file(cert_chain.as_ref())?;
        let key = pem::key_from_file(key.as_ref())?;
        let client_ca = match client_ca {
            Some(path) => Some((pem::certs_from_file(path)?, path.display().to_string())),
            None => None,
        };
        Self::build(chain, key, client_ca)
    }

    /// [`ServerTlsConfig::from_pem_files`] with the PEM text given as bytes.
    ///
    /// # Errors
    /// As [`ServerTlsConfig::from_pem_files`], without [`TlsError::Io`].
    pub fn from_pem(
        cert_chain: &[u8],
        key: &[u8],
        client_ca: Option<&[u8]>,
    ) -> Result<Self, TlsError> {
        let chain = pem::certs_from_pem(cert_chain, "certificate chain PEM")?;
        let key = pem::key_from_pem(key)?;
        let client_ca = match client_ca {
            Some(bundle) => Some((
                pem::certs_from_pem(bundle, "client CA PEM")?,
                "client CA PEM".to_owned(),
            )),
            None => None,
        };
        Self::build(chain, key, client_ca)
    }

    fn build(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_ca: Option<(Vec<CertificateDer<'static>>, String)>,
    ) -> Result<Self, TlsError> {
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?;
        let requires_client_certificate = client_ca.is_some();
        let builder = match client_ca {
            Some((cas, what)) => {
                let mut roots = RootCertStore::empty();
                for ca in cas {
                    roots.add(ca).map_err(|source| TlsError::BadCertificate {
                        what: what.clone(),
                        source,
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(ServerTlsConfig {
            config: Arc::new(config),
            requires_client_certificate,
        })
    }

    /// Whether every client must present a certificate chaining to the client CA (a client CA
    /// was given).
    pub fn requires_client_certificate(&self) -> bool {
        self.requires_client_certificate
    }

    /// The rustls configuration: TLS 1.3, the ring provider, ALPN `courier/1`, and the
    /// client-certificate verifier when a client CA was given.
    pub fn rustls(&self) -> &Arc<rustls::ServerConfig> {
        &self.config
    }
}
