//! TLS configuration for servers and clients (rustls, TLS 1.3, ALPN `courier/1`).
//!
//! courier's frames run unchanged inside TLS (`proto-spec/PROTOCOL.md`). Both sides:
//!
//! - speak TLS 1.3 only, with rustls's ring crypto provider, given explicitly (never a
//!   process-wide default provider);
//! - use the ALPN protocol id [`ALPN`] (`courier/1`). The server offers only it: a client
//!   that offers ALPN without it fails the handshake (`no_application_protocol`); a client
//!   that offers no ALPN is accepted. The blocking client offers it, and refuses a server
//!   that negotiates anything else.
//!
//! A server is configured by [`ServerTlsConfig`]: its certificate chain and key, and
//! optionally a client CA, which makes every client present a certificate chaining to it
//! (mutual TLS; the certificate's subject CN is then the connection's identity, see
//! [`auth`](crate::auth)). A client is configured by [`ClientTlsConfig`], built by
//! [`ClientTlsBuilder`]: the roots the server's certificate must chain to, the name it must
//! carry (by default the IP address connected to, as an IP SAN), and optionally a client
//! certificate.
//!
//! Certificates and keys are read from PEM (files or bytes): certificates from
//! `CERTIFICATE` sections, the key from the first `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY`
//! (PKCS#1) or `EC PRIVATE KEY` (SEC1) section. Errors are [`TlsError`]s, which name the file
//! or bytes they come from and never print key material.
//!
//! # Examples
//!
//! ```no_run
//! use std::path::Path;
//! use courier_rpc::tls::{ClientTlsConfig, ServerTlsConfig};
//!
//! // A server that asks every client for a certificate issued by clients-ca.pem.
//! let server = ServerTlsConfig::from_pem_files(
//!     "server.pem",
//!     "server.key",
//!     Some(Path::new("clients-ca.pem")),
//! )?;
//! assert!(server.requires_client_certificate());
//!
//! // A client that trusts ca.pem, checks the name kv.example, and presents its certificate.
//! let client = ClientTlsConfig::builder()
//!     .ca_file("ca.pem")
//!     .server_name("kv.example")
//!     .client_cert_files("client.pem", "client.key")
//!     .build()?;
//! assert_eq!(client.server_name(), Some("kv.example"));
//! # Ok::<(), courier_rpc::tls::TlsError>(())
//! ```

use std::sync::Arc;

mod client;
mod error;
mod pem;
mod server;
#[cfg(test)]
mod tests;

pub use client::{ClientTlsBuilder, ClientTlsConfig};
pub use error::TlsError;
pub use server::ServerTlsConfig;

/// The ALPN protocol id of courier over TLS: `courier/1`.
pub const ALPN: &[u8] = b"courier/1";

/// The crypto provider of every configuration: rustls's ring provider.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
