//! [`ClientError`] and [`ProtocolError`]: why a call failed; and the client's own records of
//! why a connection or a request can go no further.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::proto::{Code, DecodeError, EncodeError, FrameKind, Status};
use crate::service::MessageError;

/// Why a call failed. Remote statuses, timeouts, protocol errors and IO errors are kept apart.
///
/// Marked `#[non_exhaustive]`: a `match` needs a wildcard arm, so that variants can be added.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered this request with a non-OK status (and its message). The
    /// connection is fine. UNAVAILABLE after a GOAWAY means the request was not processed
    /// and is safe to retry: sending it again goes out on a new connection (see
    /// [`Client`](super::Client)).
    Status(Status),
    /// The server sent an ERROR frame (a connection-level error) and closed the connection.
    Connection(Status),
    /// No response within the call's deadline or the read timeout. The request may still be
    /// processed; a late response is discarded. Also a connection (with its TLS handshake and
    /// AUTH, if any) not made within the connect timeout.
    Timeout,
    /// The server's bytes broke the protocol, or a response message did not decode.
    Protocol(ProtocolError),
    /// The request was refused before sending (too large).
    Encode(EncodeError),
    /// The request message has no valid encoding ([`Message::encode`](crate::service::Message::encode)
    /// failed); nothing was sent and the connection is fine.
    Message(MessageError),
    /// The connection is closed: by the server without a GOAWAY first, or after an earlier
    /// fatal error. Also a request the server still owed after its GOAWAY whose response
    /// never came before the connection ended. A request sent before the close and not
    /// answered has an unknown outcome: the server may have processed it
    /// (`proto-spec/PROTOCOL.md` Section 15).
    Closed,
    /// A socket error.
    Io(io::Error),
    /// TLS failed ([`ClientBuilder::tls`](super::ClientBuilder::tls)). In the handshake
    /// (returned by connect): the server's certificate does not chain to a trusted root, has
    /// expired, or does not carry the server name; no protocol version or ALPN protocol in
    /// common; the server negotiated an ALPN protocol other than `courier/1`. After it: an
    /// alert from the server (in TLS 1.3 a server that refuses the client's certificate says
    /// so only after the client has finished its handshake, so that error arrives with the
    /// first answer: AUTH's when a token is set, else the first call's), or a record that
    /// does not decrypt. The connection is then unusable.
    Tls(rustls::Error),
    /// A TLS client ([`ClientBuilder::tls`](super::ClientBuilder::tls)) met a server that
    /// speaks plaintext courier on that port: its first bytes were the courier magic "COUR",
    /// not a TLS record. Returned by connect.
    NotTls {
        /// The server's address.
        addr: SocketAddr,
        /// The status of the ERROR frame the server sent, if it decoded.
        status: Option<Status>,
    },
    /// The server refused the token of [`ClientBuilder::token`](super::ClientBuilder::token):
    /// its answer to AUTH (UNAUTHENTICATED for a token it does not know, FAILED_PRECONDITION
    /// when it has no authentication). Returned by connect, and by the request that
    /// reconnected after a GOAWAY.
    Auth(Status),
}

impl ClientError {
    /// The status for remote errors ([`ClientError::Status`], [`ClientError::Connection`],
    /// [`ClientError::Auth`]).
    pub fn status(&self) -> Option<&Status> {
        match self {
            ClientError::Status(s) | ClientError::Connection(s) | ClientError::Auth(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Status(s) => write!(f, "server answered {s}"),
            ClientError::Connection(s) => write!(f, "server closed the connection: {s}"),
            ClientError::Timeout => f.write_str("timed out waiting for the response"),
            ClientError::Protocol(e) => write!(f, "protocol error: {e}"),
            ClientError::Encode(e) => write!(f, "request not sent: {e}"),
            ClientError::Message(e) => write!(f, "request not sent: it does not encode: {e}"),
            ClientError::Closed => f.write_str("connection closed"),
            ClientError::Io(e) => write!(f, "io error: {e}"),
            ClientError::Tls(e) => write!(f, "TLS error: {e}"),
            ClientError::NotTls { addr, status } => {
                write!(
                    f,
                    "the server at {addr} speaks plaintext courier, not TLS, on that port"
                )?;
                match status {
                    Some(status) => write!(f, " (it answered {status})"),
                    None => Ok(()),
                }
            }
            ClientError::Auth(s) => write!(f, "authentication refused: {s}"),
        }
    }
}

/// `Display` already includes the inner error, so `source` is not used to repeat it.
impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout,
            _ => ClientError::Io(err),
        }
    }
}

/// How the server's bytes broke the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The bytes did not decode as a frame.
    Decode(DecodeError),
    /// An OK response's message did not decode as the method's response type.
    Message(MessageError),
    /// A frame a client never receives (REQUEST).
    UnexpectedFrame(FrameKind),
    /// The server sent PINGs faster than their PONGs could be written:
    /// [`MAX_QUEUED_PONGS`](super::core::MAX_QUEUED_PONGS) were queued and not yet written
    /// when one more came.
    PingFlood {
        /// The PONGs queued and not yet written.
        queued: usize,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Decode(e) => write!(f, "{e}"),
            ProtocolError::Message(e) => write!(f, "response message: {e}"),
            ProtocolError::UnexpectedFrame(k) => write!(f, "unexpected {} frame", k.name()),
            ProtocolError::PingFlood { queued } => write!(
                f,
                "PING flood: {queued} PONGs queued and not yet written when another PING came"
            ),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Why the connection can no longer be used.
#[derive(Clone, Debug)]
pub(super) enum Broken {
    Closed,
    Connection(Status),
    Protocol(ProtocolError),
    Tls(rustls::Error),
}

impl Broken {
    pub(super) fn to_error(&self) -> ClientError {
        match self {
            Broken::Closed => ClientError::Closed,
            Broken::Connection(s) => ClientError::Connection(s.clone()),
            Broken::Protocol(e) => ClientError::Protocol(e.clone()),
            Broken::Tls(e) => ClientError::Tls(e.clone()),
        }
    }
}

/// The status of a request after a GOAWAY's last request id.
pub(super) fn draining() -> Status {
    Status::new(
        Code::UNAVAILABLE,
        "server is draining (GOAWAY): request not processed, retry on a new connection",
    )
}
