//! Request and response message bodies.

use std::borrow::Cow;
use std::fmt;

use bytes::{BufMut, Bytes};

/// A request or response message: the payload of a REQUEST or an OK RESPONSE.
///
/// `encode` appends the message to a buffer; `decode` parses a whole payload, which is a
/// [`Bytes`] slice of the connection's read buffer (so a message may keep slices of it without
/// copying). A payload that does not decode is answered with INVALID_ARGUMENT by the server and
/// reported as a protocol error by the client.
///
/// # Examples
///
/// ```
/// use bytes::{Buf, BufMut, Bytes};
/// use courier_rpc::service::{Message, MessageError};
///
/// /// Two big-endian u32s.
/// #[derive(Debug, PartialEq)]
/// struct Pair(u32, u32);
///
/// impl Message for Pair {
///     fn encode<B: BufMut>(&self, dst: &mut B) {
///         dst.put_u32(self.0);
///         dst.put_u32(self.1);
///     }
///     fn decode(mut src: Bytes) -> Result<Self, MessageError> {
///         if src.len() != 8 {
///             return Err(MessageError::length(8, src.len()));
///         }
///         Ok(Pair(src.get_u32(), src.get_u32()))
///     }
/// }
///
/// let mut buf = Vec::new();
/// Pair(1, 2).encode(&mut buf);
/// assert_eq!(Pair::decode(Bytes::from(buf)), Ok(Pair(1, 2)));
/// ```
pub trait Message: Sized + Send + 'static {
    /// Appends the encoded message to `dst`.
    fn encode<B: BufMut>(&self, dst: &mut B);

    /// Parses a whole payload.
    ///
    /// # Errors
    /// A [`MessageError`] saying why the bytes are not this message.
    fn decode(src: Bytes) -> Result<Self, MessageError>;
}

/// Why a payload is not a valid message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageError {
    /// The payload's length is wrong.
    Length {
        /// Bytes expected (the minimum, or the exact length).
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// A field breaks a rule; the text says which.
    Invalid(Cow<'static, str>),
}

impl MessageError {
    /// A [`MessageError::Length`].
    pub fn length(expected: usize, found: usize) -> Self {
        MessageError::Length { expected, found }
    }

    /// A [`MessageError::Invalid`] with this explanation.
    pub fn invalid(why: impl Into<Cow<'static, str>>) -> Self {
        MessageError::Invalid(why.into())
    }
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::Length { expected, found } => {
                write!(f, "message is {found} bytes, expected {expected}")
            }
            MessageError::Invalid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for MessageError {}

/// The raw payload, unchanged; decoding is free (a slice of the read buffer).
impl Message for Bytes {
    fn encode<B: BufMut>(&self, dst: &mut B) {
        dst.put_slice(self);
    }
    fn decode(src: Bytes) -> Result<Self, MessageError> {
        Ok(src)
    }
}

/// The raw payload, copied into a vector.
impl Message for Vec<u8> {
    fn encode<B: BufMut>(&self, dst: &mut B) {
        dst.put_slice(self);
    }
    fn decode(src: Bytes) -> Result<Self, MessageError> {
        Ok(src.to_vec())
    }
}

/// A UTF-8 payload.
impl Message for String {
    fn encode<B: BufMut>(&self, dst: &mut B) {
        dst.put_slice(self.as_bytes());
    }
    fn decode(src: Bytes) -> Result<Self, MessageError> {
        String::from_utf8(src.to_vec()).map_err(|_| MessageError::invalid("payload is not UTF-8"))
    }
}

/// An empty payload; any byte in it is an error.
impl Message for () {
    fn encode<B: BufMut>(&self, _dst: &mut B) {}
    fn decode(src: Bytes) -> Result<Self, MessageError> {
        if src.is_empty() {
            Ok(())
        } else {
            Err(MessageError::length(0, src.len()))
        }
    }
}
