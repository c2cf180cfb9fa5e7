//! The router: maps (service id, method id) to handlers.

use std::collections::HashMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::message::Message;
use super::method::Method;
use crate::proto::{Metadata, Status};

/// What a handler knows about the request besides its message.
#[derive(Clone, Debug)]
pub struct Context {
    /// The request id the client chose.
    pub request_id: u64,
    /// When the server decoded the request.
    pub received_at: Instant,
    /// When the client stops waiting: `received_at` plus the frame's deadline, or `None` when
    /// the client set none. Time in flight is not subtracted (the protocol carries no clock).
    pub deadline: Option<Instant>,
    /// The request's metadata entries (empty when none were sent).
    pub metadata: Metadata,
}

/// A type-erased handler: decode, call, encode into the output buffer.
type Handler = Box<dyn Fn(&Context, Bytes, &mut BytesMut) -> Result<(), Status> + Send + Sync>;

struct Route {
    name: &'static str,
    handler: Handler,
}

/// Maps (service id, method id) to handlers and calls them.
///
/// - an unknown service or method is answered UNIMPLEMENTED;
/// - a request message that does not decode is answered INVALID_ARGUMENT;
/// - a handler's `Err(status)` becomes a RESPONSE with that status;
/// - a handler that panics is answered INTERNAL, and the server goes on serving.
///
/// Handlers run inline on the server's event loop thread: they should be quick and must not
/// block on IO.
///
/// # Examples
///
/// ```
/// use courier::proto::Status;
/// use courier::service::{Method, Router};
///
/// const SHOUT: Method<String, String> = Method::new(10, 1, "demo.Shout");
///
/// let mut router = Router::new();
/// router.register(SHOUT, |_ctx, text: String| {
///     if text.is_empty() {
///         return Err(Status::invalid_argument("nothing to shout"));
///     }
///     Ok(text.to_uppercase())
/// });
/// assert!(router.contains(10, 1));
/// ```
#[derive(Default)]
pub struct Router {
    routes: HashMap<u32, Route>,
}

fn route_key(service: u16, method: u16) -> u32 {
    (u32::from(service) << 16) | u32::from(method)
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Router::default()
    }

    /// Registers `handler` for `method`, replacing any handler registered before for the same
    /// (service, method).
    pub fn register<Req, Resp, F>(&mut self, method: Method<Req, Resp>, handler: F) -> &mut Self
    where
        Req: Message,
        Resp: Message,
        F: Fn(&Context, Req) -> Result<Resp, Status> + Send + Sync + 'static,
    {
        let name = method.name;
        let erased = move |ctx: &Context, payload: Bytes, out: &mut BytesMut| {
            let request = Req::decode(payload)
                .map_err(|err| Status::invalid_argument(format!("{name}: {err}")))?;
            let response = handler(ctx, request)?;
            response.encode(out);
            Ok(())
        };
        let route = Route {
            name,
            handler: Box::new(erased),
        };
        self.routes
            .insert(route_key(method.service, method.method), route);
        self
    }

    /// Whether a handler is registered for `service`/`method`.
    pub fn contains(&self, service: u16, method: u16) -> bool {
        self.routes.contains_key(&route_key(service, method))
    }

    /// Calls the handler for `service`/`method`, which appends its encoded response message to
    /// `out` on success.
    ///
    /// # Errors
    /// The status to answer with: UNIMPLEMENTED, INVALID_ARGUMENT, the handler's own, or
    /// INTERNAL after a panic. `out` may then hold a partial message, which the caller discards.
    pub fn dispatch(
        &self,
        ctx: &Context,
        service: u16,
        method: u16,
        payload: Bytes,
        out: &mut BytesMut,
    ) -> Result<(), Status> {
        let Some(route) = self.routes.get(&route_key(service, method)) else {
            let known_service = self.routes.keys().any(|k| (k >> 16) as u16 == service);
            return Err(Status::unimplemented(if known_service {
                format!("service {service} has no method {method}")
            } else {
                format!("no service {service}")
            }));
        };
        // The handler and the buffer are not used again after a panic but to discard the
        // partial output, so no broken invariant can be observed.
        match catch_unwind(AssertUnwindSafe(|| (route.handler)(ctx, payload, out))) {
            Ok(result) => result,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("non-string panic payload");
                log::error!(
                    "handler {} panicked on request {}: {what}",
                    route.name,
                    ctx.request_id
                );
                Err(Status::internal(format!("{} failed", route.name)))
            }
        }
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.routes.values().map(|r| r.name).collect();
        names.sort_unstable();
        f.debug_struct("Router").field("methods", &names).finish()
    }
}
