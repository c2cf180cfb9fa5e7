//! The `--addr` of the binaries that take one address: servers and courier-bench.

use std::net::{SocketAddr, ToSocketAddrs};

/// Parses `--addr`: `IP:PORT` as it is, or `HOST:PORT` resolved to the first address the
/// system's resolver gives (in its order of preference, RFC 6724's), as the library's client
/// takes it.
///
/// # Errors
/// A one-line reason for clap to print: the name does not resolve, or to no address.
pub fn parse(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve {text:?}: {err}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}
