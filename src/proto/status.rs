//! Status codes: gRPC's canonical codes, with the same numbers and names.
//!
//! Source: `grpc/grpc:doc/statuscodes.md`. A status travels in the 32-bit status word of
//! RESPONSE, GOAWAY and ERROR frames (`proto-spec/PROTOCOL.md` §6).

use std::fmt;

/// A status code as carried on the wire: an open `u32` newtype.
///
/// The named constants are gRPC's canonical codes 0 to 16. Any other value is kept as it is, so
/// a code this build does not know survives a decode and re-encode unchanged; decisions should
/// treat it as [`Code::UNKNOWN`] (`proto-spec/PROTOCOL.md` §6).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Code(pub u32);

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $value:expr;)*) => {
        impl Code {
            $($(#[$doc])* pub const $name: Code = Code($value);)*

            /// Every named code, in numeric order.
            pub const ALL: &'static [Code] = &[$(Code::$name),*];

            /// The canonical name (`"NOT_FOUND"`), or `None` for a code above 16.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(Code::$name => Some(stringify!($name)),)*
                    _ => None,
                }
            }

            /// The code with this canonical name (`"UNAVAILABLE"`), if there is one.
            pub fn from_name(name: &str) -> Option<Code> {
                match name {
                    $(stringify!($name) => Some(Code::$name),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    /// 0: not an error.
    OK = 0;
    /// 1: the operation was cancelled, typically by the caller.
    CANCELLED = 1;
    /// 2: an error with no better code; also how unknown codes are treated.
    UNKNOWN = 2;
    /// 3: the request is malformed whatever the server's state (a body that does not decode).
    INVALID_ARGUMENT = 3;
    /// 4: the deadline passed before the operation completed.
    DEADLINE_EXCEEDED = 4;
    /// 5: the requested entity (a key) was not found.
    NOT_FOUND = 5;
    /// 6: the entity a client tried to create already exists.
    ALREADY_EXISTS = 6;
    /// 7: the caller may not run this operation.
    PERMISSION_DENIED = 7;
    /// 8: a resource is exhausted: a size limit, a connection limit, a quota.
    RESOURCE_EXHAUSTED = 8;
    /// 9: the system is not in the state the operation needs.
    FAILED_PRECONDITION = 9;
    /// 10: the operation was aborted (a concurrency conflict).
    ABORTED = 10;
    /// 11: an argument is outside its valid range.
    OUT_OF_RANGE = 11;
    /// 12: the operation (service, method, protocol version) is not implemented.
    UNIMPLEMENTED = 12;
    /// 13: an invariant broke inside the server (a handler panicked).
    INTERNAL = 13;
    /// 14: the service is unavailable for now; the request was not processed and is safe to
    /// retry, on this server or another (`proto-spec/PROTOCOL.md` Section 10: a handler must
    /// not answer it for a request whose effects took place, even in part; it answers
    /// UNKNOWN when it cannot tell). The balancing client retries it.
    UNAVAILABLE = 14;
    /// 15: unrecoverable data loss or corruption (a checksum mismatch).
    DATA_LOSS = 15;
    /// 16: the request lacks valid credentials.
    UNAUTHENTICATED = 16;
}

impl Code {
    /// `true` for [`Code::OK`].
    #[inline]
    pub fn is_ok(self) -> bool {
        self == Code::OK
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "CODE({})", self.0),
        }
    }
}

impl From<u32> for Code {
    fn from(value: u32) -> Self {
        Code(value)
    }
}

/// A status: a [`Code`] with a human-readable UTF-8 message.
///
/// Handlers return `Err(Status)` to answer a request with a non-OK RESPONSE; the client
/// returns it as [`ClientError::Status`](crate::client::ClientError::Status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The canonical code.
    pub code: Code,
    /// The message, sent as the RESPONSE payload; may be empty.
    pub message: String,
}

macro_rules! constructors {
    ($($fn_name:ident => $code:ident),* $(,)?) => {
        impl Status {
            $(
                #[doc = concat!("A status with code [`Code::", stringify!($code), "`].")]
                pub fn $fn_name(message: impl Into<String>) -> Self {
                    Status::new(Code::$code, message)
                }
            )*
        }
    };
}

constructors! {
    cancelled => CANCELLED,
    unknown => UNKNOWN,
    invalid_argument => INVALID_ARGUMENT,
    deadline_exceeded => DEADLINE_EXCEEDED,
    not_found => NOT_FOUND,
    already_exists => ALREADY_EXISTS,
    permission_denied => PERMISSION_DENIED,
    resource_exhausted => RESOURCE_EXHAUSTED,
    failed_precondition => FAILED_PRECONDITION,
    aborted => ABORTED,
    out_of_range => OUT_OF_RANGE,
    unimplemented => UNIMPLEMENTED,
    internal => INTERNAL,
    unavailable => UNAVAILABLE,
    data_loss => DATA_LOSS,
    unauthenticated => UNAUTHENTICATED,
}

impl Status {
    /// A status with any code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Status {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for Status {}

/// The status a handler answers with when an IO operation fails, chosen by the error's kind
/// with the table of tonic's `Status::from_io_error` (the gRPC library most Rust services
/// use), so that `?` on an `io::Error` in a handler gives the code a gRPC user expects:
///
/// | `io::ErrorKind` | code |
/// | --- | --- |
/// | `NotFound` | NOT_FOUND |
/// | `AlreadyExists` | ALREADY_EXISTS |
/// | `PermissionDenied` | PERMISSION_DENIED |
/// | `InvalidInput` | INVALID_ARGUMENT |
/// | `InvalidData` | DATA_LOSS |
/// | `TimedOut` | DEADLINE_EXCEEDED |
/// | `UnexpectedEof` | OUT_OF_RANGE |
/// | `ConnectionAborted` | ABORTED |
/// | `BrokenPipe`, `WouldBlock`, `WriteZero`, `Interrupted` | INTERNAL |
/// | any other (`ConnectionRefused`, `ConnectionReset`, ... among them) | UNKNOWN |
///
/// Never UNAVAILABLE, which gRPC gives a refused or reset connection: in courier UNAVAILABLE
/// promises that the request was not processed, so that clients retry it
/// (`proto-spec/PROTOCOL.md` Section 10), and a `?` after some of the handler's effects cannot
/// promise that. A handler that failed before doing anything returns
/// `Status::unavailable(...)` itself.
///
/// The message is the error's `Display` text, which the caller sees: do not return an IO
/// error whose text names what a caller must not learn (a private path, say).
impl From<std::io::Error> for Status {
    fn from(err: std::io::Error) -> Self {
        use std::io::ErrorKind;
        let code = match err.kind() {
            ErrorKind::NotFound => Code::NOT_FOUND,
            ErrorKind::AlreadyExists => Code::ALREADY_EXISTS,
            ErrorKind::PermissionDenied => Code::PERMISSION_DENIED,
            ErrorKind::InvalidInput => Code::INVALID_ARGUMENT,
            ErrorKind::InvalidData => Code::DATA_LOSS,
            ErrorKind::TimedOut => Code::DEADLINE_EXCEEDED,
            ErrorKind::UnexpectedEof => Code::OUT_OF_RANGE,
            ErrorKind::ConnectionAborted => Code::ABORTED,
            ErrorKind::BrokenPipe
            | ErrorKind::WouldBlock
            | ErrorKind::WriteZero
            | ErrorKind::Interrupted => Code::INTERNAL,
            _ => Code::UNKNOWN,
        };
        Status::new(code, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_grpc_numbers() {
        assert_eq!(Code::ALL.len(), 17);
        for (i, code) in Code::ALL.iter().enumerate() {
            assert_eq!(code.0, i as u32);
            let name = code.name().expect("named");
            assert_eq!(Code::from_name(name), Some(*code));
        }
        assert_eq!(Code::RESOURCE_EXHAUSTED.0, 8);
        assert_eq!(Code::DATA_LOSS.0, 15);
        assert_eq!(Code(99).name(), None);
        assert_eq!(Code(99).to_string(), "CODE(99)");
    }

    #[test]
    fn io_errors_map_by_kind() {
        use std::io::{Error, ErrorKind};
        let cases = [
            (ErrorKind::NotFound, Code::NOT_FOUND),
            (ErrorKind::AlreadyExists, Code::ALREADY_EXISTS),
            (ErrorKind::PermissionDenied, Code::PERMISSION_DENIED),
            (ErrorKind::InvalidInput, Code::INVALID_ARGUMENT),
            (ErrorKind::InvalidData, Code::DATA_LOSS),
            (ErrorKind::TimedOut, Code::DEADLINE_EXCEEDED),
            (ErrorKind::UnexpectedEof, Code::OUT_OF_RANGE),
            (ErrorKind::ConnectionAborted, Code::ABORTED),
            (ErrorKind::ConnectionRefused, Code::UNKNOWN),
            (ErrorKind::ConnectionReset, Code::UNKNOWN),
            (ErrorKind::BrokenPipe, Code::INTERNAL),
            (ErrorKind::Other, Code::UNKNOWN),
        ];
        for (kind, code) in cases {
            let status = Status::from(Error::new(kind, "disk says no"));
            assert_eq!((kind, status.code), (kind, code));
            assert_eq!(status.message, "disk says no");
        }
    }
}
