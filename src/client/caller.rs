//! [`Caller`]: what a [`service!`](crate::service!) stub calls through, so that one stub
//! serves the blocking client and the async one.

use super::{Client, ClientError};
use crate::service::{Message, Method};

/// A client that a [`service!`](crate::service!) stub calls through. Each stub method is
/// `fn name(&mut self, request: &Req) -> C::Call<'_, Resp>`, so with the blocking
/// [`Client`] (or `&mut Client`) a call returns `Result<Resp, ClientError>` at once, and with
/// the tokio `AsyncClient` (feature `tokio`) it returns a future of that result, to `.await`.
///
/// Implemented for [`Client`], for `AsyncClient`, and for `&mut` either.
///
/// A request type must be `Sync` as well as a [`Message`] (every message type of this crate
/// is), with either client: an async call's future holds a reference to its request across
/// `.await` and must be `Send`, and one trait serves both.
pub trait Caller {
    /// What a call returns: the result itself for a blocking client, a future of it for an
    /// async one.
    type Call<'a, Resp: 'a>
    where
        Self: 'a;

    /// Calls `method` with `request`: [`Client::call`], or `AsyncClient::call`.
    fn call_method<'a, Req: Message + Sync, Resp: Message + Send + 'a>(
        &'a mut self,
        method: &'a Method<Req, Resp>,
        request: &'a Req,
    ) -> Self::Call<'a, Resp>;
}

impl Caller for Client {
    type Call<'a, Resp: 'a> = Result<Resp, ClientError>;

    fn call_method<'a, Req: Message + Sync, Resp: Message + Send + 'a>(
        &'a mut self,
        method: &'a Method<Req, Resp>,
        request: &'a Req,
    ) -> Self::Call<'a, Resp> {
        self.call(method, request)
    }
}

/// The future an [`AsyncClient`](super::AsyncClient) stub call returns.
#[cfg(feature = "tokio")]
pub type AsyncCall<'a, Resp> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Resp, ClientError>> + Send + 'a>>;

#[cfg(feature = "tokio")]
impl Caller for super::AsyncClient {
    type Call<'a, Resp: 'a> = AsyncCall<'a, Resp>;

    fn call_method<'a, Req: Message + Sync, Resp: Message + Send + 'a>(
        &'a mut self,
        method: &'a Method<Req, Resp>,
        request: &'a Req,
    ) -> Self::Call<'a, Resp> {
        Box::pin(super::AsyncClient::call(self, method, request))
    }
}

impl<C: Caller + ?Sized> Caller for &mut C {
    type Call<'a, Resp: 'a>
        = C::Call<'a, Resp>
    where
        Self: 'a;

    fn call_method<'a, Req: Message + Sync, Resp: Message + Send + 'a>(
        &'a mut self,
        method: &'a Method<Req, Resp>,
        request: &'a Req,
    ) -> Self::Call<'a, Resp> {
        (**self).call_method(method, request)
    }
}
