//! Codec errors: [`DecodeError`] for bytes received, [`EncodeError`] for frames refused.

use std::fmt;

use super::frame::FrameKind;
use super::metadata::MetadataError;
use super::status::Code;

/// Why received bytes are not a valid frame. Each variant is one code of
/// `proto-spec/PROTOCOL.md` §8, named by [`DecodeError::code_name`].
///
/// *Header errors* (the first seven) are fatal: the byte stream can no longer be trusted, the
/// receiver sends an ERROR frame with [`DecodeError::status`] and closes. *Frame errors*
/// ([`BodyChecksum`](DecodeError::BodyChecksum), [`InvalidMetadata`](DecodeError::InvalidMetadata),
/// [`InvalidUtf8`](DecodeError::InvalidUtf8)) are found in a body whose header was valid: the
/// decoder has consumed the whole frame and the connection may go on.
///
/// Non-exhaustive: a later protocol revision may add codes, so a `match` outside this crate
/// needs a wildcard arm.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// A byte of the magic is not `"COUR"` (checked on each byte as it arrives).
    BadMagic {
        /// Offset 0..=3 of the first wrong byte.
        offset: usize,
        /// The byte found there.
        found: u8,
    },
    /// Version byte other than 1.
    UnsupportedVersion {
        /// The version found.
        version: u8,
    },
    /// Kind byte not in 1..=6.
    UnknownKind {
        /// The kind found.
        kind: u8,
    },
    /// CRC-32 of header bytes 0..32 differs from the header CRC field.
    HeaderChecksum {
        /// The value of the header CRC field.
        expected: u32,
        /// The CRC-32 computed over bytes 0..32.
        actual: u32,
    },
    /// The body length is above the receiver's limit.
    FrameTooLarge {
        /// The frame's request id.
        request_id: u64,
        /// The body length claimed by the header.
        len: u32,
        /// The receiver's limit.
        max: u32,
    },
    /// A reserved flag bit is set, or METADATA on a kind that cannot carry it.
    InvalidFlags {
        /// The frame's request id.
        request_id: u64,
        /// The frame's kind.
        kind: FrameKind,
        /// The flags found.
        flags: u16,
    },
    /// A field that must be zero for this kind is not.
    ReservedNotZero {
        /// The frame's request id.
        request_id: u64,
        /// The frame's kind.
        kind: FrameKind,
        /// Which field: `"status word"`, `"deadline"` or `"body length"`.
        field: &'static str,
    },
    /// CRC-32 of the body differs from the body CRC field. The frame was consumed.
    BodyChecksum {
        /// The frame's request id.
        request_id: u64,
        /// The frame's kind.
        kind: FrameKind,
        /// The value of the body CRC field.
        expected: u32,
        /// The CRC-32 computed over the body.
        actual: u32,
    },
    /// The metadata section is malformed. The frame was consumed.
    InvalidMetadata {
        /// The frame's request id.
        request_id: u64,
        /// The frame's kind.
        kind: FrameKind,
        /// What is wrong with it.
        reason: MetadataError,
    },
    /// The message of a non-OK RESPONSE, a GOAWAY or an ERROR is not UTF-8. The frame was consumed.
    InvalidUtf8 {
        /// The frame's request id.
        request_id: u64,
        /// The frame's kind.
        kind: FrameKind,
    },
}

impl DecodeError {
    /// Every code name, in the order the receiver checks them.
    pub const CODE_NAMES: &'static [&'static str] = &[
        "BAD_MAGIC",
        "UNSUPPORTED_VERSION",
        "UNKNOWN_KIND",
        "HEADER_CHECKSUM",
        "FRAME_TOO_LARGE",
        "INVALID_FLAGS",
        "RESERVED_NOT_ZERO",
        "BODY_CHECKSUM",
        "INVALID_METADATA",
        "INVALID_UTF8",
    ];

    /// The index of this error's code in [`DecodeError::CODE_NAMES`] (0 for `BAD_MAGIC` ...
    /// 9 for `INVALID_UTF8`): one per variant, distinct, below `CODE_NAMES.len()`. Counters
    /// kept per kind index an array of `CODE_NAMES.len()` by it.
    pub(crate) fn code_index(&self) -> usize {
        match self {
            DecodeError::BadMagic { .. } => 0,
            DecodeError::UnsupportedVersion { .. } => 1,
            DecodeError::UnknownKind { .. } => 2,
            DecodeError::HeaderChecksum { .. } => 3,
            DecodeError::FrameTooLarge { .. } => 4,
            DecodeError::InvalidFlags { .. } => 5,
            DecodeError::ReservedNotZero { .. } => 6,
            DecodeError::BodyChecksum { .. } => 7,
            DecodeError::InvalidMetadata { .. } => 8,
            DecodeError::InvalidUtf8 { .. } => 9,
        }
    }

    /// The spec's name for this error (`"HEADER_CHECKSUM"` ...): its entry in
    /// [`DecodeError::CODE_NAMES`].
    pub fn code_name(&self) -> &'static str {
        Self::CODE_NAMES[self.code_index()]
    }

    /// `true` for header errors, after which the connection must be closed.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            DecodeError::BodyChecksum { .. }
                | DecodeError::InvalidMetadata { .. }
                | DecodeError::InvalidUtf8 { .. }
        )
    }

    /// The status a server answers this error with (`proto-spec/PROTOCOL.md` §9.3).
    pub fn status(&self) -> Code {
        match self {
            DecodeError::UnsupportedVersion { .. } => Code::UNIMPLEMENTED,
            DecodeError::HeaderChecksum { .. } | DecodeError::BodyChecksum { .. } => {
                Code::DATA_LOSS
            }
            DecodeError::FrameTooLarge { .. } => Code::RESOURCE_EXHAUSTED,
            _ => Code::INVALID_ARGUMENT,
        }
    }

    /// The request id of the offending frame when its header checksum was valid, else 0.
    pub fn request_id(&self) -> u64 {
        match self {
            DecodeError::FrameTooLarge { request_id, .. }
            | DecodeError::InvalidFlags { request_id, .. }
            | DecodeError::ReservedNotZero { request_id, .. }
            | DecodeError::BodyChecksum { request_id, .. }
            | DecodeError::InvalidMetadata { request_id, .. }
            | DecodeError::InvalidUtf8 { request_id, .. } => *request_id,
            _ => 0,
        }
    }

    /// The offending frame's kind when its header checksum was valid.
    pub fn frame_kind(&self) -> Option<FrameKind> {
        match self {
            DecodeError::InvalidFlags { kind, .. }
            | DecodeError::ReservedNotZero { kind, .. }
            | DecodeError::BodyChecksum { kind, .. }
            | DecodeError::InvalidMetadata { kind, .. }
            | DecodeError::InvalidUtf8 { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

impl DecodeError {
    /// Whether the bytes were the start of a TLS handshake (a client speaking TLS to a
    /// plaintext port): a bad magic whose first byte is 0x16 (RFC 8446 Section 5.1).
    pub fn is_tls_hello(&self) -> bool {
        matches!(
            self,
            DecodeError::BadMagic {
                offset: 0,
                found: 0x16
            }
        )
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // RFC 8446 Section 5.1: content type 22 (0x16) is a handshake record, the first
            // byte a TLS client sends.
            DecodeError::BadMagic {
                offset: 0,
                found: 0x16,
            } => f.write_str(
                "bad magic: byte 0 is 0x16, the start of a TLS handshake: this port speaks \
                 plaintext courier, not TLS",
            ),
            DecodeError::BadMagic { offset, found } => write!(
                f,
                "bad magic: byte {offset} is 0x{found:02x}, expected 0x{:02x} (not a courier peer?)",
                super::frame::MAGIC[*offset % 4]
            ),
            DecodeError::UnsupportedVersion { version } => write!(
                f,
                "unsupported protocol version {version}; this peer speaks {}",
                super::frame::VERSION
            ),
            DecodeError::UnknownKind { kind } => write!(f, "unknown frame kind {kind}"),
            DecodeError::HeaderChecksum { expected, actual } => write!(
                f,
                "header checksum mismatch: field 0x{expected:08x}, computed 0x{actual:08x}"
            ),
            DecodeError::FrameTooLarge { len, max, .. } => {
                write!(f, "frame body of {len} bytes exceeds the limit of {max} bytes")
            }
            DecodeError::InvalidFlags { kind, flags, .. } => {
                write!(f, "invalid flags 0x{flags:04x} on a {} frame", kind.name())
            }
            DecodeError::ReservedNotZero { kind, field, .. } => {
                write!(f, "{field} must be zero on a {} frame", kind.name())
            }
            DecodeError::BodyChecksum {
                kind,
                expected,
                actual,
                ..
            } => write!(
                f,
                "{} body checksum mismatch: field 0x{expected:08x}, computed 0x{actual:08x}",
                kind.name()
            ),
            DecodeError::InvalidMetadata { kind, reason, .. } => {
                write!(f, "{} frame: {reason}", kind.name())
            }
            DecodeError::InvalidUtf8 { kind, .. } => {
                write!(f, "{} frame: message is not valid UTF-8", kind.name())
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why the encoder refused to build a frame. Nothing was appended to the output buffer.
/// Non-exhaustive: a `match` outside this crate needs a wildcard arm.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The body (metadata plus payload) is longer than the encoder's limit.
    FrameTooLarge {
        /// Body length in bytes.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// The message of a non-OK RESPONSE is not UTF-8.
    InvalidUtf8,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::FrameTooLarge { len, max } => {
                write!(
                    f,
                    "frame body of {len} bytes exceeds the limit of {max} bytes"
                )
            }
            EncodeError::InvalidUtf8 => f.write_str("status message is not valid UTF-8"),
        }
    }
}

impl std::error::Error for EncodeError {}

#[cfg(test)]
impl DecodeError {
    /// One value of every variant, in the order of [`DecodeError::CODE_NAMES`] (for tests).
    ///
    /// Built by walking `next`, an exhaustive match: a new variant does not compile until it
    /// is given an arm there, which is where it joins the walk.
    pub(crate) fn one_of_each() -> Vec<DecodeError> {
        fn next(err: &DecodeError) -> Option<DecodeError> {
            let (request_id, kind) = (7, FrameKind::Request);
            Some(match err {
                DecodeError::BadMagic { .. } => DecodeError::UnsupportedVersion { version: 2 },
                DecodeError::UnsupportedVersion { .. } => DecodeError::UnknownKind { kind: 9 },
                DecodeError::UnknownKind { .. } => DecodeError::HeaderChecksum {
                    expected: 1,
                    actual: 2,
                },
                DecodeError::HeaderChecksum { .. } => DecodeError::FrameTooLarge {
                    request_id,
                    len: 10,
                    max: 5,
                },
                DecodeError::FrameTooLarge { .. } => DecodeError::InvalidFlags {
                    request_id,
                    kind,
                    flags: 0x8000,
                },
                DecodeError::InvalidFlags { .. } => DecodeError::ReservedNotZero {
                    request_id,
                    kind,
                    field: "deadline",
                },
                DecodeError::ReservedNotZero { .. } => DecodeError::BodyChecksum {
                    request_id,
                    kind,
                    expected: 1,
                    actual: 2,
                },
                DecodeError::BodyChecksum { .. } => DecodeError::InvalidMetadata {
                    request_id,
                    kind,
                    reason: MetadataError::EmptyKey,
                },
                DecodeError::InvalidMetadata { .. } => DecodeError::InvalidUtf8 {
                    request_id,
                    kind: FrameKind::Error,
                },
                DecodeError::InvalidUtf8 { .. } => return None,
            })
        }
        let mut all = vec![DecodeError::BadMagic {
            offset: 0,
            found: b'X',
        }];
        while let Some(err) = all.last().and_then(next) {
            all.push(err);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_own_code_index_below_the_number_of_names() {
        let all = DecodeError::one_of_each();
        assert_eq!(all.len(), DecodeError::CODE_NAMES.len());
        for (i, err) in all.iter().enumerate() {
            assert_eq!(err.code_index(), i, "{err:?}");
            assert_eq!(err.code_name(), DecodeError::CODE_NAMES[i]);
        }
    }
}
