//! [`FrameCodec`]: the frame codec as tokio-util's `Decoder` and `Encoder` (feature `tokio`).

use std::fmt;
use std::io;

use bytes::BytesMut;

use super::{DecodeError, Decoder, EncodeError, Encoder, Frame, DEFAULT_MAX_BODY_LEN};

/// The frame [`Decoder`] and [`Encoder`] as one `tokio_util::codec::Decoder` (items:
/// [`Frame`]) and `tokio_util::codec::Encoder<Frame>`, for
/// `tokio_util::codec::Framed`, `FramedRead` and `FramedWrite` over any tokio
/// `AsyncRead`/`AsyncWrite`: a proxy, a test peer, a transport of one's own. Feature `tokio`.
///
/// Both directions check the same body limit, `max_body_len` bytes (default 4 MiB,
/// [`DEFAULT_MAX_BODY_LEN`], as the server's and the clients'). It speaks frames only: the
/// protocol around them (request ids, GOAWAY, deadlines, TLS) is the caller's, or
/// [`ClientCore`](crate::client::ClientCore)'s.
///
/// A frame that fails its checks is returned as [`CodecError::Decode`]. tokio-util's
/// `FramedRead` ends its stream after the first error, fatal or not; a caller that wants to
/// go on past a non-fatal one ([`DecodeError::is_fatal`], say a RESPONSE whose body fails its
/// checksum) uses [`Decoder::decode`] on its own buffer instead.
///
/// # Examples
///
/// ```no_run
/// use std::future::poll_fn;
/// use std::pin::Pin;
/// use courier_rpc::proto::{Frame, FrameCodec};
/// use futures_core::Stream;
/// use futures_sink::Sink;
/// use tokio_util::codec::Framed;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let socket = tokio::net::TcpStream::connect("127.0.0.1:7879").await?;
/// let mut frames = Framed::new(socket, FrameCodec::default());
/// // A PING, then its PONG (futures' SinkExt::send and StreamExt::next do the same).
/// poll_fn(|cx| Pin::new(&mut frames).poll_ready(cx)).await?;
/// Pin::new(&mut frames).start_send(Frame::Ping(1))?;
/// poll_fn(|cx| Pin::new(&mut frames).poll_flush(cx)).await?;
/// let reply = poll_fn(|cx| Pin::new(&mut frames).poll_next(cx)).await;
/// assert!(matches!(reply, Some(Ok(Frame::Pong(1)))));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct FrameCodec {
    decoder: Decoder,
    encoder: Encoder,
}

impl Default for FrameCodec {
    /// A codec with the default body limit, 4 MiB.
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_BODY_LEN)
    }
}

impl FrameCodec {
    /// A codec that sends and accepts bodies of at most `max_body_len` bytes.
    pub fn new(max_body_len: u32) -> Self {
        FrameCodec {
            decoder: Decoder::new(max_body_len),
            encoder: Encoder::new(max_body_len),
        }
    }

    /// The body limit, in bytes.
    pub fn max_body_len(&self) -> u32 {
        self.decoder.max_body_len()
    }
}

/// Why a [`FrameCodec`] failed.
///
/// Marked `#[non_exhaustive]`: a `match` needs a wildcard arm.
#[derive(Debug)]
#[non_exhaustive]
pub enum CodecError {
    /// The transport failed, or ended in the middle of a frame (tokio-util's
    /// "bytes remaining on stream").
    Io(io::Error),
    /// The bytes received are not a valid frame (see [`DecodeError`]).
    Decode(DecodeError),
    /// A frame to send was refused: its body is over the limit. Nothing was written.
    Encode(EncodeError),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Io(e) => write!(f, "io error: {e}"),
            CodecError::Decode(e) => write!(f, "bad frame: {e}"),
            CodecError::Encode(e) => write!(f, "frame not sent: {e}"),
        }
    }
}

/// `Display` already includes the inner error, so `source` is not used to repeat it.
impl std::error::Error for CodecError {}

impl From<io::Error> for CodecError {
    fn from(err: io::Error) -> Self {
        CodecError::Io(err)
    }
}

impl tokio_util::codec::Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        self.decoder.decode(src).map_err(CodecError::Decode)
    }
}

impl tokio_util::codec::Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encoder.encode(&frame, dst).map_err(CodecError::Encode)
    }
}
