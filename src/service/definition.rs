//! [`service!`](crate::service!): a service declared once, giving its method descriptors, a
//! trait for the server to implement, the registration of an implementation, and a typed
//! client stub.

/// Declares a service once: its id, its methods with their ids, names and types, and whether
/// each runs inline or on the worker pool. It expands to a module holding:
///
/// - `SERVICE` (the id, `u16`) and `NAME` (the service's name, `&str`);
/// - one [`Method`](crate::service::Method) constant per method, named
///   `"<service name>.<method name>"` (the name logs, errors and ACL patterns use);
/// - the server trait: one method per method, `fn name(&self, ctx: &Context, request: Req) ->
///   Result<Resp, Status>`; the implementation owns the service's state (wrap shared parts in
///   `Mutex`es or atomics: it is called from the event loops and the worker pool at once);
/// - `service(implementation)` and `shared(Arc<implementation>)`: the implementation as a
///   [`Service`](crate::service::Service) for [`Router::add_service`](crate::service::Router::add_service);
/// - the client stub: `Stub::connect(addr)` or `Stub::new(client)` (any
///   `BorrowMut<Client>`: an owned [`Client`](crate::client::Client) or `&mut Client`), one
///   method per method (`stub.get(&id)?`), and `client()` for the rest of the client's API
///   (deadlines with `call_with`, pipelining with `send`, `ping`).
///
/// Methods marked `rpc(blocking)` run on the server's worker pool
/// ([`Router::register_blocking`](crate::service::Router::register_blocking)); the others
/// inline on the event loop, so they must not block. Request and response types are any
/// [`Message`](crate::service::Message): integers, `bool`, `String`, `Bytes`, `()`, a
/// [`Cbor`](crate::service::Cbor) or [`Json`](crate::service::Json) wrapper around a serde
/// type (feature `serde`), or a type of your own. The types are named inside the generated
/// module, which imports everything of its parent module (`use super::*`).
///
/// Two methods with one id, or a service with id 0 (the server's own), make building the
/// server fail with an error naming them ([`Router::check`](crate::service::Router::check)).
/// Method names must not be `new`, `connect`, `client` or `into_inner`, which the stub uses.
/// A method named like a prelude trait's by-value method (`into`, `try_into`) works, but
/// `stub.into(&x)` finds the trait's method first: call it as `Stub::into(&mut stub, &x)`.
/// The server side has no such trap: the registration calls the trait's method by its full
/// path, so `clone` or `into` are fine there;
/// the module's own items are `SERVICE`, `NAME`, `Handlers`, `service` and `shared`, so the
/// trait and the stub need other names. A method's attributes (its doc comment, or
/// `#[deprecated]`) are copied to its constant, its trait method and its stub method; `#[cfg]`
/// on a method is not supported.
///
/// # Examples
///
/// ```
/// use courier_rpc::{service, Context, Router, Server, Status};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// service! {
///     /// A counter.
///     pub mod counter(service = 20, name = "counter") {
///         /// What a counter server implements.
///         trait Counter;
///         /// A typed client of the counter.
///         client CounterClient;
///         /// Adds to the count; answers the new count.
///         rpc ADD = 1: add(u64) -> u64;
///         /// The count.
///         rpc GET = 2: get(()) -> u64;
///     }
/// }
///
/// #[derive(Default)]
/// struct Count(AtomicU64);
///
/// impl counter::Counter for Count {
///     fn add(&self, _ctx: &Context, n: u64) -> Result<u64, Status> {
///         Ok(self.0.fetch_add(n, Ordering::Relaxed) + n)
///     }
///     fn get(&self, _ctx: &Context, (): ()) -> Result<u64, Status> {
///         Ok(self.0.load(Ordering::Relaxed))
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut router = Router::new();
/// router.add_service(counter::service(Count::default()));
/// let server = Server::builder().addr("127.0.0.1:0".parse()?).bind(router)?.spawn()?;
///
/// let mut counter = counter::CounterClient::connect(server.local_addr())?;
/// assert_eq!(counter.add(&5)?, 5);
/// assert_eq!(counter.add(&2)?, 7);
/// assert_eq!(counter.get(&())?, 7);
/// assert_eq!(counter::ADD.name, "counter.add");
/// server.shutdown()?;
/// # Ok(())
/// # }
/// ```
///
/// A mode other than `blocking` is a compile error saying so:
///
/// ```compile_fail
/// courier_rpc::service! {
///     pub mod fast(service = 21, name = "fast") {
///         trait Fast;
///         client FastClient;
///         rpc(urgent) PING = 1: ping(()) -> ();
///     }
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! service {
    (
        $(#[$meta:meta])*
        $vis:vis mod $module:ident (service = $id:expr, name = $name:literal) {
            $(#[$trait_meta:meta])*
            trait $Trait:ident;
            $(#[$client_meta:meta])*
            client $Client:ident;
            $(
                $(#[$method_meta:meta])*
                rpc $(($mode:ident))? $CONST:ident = $method_id:literal : $fn:ident ( $req:ty ) -> $resp:ty ;
            )*
        }
    ) => {
        $(#[$meta])*
        $vis mod $module {
            #[allow(unused_imports)]
            use super::*;

            #[doc = concat!("The service id of ", $name, ".")]
            pub const SERVICE: u16 = $id;
            #[doc = concat!("The service's name, the prefix of its methods' names: `", $name, "`.")]
            pub const NAME: &str = $name;

            $(
                $(#[$method_meta])*
                #[doc = ""]
                #[doc = concat!(
                    "Method ", stringify!($method_id), ", `", $name, ".", stringify!($fn), "`."
                )]
                pub const $CONST: $crate::service::Method<$req, $resp> =
                    $crate::service::Method::new(SERVICE, $method_id, concat!($name, ".", stringify!($fn)));
            )*

            $(#[$trait_meta])*
            pub trait $Trait: ::std::marker::Send + ::std::marker::Sync + 'static {
                $(
                    $(#[$method_meta])*
                    ///
                    /// # Errors
                    /// The status the caller receives instead of a response.
                    fn $fn(
                        &self,
                        ctx: &$crate::service::Context,
                        request: $req,
                    ) -> ::std::result::Result<$resp, $crate::proto::Status>;
                )*
            }

            #[doc = concat!(
                "An implementation of [`", stringify!($Trait), "`], ready for `Router::add_service`."
            )]
            pub struct Handlers<__CourierImpl>(::std::sync::Arc<__CourierImpl>);

            impl<__CourierImpl> ::std::fmt::Debug for Handlers<__CourierImpl> {
                fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                    f.write_str(concat!($name, " handlers"))
                }
            }

            #[doc = concat!("Serves ", $name, " with `implementation`, which the server owns.")]
            pub fn service<__CourierImpl: $Trait>(
                implementation: __CourierImpl,
            ) -> Handlers<__CourierImpl> {
                Handlers(::std::sync::Arc::new(implementation))
            }

            #[doc = concat!(
                "Serves ", $name, " with an implementation shared with other code ",
                "(each registered method holds a clone of the `Arc`)."
            )]
            pub fn shared<__CourierImpl: $Trait>(
                implementation: ::std::sync::Arc<__CourierImpl>,
            ) -> Handlers<__CourierImpl> {
                Handlers(implementation)
            }

            impl<__CourierImpl: $Trait> $crate::service::Service for Handlers<__CourierImpl> {
                // Attributes of a method (such as #[deprecated]) are copied to its items.
                #[allow(deprecated)]
                fn register(self, router: &mut $crate::service::Router) {
                    $(
                        let implementation = ::std::sync::Arc::clone(&self.0);
                        $crate::__service_register!(
                            router, $($mode)?, $CONST,
                            // Fully qualified: a method named like one of Arc's (`clone`)
                            // or a prelude trait's (`into`) still calls the trait's.
                            move |ctx: &$crate::service::Context, request: $req| {
                                <__CourierImpl as $Trait>::$fn(&*implementation, ctx, request)
                            }
                        );
                    )*
                }
            }

            $(#[$client_meta])*
            #[derive(Debug)]
            pub struct $Client<__CourierClient = $crate::client::Client> {
                inner: __CourierClient,
            }

            impl $Client<$crate::client::Client> {
                /// Connects a courier `Client` to `addr` with the default settings.
                ///
                /// # Errors
                /// As `Client::connect`: the address does not resolve or refuses, or the
                /// connect timeout passes.
                pub fn connect(
                    addr: impl ::std::net::ToSocketAddrs,
                ) -> ::std::result::Result<Self, $crate::client::ClientError> {
                    $crate::client::Client::connect(addr).map(Self::new)
                }
            }

            impl<__CourierClient> $Client<__CourierClient> {
                /// A stub calling through `client`: a `Client` or an `AsyncClient`, owned or
                /// `&mut`.
                pub fn new(client: __CourierClient) -> Self {
                    $Client { inner: client }
                }

                /// The client back.
                pub fn into_inner(self) -> __CourierClient {
                    self.inner
                }
            }

            impl<__CourierClient: ::std::borrow::BorrowMut<$crate::client::Client>>
                $Client<__CourierClient>
            {
                /// The client, for its other calls (deadlines, pipelining, ping).
                pub fn client(&mut self) -> &mut $crate::client::Client {
                    self.inner.borrow_mut()
                }
            }

            $crate::__service_async_stub!($Client);

            #[allow(deprecated)]
            impl<__CourierClient: $crate::client::Caller> $Client<__CourierClient> {
                $(
                    $(#[$method_meta])*
                    ///
                    /// With a blocking `Client` this returns the result; with an
                    /// `AsyncClient`, a future of it.
                    ///
                    /// # Errors
                    /// As `Client::call`: the server's status, a timeout, a connection or
                    /// protocol error.
                    pub fn $fn<'__courier>(
                        &'__courier mut self,
                        request: &'__courier $req,
                    ) -> <__CourierClient as $crate::client::Caller>::Call<'__courier, $resp> {
                        $crate::client::Caller::call_method(&mut self.inner, &$CONST, request)
                    }
                )*
            }
        }
    };
}

/// The async half of a [`service!`](crate::service!) stub: with feature `tokio`,
/// `Stub::connect_async(addr).await`.
#[cfg(feature = "tokio")]
#[doc(hidden)]
#[macro_export]
macro_rules! __service_async_stub {
    ($Client:ident) => {
        impl $Client<$crate::client::AsyncClient> {
            /// Connects a courier `AsyncClient` to `addr` with the default settings.
            ///
            /// # Errors
            /// As `AsyncClient::connect`: the address does not resolve or refuses, or the
            /// connect timeout passes.
            pub async fn connect_async(
                addr: impl $crate::__tokio::net::ToSocketAddrs,
            ) -> ::std::result::Result<Self, $crate::client::ClientError> {
                $crate::client::AsyncClient::connect(addr)
                    .await
                    .map(Self::new)
            }
        }
    };
}

/// Without feature `tokio`, no async half.
#[cfg(not(feature = "tokio"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __service_async_stub {
    ($Client:ident) => {};
}

/// Registers one method of a [`service!`](crate::service!) declaration, inline or blocking.
#[doc(hidden)]
#[macro_export]
macro_rules! __service_register {
    ($router:ident, , $method:ident, $handler:expr) => {
        $router.register($method, $handler);
    };
    ($router:ident, blocking, $method:ident, $handler:expr) => {
        $router.register_blocking($method, $handler);
    };
    ($router:ident, $other:ident, $method:ident, $handler:expr) => {
        compile_error!(concat!(
            "service!: `rpc(",
            stringify!($other),
            ") ",
            stringify!($method),
            "`: the only mode is `rpc(blocking)`"
        ));
    };
}
