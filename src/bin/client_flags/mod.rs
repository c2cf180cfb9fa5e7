//! The TLS and token flags of the bundled clients (kv-cli, courier-bench), and the
//! `COURIER_TOKEN` environment variable.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use courier_rpc::admin::MAX_TOKEN_LEN;
use courier_rpc::client::{ClientBuilder, ClientError};
use courier_rpc::tls::ClientTlsConfig;

/// The environment variable a token is read from when no --token-file is given.
pub const TOKEN_ENV: &str = "COURIER_TOKEN";

/// How the client proves who it is, and checks who the server is.
#[derive(clap::Args, Debug)]
pub struct ClientSecurity {
    /// Use TLS (1.3, ALPN courier/1). The server's certificate must chain to --tls-ca, or
    /// without it to the system's root certificates.
    #[arg(long)]
    pub tls: bool,
    /// CA certificates (PEM) the server's certificate must chain to, instead of the system's
    /// roots. Needs --tls.
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub tls_ca: Option<PathBuf>,
    /// The name the server's certificate must carry: a DNS name, or an IP address [default:
    /// the IP address connected to]. Needs --tls.
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub tls_server_name: Option<String>,
    /// Client certificate chain (PEM, leaf first), for a server that requires one (mutual
    /// TLS). Needs --tls and --tls-key.
    #[arg(long, value_name = "FILE", requires_all = ["tls", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Authenticate with the token in FILE (1 to 1024 bytes; line endings at its end are
    /// dropped), sent with admin AUTH on every connection. Without it, the token is taken
    /// from the environment variable COURIER_TOKEN when that is set and not empty. A token is
    /// never given on the command line, where any user's `ps` shows it.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl ClientSecurity {
    /// `builder` with TLS and the token, as the flags and the environment say.
    ///
    /// # Errors
    /// A TLS file that cannot be read or holds no usable certificate or key; a token file
    /// that cannot be read; a token that is empty or over 1024 bytes.
    pub fn apply(&self, mut builder: ClientBuilder) -> Result<ClientBuilder> {
        if let Some(tls) = self.tls_config()? {
            builder = builder.tls(tls);
        }
        if let Some(token) = self.token()? {
            builder = builder.token(token);
        }
        Ok(builder)
    }

    /// The TLS configuration the flags give: `None` without --tls.
    ///
    /// # Errors
    /// A TLS file that cannot be read or holds no usable certificate or key.
    pub fn tls_config(&self) -> Result<Option<ClientTlsConfig>> {
        if !self.tls {
            return Ok(None);
        }
        let mut tls = ClientTlsConfig::builder();
        tls = match &self.tls_ca {
            Some(ca) => tls.ca_file(ca),
            None => tls.system_roots(),
        };
        if let Some(name) = &self.tls_server_name {
            tls = tls.server_name(name);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            tls = tls.client_cert_files(cert, key);
        }
        tls.build().context("TLS configuration").map(Some)
    }

    /// The token of --token-file, else of `COURIER_TOKEN` (unset or empty: none).
    ///
    /// # Errors
    /// A token file that cannot be read; a token that is empty or over 1024 bytes.
    pub fn token(&self) -> Result<Option<Vec<u8>>> {
        if let Some(path) = &self.token_file {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?;
            return checked(bytes, &path.display().to_string()).map(Some);
        }
        match std::env::var_os(TOKEN_ENV).map(OsString::into_vec) {
            Some(bytes) if !bytes.is_empty() => checked(bytes, TOKEN_ENV).map(Some),
            _ => Ok(None),
        }
    }
}

/// A failed connect to `addr` as one line: with `hint` (e.g. "is kv-server running?") when
/// nothing answered, without it when the server did (a TLS, AUTH or protocol error says why).
pub fn connect_error(err: ClientError, addr: &str, hint: &str) -> anyhow::Error {
    let context = match err {
        ClientError::Io(_) | ClientError::Timeout => format!("cannot connect to {addr} ({hint})"),
        _ => format!("cannot connect to {addr}"),
    };
    anyhow::Error::new(err).context(context)
}

/// The token without the line endings at its end; an error naming `source` (a path, or
/// the environment variable) when it is empty or too long. Never prints the token.
fn checked(mut token: Vec<u8>, source: &str) -> Result<Vec<u8>> {
    while token.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
        token.pop();
    }
    if token.is_empty() {
        bail!("the token in {source} is empty");
    }
    if token.len() > MAX_TOKEN_LEN {
        bail!(
            "the token in {source} is {} bytes; AUTH takes 1 to {MAX_TOKEN_LEN}",
            token.len()
        );
    }
    Ok(token)
}
