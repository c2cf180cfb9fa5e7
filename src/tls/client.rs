//! [`ClientTlsConfig`] and its builder: trusted roots, an optional client certificate, the
//! server name to check.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;

use super::{pem, provider, TlsError, ALPN};

/// A client's TLS configuration: TLS 1.3 only, the ring provider, ALPN `courier/1` offered,
/// the roots the server's certificate must chain to, optionally a client certificate (mutual
/// TLS), and the name the server's certificate must carry. Built by
/// [`ClientTlsConfig::builder`]; given to
/// [`ClientBuilder::tls`](crate::client::ClientBuilder::tls).
///
/// Cloning is cheap: the rustls configuration is shared.
#[derive(Clone, Debug)]
pub struct ClientTlsConfig {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<String>,
    /// `server_name`, parsed by [`ClientTlsBuilder::build`].
    parsed_name: Option<ServerName<'static>>,
}

impl ClientTlsConfig {
    /// A builder with no root, no client certificate, and the connected IP address as the
    /// server name.
    pub fn builder() -> ClientTlsBuilder {
        ClientTlsBuilder::default()
    }

    /// The rustls configuration: TLS 1.3, the ring provider, ALPN `courier/1`, the trusted
    /// roots and the client certificate if any.
    pub fn rustls(&self) -> &Arc<rustls::ClientConfig> {
        &self.config
    }

    /// The name the server's certificate must carry (a DNS name, or an IP address in text);
    /// `None`: the IP address the client connected to, which must be an IP SAN of the
    /// certificate.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// The name checked against the certificate of the server at `peer`.
    pub(crate) fn server_name_for(&self, peer: IpAddr) -> ServerName<'static> {
        match &self.parsed_name {
            Some(name) => name.clone(),
            None => ServerName::IpAddress(peer.into()),
        }
    }
}

/// Builds a [`ClientTlsConfig`]. At least one root is needed: a CA
/// ([`ca_file`](Self::ca_file), [`ca_pem`](Self::ca_pem), each may be given several times
/// and the roots add up) or the system's roots ([`system_roots`](Self::system_roots)).
/// Files are read by [`build`](Self::build), not before.
#[derive(Clone, Debug, Default)]
pub struct ClientTlsBuilder {
    roots: Vec<Roots>,
    system_roots: bool,
    client_cert: Option<ClientCert>,
    server_name: Option<String>,
}

/// Where trusted roots come from.
#[derive(Clone, Debug)]
enum Roots {
    File(PathBuf),
    Pem(Vec<u8>),
}

/// Where the client certificate and its key come from.
#[derive(Clone)]
enum ClientCert {
    Files { chain: PathBuf, key: PathBuf },
    Pem { chain: Vec<u8>, key: Vec<u8> },
}

/// Never prints key material.
impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientCert::Files { chain, key } => f
                .debug_struct("Files")
                .field("chain", chain)
                .field("key", key)
                .finish(),
            ClientCert::Pem { chain, .. } => f
                .debug_struct("Pem")
                .field("chain_len", &chain.len())
                .field("key", &"<redacted>")
                .finish(),
        }
    }
}

impl ClientTlsBuilder {
    /// Trusts the CA certificates of the PEM file at `path` (a bundle of one or more).
    pub fn ca_file(mut self, path: impl AsRef<Path>) -> Self {
        self.roots.push(Roots::File(path.as_ref().to_owned()));
        self
    }

    /// Trusts the CA certificates of `pem` (a bundle of one or more).
    pub fn ca_pem(mut self, pem: &[u8]) -> Self {
        self.roots.push(Roots::Pem(pem.to_vec()));
        self
    }

    /// Trusts the system's root certificates too, as `rustls-native-certs` finds them
    /// (on Linux: `SSL_CERT_FILE` / `SSL_CERT_DIR`, else the distribution's bundle), loaded
    /// by [`build`](Self::build).
    pub fn system_roots(mut self) -> Self {
        self.system_roots = true;
        self
    }

    /// Presents the certificate chain (PEM, leaf first) and private key (PKCS#8, PKCS#1 or
    /// SEC1 PEM) of these files to a server that asks for one (mutual TLS). Replaces an
    /// earlier client certificate.
    pub fn client_cert_files(
        mut self,
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Self {
        self.client_cert = Some(ClientCert::Files {
            chain: cert_chain.as_ref().to_owned(),
            key: key.as_ref().to_owned(),
        });
        self
    }

    /// [`client_cert_files`](Self::client_cert_files) with the PEM text given as bytes.
    pub fn client_cert_pem(mut self, cert_chain: &[u8], key: &[u8]) -> Self {
        self.client_cert = Some(ClientCert::Pem {
            chain: cert_chain.to_vec(),
            key: key.to_vec(),
        });
        self
    }

    /// The name the server's certificate must carry: a DNS name (checked against its DNS
    /// SANs) or an IP address in text (its IP SANs). Default: the IP address the client
    /// connected to.
    pub fn server_name(mut self, name: &str) -> Self {
        self.server_name = Some(name.to_owned());
        self
    }

    /// Reads the files and builds the configuration.
    ///
    /// # Errors
    /// [`TlsError::NoRoots`] when no root was given (or the system has none),
    /// [`TlsError::SystemRoots`] when the system's roots were asked for and none loaded,
    /// [`TlsError::BadServerName`], and for the files and PEM: [`TlsError::Io`] (naming the
    /// file), [`TlsError::Pem`], [`TlsError::NoCertificates`], [`TlsError::NoPrivateKey`],
    /// [`TlsError::BadCertificate`], [`TlsError::Rustls`] (a key that does not match the
    /// client certificate).
    pub fn build(self) -> Result<ClientTlsConfig, TlsError> {
        let parsed_name = match &self.server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|_| TlsError::BadServerName(name.clone()))?,
            ),
            None => None,
        };
        let mut roots = RootCertStore::empty();
        for source in &self.roots {
            let (certs, what) = match source {
                Roots::File(path) => (pem::certs_from_file(path)?, path.display().to_string()),
                Roots::Pem(bytes) => (pem::certs_from_pem(bytes, "CA PEM")?, "CA PEM".to_owned()),
            };
            add_roots(&mut roots, certs, &what)?;
        }
        if self.system_roots {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() && !found.errors.is_empty() {
                let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                return Err(TlsError::SystemRoots(errors.join("; ")));
            }
            for e in &found.errors {
                log::warn!("system root certificates: {e}");
            }
            // A system store may hold certificates webpki cannot use; the others still count.
            let (_, ignored) = roots.add_parsable_certificates(found.certs);
            if ignored > 0 {
                log::debug!("system root certificates: {ignored} not usable, ignored");
            }
        }
        if roots.is_empty() {
            return Err(TlsError::NoRoots);
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots);
        let mut config = match self.client_cert {
            Some(cert) => {
                let (chain, key) = load_client_cert(&cert)?;
                builder.with_client_auth_cert(chain, key)?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(ClientTlsConfig {
            config: Arc::new(config),
            server_name: self.server_name,
            parsed_name,
        })
    }
}

fn add_roots(
    roots: &mut RootCertStore,
    certs: Vec<CertificateDer<'static>>,
    what: &str,
) -> Result<(), TlsError> {
    for cert in certs {
        roots.add(cert).map_err(|source| TlsError::BadCertificate {
            what: what.to_owned(),
            source,
        })?;
    }
    Ok(())
}

fn load_client_cert(
    cert: &ClientCert,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    match cert {
        ClientCert::Files { chain, key } => {
            Ok((pem::certs_from_file(chain)?, pem::key_from_file(key)?))
        }
        ClientCert::Pem { chain, key } => Ok((
            pem::certs_from_pem(chain, "client certificate PEM")?,
            pem::key_from_pem(key)?,
        )),
    }
}
