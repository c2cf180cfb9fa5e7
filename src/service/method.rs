//! Method descriptors: the compile-time contract between a handler and its callers.

use std::fmt;
use std::marker::PhantomData;

/// Ties a (service id, method id) pair to a request type and a response type.
///
/// Declare one `const` per method and use it on both sides: the server registers a handler
/// for it ([`Router::register`](super::Router::register)) and the client calls it
/// ([`Client::call`](crate::client::Client::call)), so both agree on the types at compile time.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use courier_rpc::service::Method;
///
/// pub const ECHO: Method<Bytes, Bytes> = Method::new(1, 1, "echo.Echo");
/// assert_eq!((ECHO.service, ECHO.method), (1, 1));
/// ```
pub struct Method<Req, Resp> {
    /// Service id (header bytes 16..18). Service 0 is reserved for courier's built-ins.
    pub service: u16,
    /// Method id within the service (header bytes 18..20).
    pub method: u16,
    /// A name for logs and errors, by convention `"service.Method"`.
    pub name: &'static str,
    types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> Method<Req, Resp> {
    /// A descriptor for `service`/`method`, named `name` in logs.
    pub const fn new(service: u16, method: u16, name: &'static str) -> Self {
        Method {
            service,
            method,
            name,
            types: PhantomData,
        }
    }
}

impl<Req, Resp> Clone for Method<Req, Resp> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Req, Resp> Copy for Method<Req, Resp> {}

impl<Req, Resp> fmt::Debug for Method<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}/{})", self.name, self.service, self.method)
    }
}
