//! The server's security settings: TLS, authentication, access control, and protected mode
//! (the refusal to serve a network without access control).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use super::ServerBuilder;
use crate::auth::{Acl, Authenticator, Authorizer};
use crate::connection::Authentication;
use crate::tls::ServerTlsConfig;

impl ServerBuilder {
    /// Serves TLS (rustls; TLS 1.3, ALPN `courier/1`) instead of plain TCP; default plain. A
    /// plaintext courier client on this port is sent one plaintext ERROR INVALID_ARGUMENT and
    /// closed (`closed_not_tls`); a handshake that does not complete within the frame timeout
    /// is cut (`closed_handshake_timeout`). With a client CA ([`ServerTlsConfig::from_pem_files`])
    /// every client must present a certificate chaining to it (mutual TLS), and the
    /// connection's identity is its subject ([`crate::auth::certificate_identity`]).
    pub fn tls(mut self, tls: ServerTlsConfig) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// Checks AUTH tokens with `authenticator`, and requires every connection to have an
    /// identity (from AUTH or a client certificate) before it may call anything but AUTH,
    /// WHOAMI and PING; default none (AUTH answered FAILED_PRECONDITION, nothing required).
    pub fn authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.config.authenticator = Some(authenticator);
        self
    }

    /// Decides, by identity and method name, which requests run
    /// ([`Router::set_authorizer`](crate::service::Router::set_authorizer)); also requires an
    /// identity as [`ServerBuilder::authenticator`] does. Default none: every request runs.
    pub fn authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        self.config.authorizer = Some(authorizer);
        self
    }

    /// Both [`ServerBuilder::authenticator`] and [`ServerBuilder::authorizer`] from one
    /// access-control list (`kv-server --acl FILE`).
    pub fn acl(self, acl: Arc<Acl>) -> Self {
        self.authenticator(acl.clone()).authorizer(acl)
    }

    /// Allows listening on an address other than loopback with no access control (neither an
    /// authenticator, an authorizer, nor TLS client certificates); default `false`, when
    /// [`ServerBuilder::bind`] refuses to (Redis's `protected-mode`). Anyone who can reach the
    /// port can then call every method.
    pub fn insecure_open_access(mut self, allow: bool) -> Self {
        self.config.insecure_open_access = allow;
        self
    }
}

impl super::ServerConfig {
    /// Whether connections are checked by anything: an authenticator, an authorizer, or
    /// client certificates. (An authorizer set on the router itself also counts when the
    /// server is bound.)
    pub fn has_access_control(&self) -> bool {
        self.authenticator.is_some()
            || self.authorizer.is_some()
            || self
                .tls
                .as_ref()
                .is_some_and(ServerTlsConfig::requires_client_certificate)
    }

    /// Whether the server serves TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// What the server's connections authenticate with; `None` when nothing is required.
    /// `router_authorizes`: the router has an authorizer of its own.
    pub(super) fn authentication(&self, router_authorizes: bool) -> Option<Arc<Authentication>> {
        // An authenticator without an authorizer still requires an identity: whoever proves
        // one may call everything.
        let required =
            self.authenticator.is_some() || self.authorizer.is_some() || router_authorizes;
        required.then(|| {
            Arc::new(Authentication {
                authenticator: self.authenticator.clone(),
                required,
            })
        })
    }

    /// Protected mode: refuses an address beyond loopback with no access control, unless
    /// [`ServerBuilder::insecure_open_access`] allows it.
    ///
    /// # Errors
    /// `PermissionDenied`, saying what to add.
    pub(super) fn check_protected(
        &self,
        addr: SocketAddr,
        router_authorizes: bool,
    ) -> io::Result<()> {
        if addr.ip().is_loopback()
            || self.has_access_control()
            || router_authorizes
            || self.insecure_open_access
        {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "refusing to listen on {addr} without access control: anyone who can reach it \
                 could call every method. Add an ACL (kv-server --acl FILE, \
                 ServerBuilder::acl), or require client certificates (--tls-client-ca), or \
                 listen on 127.0.0.1; to serve it open anyway, pass \
                 --insecure-no-access-control (ServerBuilder::insecure_open_access)"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::auth::TokenTable;
    use crate::server::Server;

    fn refused(builder: crate::server::ServerBuilder, addr: &str) -> bool {
        let addr = addr.parse().expect("address");
        builder.config().check_protected(addr, false).is_err()
    }

    #[test]
    fn protected_mode_refuses_only_open_access_beyond_loopback() {
        for addr in ["127.0.0.1:7878", "[::1]:7878", "127.3.4.5:1"] {
            assert!(!refused(Server::builder(), addr), "{addr} is loopback");
        }
        for addr in ["0.0.0.0:7878", "[::]:7878", "10.0.0.1:7878"] {
            assert!(refused(Server::builder(), addr), "{addr} is open");
            let insecure = Server::builder().insecure_open_access(true);
            assert!(!refused(insecure, addr), "{addr} with the flag");
            let tokens = Server::builder().authenticator(Arc::new(TokenTable::new()));
            assert!(!refused(tokens, addr), "{addr} with an authenticator");
        }
    }
}
