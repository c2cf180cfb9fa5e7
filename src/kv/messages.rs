//! The kv service's messages ([`Key`], [`Value`], [`SetRequest`], [`Deleted`]) and their
//! limits ([`MAX_KEY_LEN`], [`MAX_VALUE_LEN`]); wire layouts in the [kv module docs](super).
//!
//! The bottom of the kv layers: it uses nothing else of `kv`. The log's record format
//! ([`log::record`](super::log::record)) takes its limits from here, and the service
//! ([`register`](super::register)) its request and response types.

use bytes::{Buf, BufMut, Bytes};

use crate::service::{Message, MessageError};

/// Longest key in bytes: 1 KiB.
pub const MAX_KEY_LEN: usize = 1024;

/// Longest value in bytes: 1 MiB (memcached's default item size limit, `-I 1m`).
pub const MAX_VALUE_LEN: usize = 1024 * 1024;

/// A key: the whole payload of GET and DELETE requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key(pub Bytes);

impl Message for Key {
    const FORMAT: &'static str = "bytes";

    fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), MessageError> {
        dst.put_slice(&self.0);
        Ok(())
    }
    fn decode(src: Bytes) -> Result<Self, MessageError> {
        check_key(&src)?;
        Ok(Key(src))
    }
}

/// A value: the payload of an OK GET response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value(pub Bytes);

impl Message for Value {
    const FORMAT: &'static str = "bytes";

    fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), MessageError> {
        dst.put_slice(&self.0);
        Ok(())
    }
    fn decode(src: Bytes) -> Result<Self, MessageError> {
        Ok(Value(src))
    }
}

/// A SET request: `u16` key length, key, value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetRequest {
    /// The key, 1 to [`MAX_KEY_LEN`] bytes.
    pub key: Bytes,
    /// The value, 0 to [`MAX_VALUE_LEN`] bytes.
    pub value: Bytes,
}

impl SetRequest {
    /// The key of an encoded SET request, found as [`Message::decode`] finds it (the `u16`
    /// length, then that many bytes) but without any check: `None` when `payload` is too short
    /// for the length or the key it claims. For the server's prefetch hint, which sees
    /// payloads before they are checked.
    pub(in crate::kv) fn peek_key(payload: &[u8]) -> Option<&[u8]> {
        let len = u16::from_be_bytes([*payload.first()?, *payload.get(1)?]);
        payload.get(2..2 + usize::from(len))
    }
}

impl Message for SetRequest {
    fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), MessageError> {
        // The server refuses keys over MAX_KEY_LEN; one over the u16 prefix cannot be sent.
        let len = u16::try_from(self.key.len()).map_err(|_| {
            MessageError::invalid(format!(
                "key is {} bytes; its u16 length prefix counts at most {}",
                self.key.len(),
                u16::MAX
            ))
        })?;
        dst.put_u16(len);
        dst.put_slice(&self.key);
        dst.put_slice(&self.value);
        Ok(())
    }
    fn decode(mut src: Bytes) -> Result<Self, MessageError> {
        if src.len() < 2 {
            return Err(MessageError::length(2, src.len()));
        }
        let key_len = usize::from(src.get_u16());
        if src.len() < key_len {
            return Err(MessageError::invalid(format!(
                "key length {key_len} runs past the {} bytes that follow",
                src.len()
            )));
        }
        let key = src.split_to(key_len);
        check_key(&key)?;
        if src.len() > MAX_VALUE_LEN {
            return Err(MessageError::invalid(format!(
                "value is {} bytes; the limit is {MAX_VALUE_LEN}",
                src.len()
            )));
        }
        Ok(SetRequest { key, value: src })
    }
}

/// A DELETE response: whether a value was removed (1 byte, 1 or 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deleted(pub bool);

impl Message for Deleted {
    const FORMAT: &'static str = "bool";

    fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), MessageError> {
        dst.put_u8(u8::from(self.0));
        Ok(())
    }
    fn decode(src: Bytes) -> Result<Self, MessageError> {
        match src[..] {
            [0] => Ok(Deleted(false)),
            [1] => Ok(Deleted(true)),
            [_] => Err(MessageError::invalid("deleted flag must be 0 or 1")),
            _ => Err(MessageError::length(1, src.len())),
        }
    }
}

fn check_key(key: &[u8]) -> Result<(), MessageError> {
    if key.is_empty() {
        return Err(MessageError::invalid("key is empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(MessageError::invalid(format!(
            "key is {} bytes; the limit is {MAX_KEY_LEN}",
            key.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_key_finds_the_key_decode_finds_and_nothing_past_the_payload() {
        let request = SetRequest {
            key: Bytes::from_static(b"key:7"),
            value: Bytes::from_static(b"value"),
        };
        let mut payload = Vec::new();
        request.encode(&mut payload).expect("encodes");
        let decoded = SetRequest::decode(Bytes::from(payload.clone())).expect("decodes");
        assert_eq!(SetRequest::peek_key(&payload), Some(&decoded.key[..]));
        // Cut inside the key, inside the length, and empty: no key.
        assert_eq!(SetRequest::peek_key(&payload[..6]), None);
        assert_eq!(SetRequest::peek_key(&payload[..1]), None);
        assert_eq!(SetRequest::peek_key(&[]), None);
        // A claimed length of 65,535 over a few bytes: no key, nothing read past them.
        assert_eq!(SetRequest::peek_key(&[0xFF, 0xFF, b'k']), None);
    }
}
