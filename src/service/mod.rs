//! Typed services: messages, method descriptors and the router.
//!
//! A [`Message`] encodes to a `BufMut` and decodes from `Bytes`; a [`Method`] ties a
//! (service id, method id) to a request and a response type; a [`Router`] maps those ids to
//! handlers. The server dispatches through the router; the client calls through the same
//! [`Method`] constants.

mod message;
mod method;
mod router;

pub use message::{Message, MessageError};
pub use method::Method;
pub use router::{BlockingCall, Commit, Context, Router};
pub(crate) use router::{Failure, Outcome};
