//! The router: maps (service id, method id) to handlers.

use std::cell::Cell;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::message::Message;
use super::method::Method;
use crate::auth::{Authorizer, Identity};
use crate::proto::{Metadata, Status};

/// What a handler knows about the request besides its message.
#[derive(Clone, Debug)]
pub struct Context {
    /// The request id the client chose.
    pub request_id: u64,
    /// When the server received the request: the turn of its event loop that read the
    /// request's last byte (a request held back by a limit is dispatched later than this).
    pub received_at: Instant,
    /// When the client stops waiting: `received_at` plus the frame's deadline, or `None` when
    /// the client set none. Time in flight is not subtracted (the protocol carries no clock).
    /// The server does not call a handler once this has passed (it answers
    /// DEADLINE_EXCEEDED instead); a handler that works long may check it itself.
    pub deadline: Option<Instant>,
    /// The request's metadata entries (empty when none were sent).
    pub metadata: Metadata,
    /// Who the connection is: the subject of its verified client certificate, or the
    /// identity its AUTH proved; `None` for an anonymous connection (see [`crate::auth`]).
    pub identity: Option<Arc<Identity>>,
    /// The commit the response waits for, 0 for none ([`Context::hold_until_committed`]).
    commit: Cell<u64>,
}

impl Context {
    /// The context of request `request_id` decoded at `received_at`, with the client's
    /// `deadline` (if any) and `metadata`; for calling [`Router::dispatch`] outside a server.
    pub fn new(
        request_id: u64,
        received_at: Instant,
        deadline: Option<Instant>,
        metadata: Metadata,
    ) -> Self {
        Context {
            request_id,
            received_at,
            deadline,
            metadata,
            identity: None,
            commit: Cell::new(0),
        }
    }

    /// Holds this request's answer until the router's [`Commit`] has made `ticket` durable
    /// (group commit): the server sends the answer (the response message, or the handler's
    /// error status) once a [`Commit::commit`] covering `ticket` returns `Ok`, and replaces it
    /// with that call's status when it returns `Err`. A read that shows a write not yet
    /// durable holds its answer for that write's ticket.
    ///
    /// Only inline handlers ([`Router::register`], [`Router::register_encoded`]) can hold
    /// their response; the call is ignored for blocking ones, which can wait for their commit
    /// themselves. A handler that calls this several times waits for the largest ticket.
    /// `ticket` 0 means no commit.
    pub fn hold_until_committed(&self, ticket: u64) {
        self.commit.set(self.commit.get().max(ticket));
    }

    /// The ticket the response waits for, if any.
    pub(crate) fn commit_ticket(&self) -> Option<u64> {
        Some(self.commit.get()).filter(|&t| t != 0)
    }
}

/// Makes the writes of a turn durable, for handlers that hold their response
/// ([`Context::hold_until_committed`]): the server's event loop calls [`Commit::commit`] once
/// per turn, after serving every ready connection and before sending their held responses,
/// with the largest ticket any of them waits for. One write and one `fsync` thus cover every
/// write of the turn (group commit, as Redis's `appendfsync always` does per event-loop
/// turn). Registered with [`Router::set_commit`].
pub trait Commit: Send + Sync {
    /// Makes everything up to and including `ticket` durable, blocking until it is. Tickets
    /// are the implementor's own, increasing numbers (a log offset, say).
    ///
    /// # Errors
    /// The status every held response covered by this call is answered with instead of its
    /// own: UNAVAILABLE when the writes were not made durable (not done), UNKNOWN when
    /// whether they were cannot be known (a failed `fsync`), as the kv log does.
    fn commit(&self, ticket: u64) -> Result<(), Status>;
}

/// A type-erased handler: decode, call, encode into the output buffer.
type Handler = dyn Fn(&Context, Bytes, &mut BytesMut) -> Result<(), Status> + Send + Sync;

/// A registered method: its name, its handler, and where the handler runs.
pub(crate) struct Route {
    name: &'static str,
    handler: Box<Handler>,
    blocking: bool,
    /// The request's and the response's [`Message::FORMAT`].
    formats: (&'static str, &'static str),
}

/// A registered method, as [`Router::methods`] and the admin service's reflection
/// ([`crate::admin::METHODS`]) list it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MethodInfo {
    /// Service id.
    pub service: u16,
    /// Method id within the service.
    pub method: u16,
    /// The method's name ([`Method::name`]).
    pub name: &'static str,
    /// The request's encoding: its [`Message::FORMAT`] (`bytes`, `cbor`, `custom` ...).
    pub request: &'static str,
    /// The response's encoding: its [`Message::FORMAT`].
    pub response: &'static str,
    /// Whether it runs on the worker pool ([`Router::register_blocking`]).
    pub blocking: bool,
}

/// Why a handler call produced no response message.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The status to answer with: UNIMPLEMENTED, INVALID_ARGUMENT, the handler's own, or
    /// INTERNAL after a panic.
    pub(crate) status: Status,
    /// Whether the handler panicked.
    pub(crate) panicked: bool,
}

impl Failure {
    pub(crate) fn status(status: Status) -> Self {
        Failure {
            status,
            panicked: false,
        }
    }
}

/// What routing a request gave.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// An inline handler ran: `Ok` when it appended its response message to the buffer.
    Ready(Result<(), Failure>),
    /// An inline handler ran and its answer waits for this commit ticket: `Ok` when it
    /// appended its response message to the buffer, else the status to answer with.
    Held(u64, Result<(), Failure>),
    /// The method is blocking: run this call on a worker thread.
    Blocking(BlockingCall),
}

impl Route {
    /// Calls the handler, turning a panic into INTERNAL.
    fn call(&self, ctx: &Context, payload: Bytes, out: &mut BytesMut) -> Result<(), Failure> {
        // The handler and the buffer are not used again after a panic but to discard the
        // partial output, so no broken invariant can be observed.
        match catch_unwind(AssertUnwindSafe(|| (self.handler)(ctx, payload, out))) {
            Ok(result) => result.map_err(Failure::status),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("non-string panic payload");
                log::error!(
                    "handler {} panicked on request {}: {what}",
                    self.name,
                    ctx.request_id
                );
                Err(Failure {
                    status: Status::internal(format!("{} failed", self.name)),
                    panicked: true,
                })
            }
        }
    }
}

/// A request for a method registered with [`Router::register_blocking`], waiting to run on a
/// worker thread. The server's worker pool runs it; it holds the request's context and
/// payload.
pub struct BlockingCall {
    route: Arc<Route>,
    ctx: Context,
    payload: Bytes,
    slot: usize,
}

/// Which request a [`BlockingCall`] answers, kept by the server while the call runs and given
/// back with its result to [`Connection::complete`](crate::connection::Connection::complete):
/// the request id, and the method and time of receipt its counters are kept under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallId {
    /// The request id the client chose.
    pub request_id: u64,
    /// The method's index in [`Router::methods`].
    pub(crate) slot: usize,
    /// When the server received the request ([`Context::received_at`]).
    pub(crate) received_at: Instant,
}

impl BlockingCall {
    /// The request id of the call.
    pub fn request_id(&self) -> u64 {
        self.ctx.request_id
    }

    /// The request id, method and time of receipt of the call.
    pub fn id(&self) -> CallId {
        CallId {
            request_id: self.ctx.request_id,
            slot: self.slot,
            received_at: self.ctx.received_at,
        }
    }

    /// The call's deadline, if the client set one.
    pub fn deadline(&self) -> Option<Instant> {
        self.ctx.deadline
    }

    /// Runs the handler, appending its response message to `out`.
    pub(crate) fn run(self, out: &mut BytesMut) -> Result<(), Failure> {
        self.route.call(&self.ctx, self.payload, out)
    }
}

impl fmt::Debug for BlockingCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingCall")
            .field("method", &self.route.name)
            .field("request_id", &self.ctx.request_id)
            .finish()
    }
}

/// Maps (service id, method id) to handlers and calls them.
///
/// - an unknown service or method is answered UNIMPLEMENTED;
/// - a request message that does not decode is answered INVALID_ARGUMENT;
/// - a handler's `Err(status)` becomes a RESPONSE with that status;
/// - a handler that panics is answered INTERNAL, and the server goes on serving.
///
/// Handlers registered with [`Router::register`] run inline on the server's event loop
/// thread: they must be quick and must not block. Handlers that may block (disk, locks held
/// long, other servers) are registered with [`Router::register_blocking`] and run on the
/// server's worker pool ([`ServerBuilder::workers`](crate::server::ServerBuilder::workers)).
/// Service id 0 is reserved for the server's built-in admin service ([`crate::admin`]).
///
/// # Examples
///
/// ```
/// use courier_rpc::proto::Status;
/// use courier_rpc::service::{Method, Router};
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
    /// Sorted by key (service << 16 | method) and searched by bisection: a handful of
    /// comparisons for the few dozen methods a server has, with no hashing per request.
    routes: Vec<(u32, Arc<Route>)>,
    /// Registrations refused because their ids were taken, reported by [`Router::check`].
    conflicts: Vec<RouteError>,
    commit: Option<Arc<dyn Commit>>,
    authorizer: Option<Arc<dyn Authorizer>>,
    /// Prefetch hints by method key ([`Router::register_prefetch`]): a few at most.
    prefetch: Vec<(u32, Arc<PrefetchHint>)>,
}

/// A prefetch hint ([`Router::register_prefetch`]): called with the payloads of one batch's
/// requests for its method.
pub type PrefetchHint = dyn Fn(&mut dyn Iterator<Item = &[u8]>) + Send + Sync;

/// The key a (service, method) is sorted and found by: service << 16 | method.
pub(crate) fn route_key(service: u16, method: u16) -> u32 {
    (u32::from(service) << 16) | u32::from(method)
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Router::default()
    }

    /// Registers `handler` for `method`, to run inline on the event loop.
    ///
    /// Registering a second handler for the same (service, method) keeps the first and makes
    /// the router invalid: [`Router::check`], which building a server calls, then fails
    /// naming both. Service 0 is the server's own ([`crate::admin`]); a method in it fails
    /// the same check.
    pub fn register<Req, Resp, F>(&mut self, method: Method<Req, Resp>, handler: F) -> &mut Self
    where
        Req: Message,
        Resp: Message,
        F: Fn(&Context, Req) -> Result<Resp, Status> + Send + Sync + 'static,
    {
        self.insert_returning(method, handler, false)
    }

    /// Registers `handler` for `method`, to run on the server's worker pool, so that a handler
    /// that blocks delays no other request. Ids are checked as for [`Router::register`]. A blocking request is answered UNAVAILABLE at once
    /// when the pool's queue is full, and DEADLINE_EXCEEDED without running when its deadline
    /// passed while it waited. Responses of blocking requests may overtake earlier ones; the
    /// client matches them by request id.
    pub fn register_blocking<Req, Resp, F>(
        &mut self,
        method: Method<Req, Resp>,
        handler: F,
    ) -> &mut Self
    where
        Req: Message,
        Resp: Message,
        F: Fn(&Context, Req) -> Result<Resp, Status> + Send + Sync + 'static,
    {
        self.insert_returning(method, handler, true)
    }

    /// Registers `handler` for `method`, to run inline on the event loop, writing its response
    /// message straight into the output buffer instead of returning it: for handlers that can
    /// produce the encoding of a `Resp` without building one, such as copying a stored value
    /// out under a lock (no allocation, no reference count). What the handler appends to the
    /// buffer is sent as the body of the OK response, so it must be a valid encoding of
    /// `Resp`; on `Err` anything appended is discarded and the status is sent instead. Ids are
    /// checked as for [`Router::register`].
    pub fn register_encoded<Req, Resp, F>(
        &mut self,
        method: Method<Req, Resp>,
        handler: F,
    ) -> &mut Self
    where
        Req: Message,
        Resp: Message,
        F: Fn(&Context, Req, &mut BytesMut) -> Result<(), Status> + Send + Sync + 'static,
    {
        self.insert(method, handler, false)
    }

    /// Registers a prefetch hint for `method`: when one read brings several complete frames
    /// (pipelined requests), the server first calls `hint` once with the payloads of those
    /// among them that are requests for `method` (at most 32 frames are looked at; no call
    /// when none is), then decodes and serves them in order as always. A hint is for
    /// pulling into the CPU's cache the memory those requests' handler will touch, so that
    /// their cache misses overlap instead of following one another (see
    /// [`Store::prefetch`](crate::kv::Store::prefetch)).
    ///
    /// The payloads are raw and **unchecked**: no CRC, limit or decode has run on them yet,
    /// no access list has been consulted (a connection that has not authenticated gets
    /// hints too), and any may be garbage or turn out to belong to a frame the decoder or
    /// the access list refuses. A hint must therefore have no effect but on caches: change
    /// nothing, answer nothing, reveal nothing, and cope with any bytes (the kv hint reads a
    /// key only through bounds-checked slices). Its cost is bounded by the frames the turn
    /// may decode anyway.
    /// Requests with metadata are not passed. A second hint for one method replaces the
    /// first.
    pub fn register_prefetch<Req, Resp>(
        &mut self,
        method: Method<Req, Resp>,
        hint: impl Fn(&mut dyn Iterator<Item = &[u8]>) + Send + Sync + 'static,
    ) -> &mut Self {
        let key = route_key(method.service, method.method);
        self.prefetch.retain(|(k, _)| *k != key);
        self.prefetch.push((key, Arc::new(hint)));
        self
    }

    /// Whether any prefetch hint is registered.
    pub(crate) fn prefetches(&self) -> bool {
        !self.prefetch.is_empty()
    }

    /// Calls each prefetch hint with the payloads, in `buf`, of the requests for its method
    /// in `batch`: (method key, payload start, payload end), as [`peek_requests`] finds them,
    /// the key made by [`route_key`].
    ///
    /// [`peek_requests`]: crate::proto::peek_requests
    pub(crate) fn prefetch(&self, batch: &[(u32, usize, usize)], buf: &[u8]) {
        for (key, hint) in &self.prefetch {
            let mut payloads = batch
                .iter()
                .filter(|(k, ..)| k == key)
                .filter_map(|&(_, start, end)| buf.get(start..end))
                .peekable();
            if payloads.peek().is_some() {
                hint(&mut payloads);
            }
        }
    }

    /// Registers a handler that returns its response message, as an encoded one.
    fn insert_returning<Req, Resp, F>(
        &mut self,
        method: Method<Req, Resp>,
        handler: F,
        blocking: bool,
    ) -> &mut Self
    where
        Req: Message,
        Resp: Message,
        F: Fn(&Context, Req) -> Result<Resp, Status> + Send + Sync + 'static,
    {
        let name = method.name;
        let encoded = move |ctx: &Context, request: Req, out: &mut BytesMut| {
            handler(ctx, request)?
                .encode(out)
                .map_err(|err| Status::internal(format!("{name}: response does not encode: {err}")))
        };
        self.insert(method, encoded, blocking)
    }

    /// The one place a handler is type-erased: decode the request (INVALID_ARGUMENT when it
    /// does not), call, and keep the route sorted by key.
    fn insert<Req, Resp, F>(
        &mut self,
        method: Method<Req, Resp>,
        handler: F,
        blocking: bool,
    ) -> &mut Self
    where
        Req: Message,
        Resp: Message,
        F: Fn(&Context, Req, &mut BytesMut) -> Result<(), Status> + Send + Sync + 'static,
    {
        let name = method.name;
        let erased = move |ctx: &Context, payload: Bytes, out: &mut BytesMut| {
            let request = Req::decode(payload)
                .map_err(|err| Status::invalid_argument(format!("{name}: {err}")))?;
            handler(ctx, request, out)
        };
        let route = Arc::new(Route {
            name,
            handler: Box::new(erased),
            blocking,
            formats: (Req::FORMAT, Resp::FORMAT),
        });
        let key = route_key(method.service, method.method);
        match self.routes.binary_search_by_key(&key, |(k, _)| *k) {
            Ok(i) => self.conflicts.push(RouteError::Duplicate {
                service: method.service,
                method: method.method,
                first: self.routes[i].1.name,
                second: name,
            }),
            Err(i) => self.routes.insert(i, (key, route)),
        }
        self
    }

    /// Registers every method of `service`: a service declared with [`service!`](crate::service!)
    /// and its implementation (the declaration's `service` or `shared` function), or any
    /// other [`Service`].
    pub fn add_service(&mut self, service: impl Service) -> &mut Self {
        service.register(self);
        self
    }

    /// Whether the router can serve: no two registrations for the same (service, method), every
    /// method named by 1 to [`MAX_NAME_LEN`] printable ASCII characters other than space (the
    /// name is a field of the reflection's text lines and a label of the server's metrics),
    /// no two methods of one name, compared ignoring ASCII case as access lists compare them
    /// (nor one named as an admin method, or `unknown`, the metrics' name for requests for no
    /// served method), and no method of its own in service 0, which the server's built-in
    /// admin service owns.
    /// Building a server ([`ServerBuilder::bind`](crate::server::ServerBuilder::bind)) calls
    /// this before it registers the admin service.
    ///
    /// # Errors
    /// The first conflict, naming both methods ([`RouteError::Duplicate`]), a method whose
    /// name breaks the rule above ([`RouteError::BadName`]), a name already taken
    /// ([`RouteError::NameTaken`]), or the method in service 0
    /// ([`RouteError::Reserved`]).
    pub fn check(&self) -> Result<(), RouteError> {
        if let Some(conflict) = self.conflicts.first() {
            return Err(conflict.clone());
        }
        if let Some((key, route)) = self.routes.iter().find(|(_, r)| !valid_name(r.name)) {
            return Err(RouteError::BadName {
                service: (key >> 16) as u16,
                method: (key & 0xffff) as u16,
                name: route.name,
            });
        }
        let ids = |key: u32| ((key >> 16) as u16, (key & 0xffff) as u16);
        for (i, (key, route)) in self.routes.iter().enumerate() {
            let same = |name: &str| name.eq_ignore_ascii_case(route.name);
            let first = if RESERVED_NAMES.iter().any(|n| same(n)) {
                Some(None)
            } else {
                self.routes[..i]
                    .iter()
                    .find(|(_, r)| same(r.name))
                    .map(|(k, _)| Some(ids(*k)))
            };
            if let Some(first) = first {
                return Err(RouteError::NameTaken {
                    name: route.name,
                    first,
                    second: ids(*key),
                });
            }
        }
        match self.routes.first() {
            Some((key, route)) if key >> 16 == 0 => Err(RouteError::Reserved {
                method: (key & 0xffff) as u16,
                name: route.name,
            }),
            _ => Ok(()),
        }
    }

    fn find(&self, service: u16, method: u16) -> Option<&Arc<Route>> {
        self.routes.get(self.slot(service, method)).map(|(_, r)| r)
    }

    /// The index of `service`/`method` in [`Router::methods`] (its counters' slot), or the
    /// number of methods when it is not served.
    pub(crate) fn slot(&self, service: u16, method: u16) -> usize {
        let key = route_key(service, method);
        self.routes
            .binary_search_by_key(&key, |(k, _)| *k)
            .unwrap_or(self.routes.len())
    }

    /// The names of [`Router::methods`], in order: the per-method counters' labels.
    pub(crate) fn method_names(&self) -> std::sync::Arc<[&'static str]> {
        self.routes.iter().map(|(_, r)| r.name).collect()
    }

    /// Sets the [`Commit`] that held responses wait for ([`Context::hold_until_committed`]);
    /// replaces any set before. Without one, a held response is sent at once.
    pub fn set_commit(&mut self, commit: Arc<dyn Commit>) -> &mut Self {
        self.commit = Some(commit);
        self
    }

    /// Sets the [`Authorizer`] that decides, before dispatch, whether a request runs:
    /// a request with no identity ([`Context::identity`]) is answered UNAUTHENTICATED, and
    /// one whose identity may not call the method PERMISSION_DENIED, neither processed.
    /// Replaces any set before. Without one, every request runs.
    pub fn set_authorizer(&mut self, authorizer: Arc<dyn Authorizer>) -> &mut Self {
        self.authorizer = Some(authorizer);
        self
    }

    /// Whether an [`Authorizer`] is set.
    pub fn has_authorizer(&self) -> bool {
        self.authorizer.is_some()
    }

    /// Runs the [`Commit`] up to `ticket`; `Ok` when none is set.
    ///
    /// # Errors
    /// The commit's status.
    pub fn commit(&self, ticket: u64) -> Result<(), Status> {
        match &self.commit {
            Some(commit) => commit.commit(ticket),
            None => Ok(()),
        }
    }

    /// Every registered method, ordered by service id then method id. A server's router also
    /// lists the admin service's methods, which building the server registers.
    pub fn methods(&self) -> Vec<MethodInfo> {
        self.routes
            .iter()
            .map(|(key, route)| MethodInfo {
                service: (key >> 16) as u16,
                method: (key & 0xffff) as u16,
                name: route.name,
                request: route.formats.0,
                response: route.formats.1,
                blocking: route.blocking,
            })
            .collect()
    }

    /// Whether a handler is registered for `service`/`method`.
    pub fn contains(&self, service: u16, method: u16) -> bool {
        self.find(service, method).is_some()
    }

    /// Whether any handler was registered with [`Router::register_blocking`].
    pub fn has_blocking(&self) -> bool {
        self.routes.iter().any(|(_, r)| r.blocking)
    }

    /// Calls the handler for `service`/`method` on this thread, blocking or not, which appends
    /// its encoded response message to `out` on success.
    ///
    /// # Errors
    /// The status to answer with: UNAUTHENTICATED or PERMISSION_DENIED (see
    /// [`Router::set_authorizer`]), UNIMPLEMENTED, INVALID_ARGUMENT, the handler's own, or
    /// INTERNAL after a panic. `out` may then hold a partial message, which the caller discards.
    pub fn dispatch(
        &self,
        ctx: &Context,
        service: u16,
        method: u16,
        payload: Bytes,
        out: &mut BytesMut,
    ) -> Result<(), Status> {
        let slot = self.slot(service, method);
        self.lookup_allowed(ctx, slot, service, method)?
            .call(ctx, payload, out)
            .map_err(|failure| failure.status)
    }

    /// Calls `method` on this thread as a server would, without a socket: the request is
    /// encoded, dispatched ([`Router::dispatch`], so the authorizer, decoding, the handler and
    /// panics are treated as in a server) and the response decoded. A context whose deadline
    /// has passed is answered DEADLINE_EXCEEDED without calling the handler, as a server does.
    /// The context is [`Context::new`] with request id 1, received now, no deadline and no
    /// metadata; use [`Router::call_with`] for another. For testing handlers: the round trip
    /// through the message encodings is the one a client's call makes, less the frame.
    ///
    /// Unlike a server, it does not run [`Router::check`] (with two handlers for one method,
    /// the first answers), and it runs a blocking handler on this thread.
    ///
    /// # Errors
    /// The status a client would receive; INTERNAL when the request does not encode (as the
    /// server answers a response that does not), and INVALID_ARGUMENT when the response does
    /// not decode (where a client reports
    /// [`ProtocolError::Message`](crate::client::ProtocolError::Message)).
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_rpc::{Code, Method, Router, Status};
    ///
    /// const HALVE: Method<u32, u32> = Method::new(10, 1, "math.halve");
    ///
    /// let mut router = Router::new();
    /// router.register(HALVE, |_ctx, n: u32| match n % 2 {
    ///     0 => Ok(n / 2),
    ///     _ => Err(Status::invalid_argument("odd")),
    /// });
    /// assert_eq!(router.call(&HALVE, &42), Ok(21));
    /// assert_eq!(router.call(&HALVE, &7).unwrap_err().code, Code::INVALID_ARGUMENT);
    /// ```
    pub fn call<Req: Message, Resp: Message>(
        &self,
        method: &Method<Req, Resp>,
        request: &Req,
    ) -> Result<Resp, Status> {
        let ctx = Context::new(1, Instant::now(), None, Metadata::new());
        self.call_with(&ctx, method, request)
    }

    /// [`Router::call`] with the context `ctx` (a deadline, metadata, or an identity).
    ///
    /// # Errors
    /// As [`Router::call`].
    pub fn call_with<Req: Message, Resp: Message>(
        &self,
        ctx: &Context,
        method: &Method<Req, Resp>,
        request: &Req,
    ) -> Result<Resp, Status> {
        if ctx
            .deadline
            .is_some_and(|deadline| deadline <= Instant::now())
        {
            return Err(Status::deadline_exceeded(format!(
                "{}: deadline passed before dispatch; not run",
                method.name
            )));
        }
        let mut payload = BytesMut::new();
        request.encode(&mut payload).map_err(|err| {
            Status::internal(format!("{}: request does not encode: {err}", method.name))
        })?;
        let mut out = BytesMut::new();
        self.dispatch(
            ctx,
            method.service,
            method.method,
            payload.freeze(),
            &mut out,
        )?;
        Resp::decode(out.freeze()).map_err(|err| {
            Status::invalid_argument(format!("{}: response does not decode: {err}", method.name))
        })
    }

    /// Calls an inline handler, or returns a blocking one's call for the worker pool. `slot`
    /// is [`Router::slot`] of `service`/`method`.
    pub(crate) fn route(
        &self,
        ctx: Context,
        (slot, service, method): (usize, u16, u16),
        payload: Bytes,
        out: &mut BytesMut,
    ) -> Outcome {
        match self.lookup_allowed(&ctx, slot, service, method) {
            Err(status) => Outcome::Ready(Err(Failure::status(status))),
            Ok(route) if route.blocking => Outcome::Blocking(BlockingCall {
                route: Arc::clone(route),
                ctx,
                payload,
                slot,
            }),
            Ok(route) => match (route.call(&ctx, payload, out), ctx.commit_ticket()) {
                (result, Some(ticket)) if self.commit.is_some() => Outcome::Held(ticket, result),
                (result, _) => Outcome::Ready(result),
            },
        }
    }

    /// The route, if the request's identity may call it. With an authorizer, a request with
    /// no identity learns nothing, not even whether the method exists.
    fn lookup_allowed(
        &self,
        ctx: &Context,
        slot: usize,
        service: u16,
        method: u16,
    ) -> Result<&Arc<Route>, Status> {
        let Some(authorizer) = &self.authorizer else {
            return self.lookup(slot, service, method);
        };
        let Some(identity) = &ctx.identity else {
            return Err(Status::unauthenticated(
                "authenticate first (admin.Auth); not processed",
            ));
        };
        let route = self.lookup(slot, service, method)?;
        if !authorizer.allows(identity, service, method, route.name) {
            return Err(Status::permission_denied(format!(
                "{} may not call {}; not processed",
                identity.name(),
                route.name
            )));
        }
        Ok(route)
    }

    fn lookup(&self, slot: usize, service: u16, method: u16) -> Result<&Arc<Route>, Status> {
        self.routes.get(slot).map(|(_, r)| r).ok_or_else(|| {
            let known_service = self.routes.iter().any(|(k, _)| (k >> 16) as u16 == service);
            Status::unimplemented(if known_service {
                format!("service {service} has no method {method}")
            } else {
                format!("no service {service}")
            })
        })
    }
}

/// Longest method name [`Router::check`] accepts, in bytes: 128.
pub const MAX_NAME_LEN: usize = 128;

/// Names no registered method may take: the admin service's, which building a server adds,
/// and the per-method metrics' name for requests for no served method.
const RESERVED_NAMES: [&str; 5] = [
    "admin.Stats",
    "admin.Auth",
    "admin.WhoAmI",
    "admin.Methods",
    crate::stats::UNKNOWN_METHOD,
];

/// Whether `name` is 1 to [`MAX_NAME_LEN`] printable ASCII characters, none a space.
fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic())
}

/// A set of methods registered together, such as the handlers of a service declared with
/// [`service!`](crate::service!); see [`Router::add_service`].
pub trait Service {
    /// Registers every method of the service on `router`.
    fn register(self, router: &mut Router);
}

/// Why a [`Router`] cannot serve ([`Router::check`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteError {
    /// Two handlers were registered for one (service, method).
    Duplicate {
        /// The service id.
        service: u16,
        /// The method id.
        method: u16,
        /// The name of the method registered first.
        first: &'static str,
        /// The name of the method registered second.
        second: &'static str,
    },
    /// A method's name is empty, longer than [`MAX_NAME_LEN`], or holds a byte that is not
    /// printable ASCII (a space, a control character, non-ASCII UTF-8).
    BadName {
        /// The service id.
        service: u16,
        /// The method id.
        method: u16,
        /// The name.
        name: &'static str,
    },
    /// Two methods have one name (compared ignoring ASCII case), or a method has a name the
    /// server keeps for itself (an admin method's, or `unknown`).
    NameTaken {
        /// The name.
        name: &'static str,
        /// The (service, method) ids of the method that has it first; `None` when the server
        /// keeps it.
        first: Option<(u16, u16)>,
        /// The (service, method) ids of the method that has it too.
        second: (u16, u16),
    },
    /// A method was registered in service 0, which the server's admin service owns.
    Reserved {
        /// The method id.
        method: u16,
        /// The method's name.
        name: &'static str,
    },
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::Duplicate {
                service,
                method,
                first,
                second,
            } => write!(
                f,
                "{second} and {first} are both registered as service {service} method {method}"
            ),
            RouteError::BadName {
                service,
                method,
                name,
            } => write!(
                f,
                "service {service} method {method} is named {name:?}: a method name is 1 to \
                 {MAX_NAME_LEN} printable ASCII characters, no spaces"
            ),
            RouteError::NameTaken {
                name,
                first,
                second: (service, method),
            } => {
                write!(f, "service {service} method {method} is named {name:?}, ")?;
                match first {
                    Some((s, m)) => write!(f, "as service {s} method {m} is"),
                    None => f.write_str("a name the server keeps for itself"),
                }?;
                f.write_str(": every method needs a name of its own (names ignore ASCII case)")
            }
            RouteError::Reserved { method, name } => {
                write!(f, "{name} is registered as service 0 method {method}")?;
                use crate::admin::{AUTH, METHODS, STATS, WHOAMI};
                let admin = [
                    (STATS.method, STATS.name),
                    (AUTH.method, AUTH.name),
                    (WHOAMI.method, WHOAMI.name),
                    (METHODS.method, METHODS.name),
                ]
                .into_iter()
                .find(|(id, _)| id == method);
                if let Some((_, taken)) = admin {
                    write!(f, ", which is {taken}")?;
                }
                f.write_str(
                    "; service 0 is the server's admin service: give the service another id",
                )
            }
        }
    }
}

impl std::error::Error for RouteError {}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.routes.iter().map(|(_, r)| r.name).collect();
        names.sort_unstable();
        f.debug_struct("Router")
            .field("methods", &names)
            .field("commit", &self.commit.is_some())
            .field("authorizer", &self.authorizer)
            .finish()
    }
}
