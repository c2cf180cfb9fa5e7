//! Identities, authentication (tokens, client certificates) and access control.
//!
//! A connection may carry an [`Identity`]: a name and the way it was proven
//! ([`IdentitySource`]). The server asks two questions, each behind a trait:
//!
//! - [`Authenticator`]: which identity does a token prove? Asked once per admin AUTH
//!   request (the token is the request's payload).
//! - [`Authorizer`]: may this identity call this method? Asked once per request.
//!
//! The pieces this module provides:
//!
//! - [`hash_token`]: SHA-256 (FIPS 180-4) of a token. Tokens are kept only as their hashes,
//!   as Redis ACL keeps its passwords.
//! - [`TokenTable`]: an [`Authenticator`] mapping token hashes to names; a token is compared
//!   with every entry in constant time.
//! - [`certificate_identity`]: the identity a verified client certificate proves (its
//!   subject's CN), for mutual TLS.
//! - [`Acl`]: a TOML file of identities, their token hashes and the methods each may call;
//!   both an [`Authenticator`] and an [`Authorizer`].
//!
//! Tokens are secrets: nothing in this module logs them, shows them in `Debug` output or
//! puts them in an error message, and neither do the token hashes.
//!
//! # The ACL file
//!
//! ```toml
//! # Each identity: a name, the SHA-256 of its token (optional: certificate identities have none),
//! # and the methods it may call.
//! [[identity]]
//! name = "alice"
//! token_sha256 = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"  # 64 hex digits
//! allow = ["kv.*", "admin.Stats"]
//!
//! [[identity]]
//! name = "reporter"            # a client certificate whose subject CN is "reporter"
//! allow = ["kv.Get", "admin.*"]
//! ```
//!
//! - `name` (string, required, not empty, unique): the identity's name. A token proves it
//!   through `token_sha256`; a client certificate proves it when its subject CN is this name.
//!   The entry's rules apply to the name however it was proven.
//! - `token_sha256` (string, optional): the SHA-256 of the identity's token, as 64 hex digits
//!   (either case), unique across the file. `printf %s "$TOKEN" | sha256sum` prints it.
//! - `allow` (array of strings, default empty): the methods the identity may call. A pattern is
//!   `*` (every method), `<service>.*` (every method of a service) or `<service>.<method>`,
//!   matched against the method's registered name (such as `kv.Get`) ignoring ASCII case.
//!   An empty list lets the identity authenticate but call nothing.
//!
//! An identity that is not in the file is allowed nothing. See [`Acl`] and [`AclError`].
//!
//! # Example
//!
//! ```
//! use courier_rpc::auth::{Acl, Authenticator, Authorizer};
//!
//! let acl = Acl::from_toml(
//!     r#"
//!     [[identity]]
//!     name = "alice"
//!     token_sha256 = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
//!     allow = ["kv.*"]
//!     "#,
//! )?;
//! let alice = acl.authenticate(b"password").expect("alice's token");
//! assert_eq!(alice.name(), "alice");
//! assert!(acl.allows(&alice, 2, 1, "kv.Get"));
//! assert!(!acl.allows(&alice, 0, 1, "admin.Stats"));
//! # Ok::<(), courier_rpc::auth::AclError>(())
//! ```

use std::fmt;
use std::sync::Arc;

mod acl;
mod cert;
mod error;
mod token;

pub use acl::Acl;
pub use cert::certificate_identity;
pub use error::AclError;
pub use token::{hash_token, TokenTable};

/// Who a connection has proven to be: a name and how it was proven.
///
/// Two identities are equal when both the name and the source are.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    name: Arc<str>,
    source: IdentitySource,
}

impl Identity {
    /// An identity called `name`, proven by `source`.
    pub fn new(name: impl Into<Arc<str>>, source: IdentitySource) -> Identity {
        Identity {
            name: name.into(),
            source,
        }
    }

    /// The identity's name, e.g. `"alice"`: what an [`Authorizer`] looks up and what admin
    /// WHOAMI reports.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the identity was proven.
    pub fn source(&self) -> IdentitySource {
        self.source
    }
}

/// How an [`Identity`] was proven.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdentitySource {
    /// A client certificate verified during the TLS handshake (mutual TLS); the name comes from
    /// its subject ([`certificate_identity`]).
    Certificate,
    /// A token sent with admin AUTH and accepted by an [`Authenticator`].
    Token,
    /// Set by the application in some other way.
    Custom,
}

impl IdentitySource {
    /// The source's byte in an admin WHOAMI response: 1 certificate, 2 token, 3 custom
    /// (0, never returned here, stands for a connection with no identity).
    pub fn wire(self) -> u8 {
        match self {
            IdentitySource::Certificate => 1,
            IdentitySource::Token => 2,
            IdentitySource::Custom => 3,
        }
    }

    /// The source a WHOAMI byte stands for: the inverse of [`IdentitySource::wire`]; `None`
    /// for 0 (no identity) and for values this version does not know.
    pub fn from_wire(byte: u8) -> Option<IdentitySource> {
        match byte {
            1 => Some(IdentitySource::Certificate),
            2 => Some(IdentitySource::Token),
            3 => Some(IdentitySource::Custom),
            _ => None,
        }
    }
}

/// Which identity a token proves (admin AUTH).
///
/// Implementations must treat the token as a secret: not log it, not keep it, and compare it
/// in time that does not depend on how much of it matches.
pub trait Authenticator: Send + Sync + fmt::Debug {
    /// The identity `token` proves, or `None` when it proves none. `token` is the AUTH
    /// request's payload, raw bytes (1 to 1024 of them on the wire).
    fn authenticate(&self, token: &[u8]) -> Option<Identity>;
}

/// Whether an identity may call a method.
///
/// Asked once per request (never for admin AUTH, WHOAMI and PING), so it should be cheap.
pub trait Authorizer: Send + Sync + fmt::Debug {
    /// Whether `identity` may call the method with service id `service`, method id `method`
    /// and registered name `name` (such as `"kv.Get"`). An implementation may decide by the
    /// ids, the name or both.
    fn allows(&self, identity: &Identity, service: u16, method: u16, name: &str) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_accessors() {
        let id = Identity::new("alice", IdentitySource::Token);
        assert_eq!(id.name(), "alice");
        assert_eq!(id.source(), IdentitySource::Token);
        assert_eq!(
            id,
            Identity::new(String::from("alice"), IdentitySource::Token)
        );
        assert_ne!(id, Identity::new("alice", IdentitySource::Certificate));
    }

    #[test]
    fn source_wire_bytes() {
        assert_eq!(IdentitySource::Certificate.wire(), 1);
        assert_eq!(IdentitySource::Token.wire(), 2);
        assert_eq!(IdentitySource::Custom.wire(), 3);
    }
}
