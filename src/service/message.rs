//! Request and response message bodies.

use std::borrow::Cow;
use std::fmt;

use bytes::{Buf, BufMut, Bytes};

use crate::proto::Status;

/// A request or response message: the payload of a REQUEST or an OK RESPONSE.
///
/// `encode` appends the message to a buffer; `decode` parses a whole payload, which is a
/// [`Bytes`] slice of the connection's read buffer (so a message may keep slices of it without
/// copying). A payload that does not decode is answered with INVALID_ARGUMENT by the server and
/// reported as a protocol error by the client. A message that cannot be encoded (a field over
/// a limit of its layout) returns an error instead of panicking: the client returns it from the
/// call without sending anything ([`ClientError::Message`](crate::client::ClientError::Message)),
/// and a server answers the request INTERNAL.
///
/// Implemented here for the raw payload ([`Bytes`], `Vec<u8>`), UTF-8 text ([`String`]), the
/// empty payload (`()`), `bool` (one byte, 0 or 1) and the integer types (big-endian, exactly
/// their width, as every number in the bundled services and the frame header). With the
/// `serde` feature, [`Cbor`](crate::service::Cbor) and [`Json`](crate::service::Json) make any
/// serde type a message.
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
///     fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), MessageError> {
///         dst.put_u32(self.0);
///         dst.put_u32(self.1);
///         Ok(())
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
/// Pair(1, 2).encode(&mut buf).unwrap();
/// assert_eq!(Pair::decode(Bytes::from(buf)), Ok(Pair(1, 2)));
/// ```
pub trait Message: Sized + Send + 'static {
    /// The encoding's name, as the admin service's reflection (`admin.Methods`,
    /// [`crate::admin::METHODS`]) lists it for each method's request and response, so that a
    /// generic client can build and show messages it has no type for: one of the names of
    /// `proto-spec/SERVICES.md` Section 4.5: `empty`, `bytes`, `utf8`, `bool`, `u8` ... `u128`,
    /// `i8` ... `i128`, `cbor`, `json`, or `custom` (a layout of the service's own,
    /// documented by it). Default `custom`.
    const FORMAT: &'static str = "custom";

    /// Appends the encoded message to `dst`.
    ///
    /// # Errors
    /// A [`MessageError`] when the message has no valid encoding (say, a field longer than its
    /// length prefix can count). What was appended before the error is discarded by the caller.
    fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), MessageError>;

    /// Parses a whole payload.
    ///
    /// # Errors
    /// A [`MessageError`] saying why the bytes are not this message.
    fn decode(src: Bytes) -> Result<Self, MessageError>;
}

/// Why a payload is not a valid message, or a message has no valid encoding.
///
/// Converts into [`Status`] as INVALID_ARGUMENT, so a handler can decode a nested payload
/// with `?`. That is the caller's fault; a handler that fails to encode something of its own
/// should answer INTERNAL instead (`Status::internal`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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

/// INVALID_ARGUMENT with the error's text: the status a server answers a request whose
/// message does not decode with.
impl From<MessageError> for Status {
    fn from(err: MessageError) -> Self {
        Status::invalid_argument(err.to_string())
    }
}

/// The raw payload, unchanged; decoding is free (a slice of the read buffer).
impl Message for Bytes {
    const FORMAT: &'static str = "bytes";

    fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), MessageError> {
        dst.put_slice(self);
        Ok(())
    }
    fn decode(src: Bytes) -> Result<Self, MessageError> {
        Ok(src)
    }
}

/// The raw payload, copied into a vector.
impl Message for Vec<u8> {
    const FORMAT: &'static str = "bytes";

    fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), MessageError> {
        dst.put_slice(self);
        Ok(())
    }
    fn decode(src: Bytes) -> Result<Self, MessageError> {
        Ok(src.to_vec())
    }
}

/// A UTF-8 payload.
impl Message for String {
    const FORMAT: &'static str = "utf8";

    fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), MessageError> {
        dst.put_slice(self.as_bytes());
        Ok(())
    }
    fn decode(src: Bytes) -> Result<Self, MessageError> {
        String::from_utf8(src.to_vec()).map_err(|_| MessageError::invalid("payload is not UTF-8"))
    }
}

/// An empty payload; any byte in it is an error.
impl Message for () {
    const FORMAT: &'static str = "empty";

    fn encode<B: BufMut>(&self, _dst: &mut B) -> Result<(), MessageError> {
        Ok(())
    }
    fn decode(src: Bytes) -> Result<Self, MessageError> {
        if src.is_empty() {
            Ok(())
        } else {
            Err(MessageError::length(0, src.len()))
        }
    }
}

/// One byte: 1 for `true`, 0 for `false`; any other byte, or any other length, is an error.
impl Message for bool {
    const FORMAT: &'static str = "bool";

    fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), MessageError> {
        dst.put_u8(u8::from(*self));
        Ok(())
    }
    fn decode(src: Bytes) -> Result<Self, MessageError> {
        match src[..] {
            [0] => Ok(false),
            [1] => Ok(true),
            [_] => Err(MessageError::invalid("a bool must be 0 or 1")),
            _ => Err(MessageError::length(1, src.len())),
        }
    }
}

/// `Message` for integer types: big-endian, exactly the type's width.
macro_rules! integer_message {
    ($($t:ident => $put:ident, $get:ident;)*) => {$(
        #[doc = concat!("A big-endian `", stringify!($t), "`: exactly ", stringify!($t), "'s width in bytes; any other length is an error.")]
        impl Message for $t {
            const FORMAT: &'static str = stringify!($t);

            fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), MessageError> {
                dst.$put(*self);
                Ok(())
            }
            fn decode(mut src: Bytes) -> Result<Self, MessageError> {
                const WIDTH: usize = std::mem::size_of::<$t>();
                if src.len() != WIDTH {
                    return Err(MessageError::length(WIDTH, src.len()));
                }
                Ok(src.$get())
            }
        }
    )*};
}

integer_message! {
    u8 => put_u8, get_u8;
    i8 => put_i8, get_i8;
    u16 => put_u16, get_u16;
    i16 => put_i16, get_i16;
    u32 => put_u32, get_u32;
    i32 => put_i32, get_i32;
    u64 => put_u64, get_u64;
    i64 => put_i64, get_i64;
    u128 => put_u128, get_u128;
    i128 => put_i128, get_i128;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<M: Message + PartialEq + std::fmt::Debug>(m: M, wire: &[u8]) {
        let mut buf = Vec::new();
        m.encode(&mut buf).expect("encodes");
        assert_eq!(buf, wire);
        assert_eq!(M::decode(Bytes::from(buf)), Ok(m));
    }

    #[test]
    fn integers_are_big_endian_and_exactly_their_width() {
        round_trip(0x0102_u16, &[1, 2]);
        round_trip(-2_i32, &[0xff, 0xff, 0xff, 0xfe]);
        round_trip(0x0102_0304_0506_0708_u64, &[1, 2, 3, 4, 5, 6, 7, 8]);
        round_trip(7_u8, &[7]);
        assert_eq!(
            u32::decode(Bytes::from_static(&[1, 2, 3])),
            Err(MessageError::length(4, 3))
        );
        assert_eq!(
            u16::decode(Bytes::from_static(&[1, 2, 3])),
            Err(MessageError::length(2, 3))
        );
    }

    #[test]
    fn bools_are_one_byte_zero_or_one() {
        round_trip(true, &[1]);
        round_trip(false, &[0]);
        assert!(matches!(
            bool::decode(Bytes::from_static(&[2])),
            Err(MessageError::Invalid(_))
        ));
        assert_eq!(bool::decode(Bytes::new()), Err(MessageError::length(1, 0)));
    }

    #[test]
    fn a_message_error_is_invalid_argument() {
        let status = Status::from(MessageError::length(4, 3));
        assert_eq!(status.code, crate::proto::Code::INVALID_ARGUMENT);
        assert_eq!(status.message, "message is 3 bytes, expected 4");
    }
}
