//! Typed services: messages, method descriptors and the router.
//!
//! A [`Message`] encodes to a `BufMut` and decodes from `Bytes`; a [`Method`] ties a
//! (service id, method id) to a request and a response type; a [`Router`] maps those ids to
//! handlers. The server dispatches through the router; the client calls through the same
//! [`Method`] constants.

mod definition;
mod message;
mod method;
mod router;
#[cfg(feature = "serde")]
mod serde;

#[cfg(feature = "serde")]
pub use self::serde::{Cbor, Json};
pub use message::{Message, MessageError};
pub use method::Method;
pub(crate) use router::{route_key, Failure, Outcome};
pub use router::{
    BlockingCall, CallId, Commit, Context, MethodInfo, PrefetchHint, RouteError, Router, Service,
    MAX_NAME_LEN,
};
