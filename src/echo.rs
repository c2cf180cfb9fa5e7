//! The bundled echo service: answers every request with its own body.
//!
//! Wire layout: `proto-spec/SERVICES.md`, "echo". Service id 1.

use bytes::Bytes;

use crate::service::{Method, Router};

/// Service id of echo: 1.
pub const SERVICE: u16 = 1;

/// ECHO (method 1): the response payload is the request payload, byte for byte.
pub const ECHO: Method<Bytes, Bytes> = Method::new(SERVICE, 1, "echo.Echo");

/// Registers the echo service on `router`.
pub fn register(router: &mut Router) {
    router.register(ECHO, |_ctx, body: Bytes| Ok(body));
}
