//! The bundled key-value service: GET, SET and DELETE of byte strings, in memory.
//!
//! Wire layouts: `proto-spec/SERVICES.md`, "kv". Service id 2.
//!
//! ```text
//! GET request:     key bytes (the whole payload)         OK: value bytes    NOT_FOUND: absent
//! SET request:     +-----------------+-----------+-------------------+
//!                  | key length (u16)| key bytes | value bytes (rest)|   OK: empty payload
//!                  +-----------------+-----------+-------------------+
//! DELETE request:  key bytes (the whole payload)         OK: 1 byte, 1 if a value was removed
//! ```
//!
//! Keys are 1 to [`MAX_KEY_LEN`] bytes, values 0 to [`MAX_VALUE_LEN`] bytes; a request outside
//! those limits is answered INVALID_ARGUMENT.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::{Buf, BufMut, Bytes};

use crate::proto::Status;
use crate::service::{Message, MessageError, Method, Router};

/// Service id of kv: 2.
pub const SERVICE: u16 = 2;

/// Longest key in bytes: 1 KiB.
pub const MAX_KEY_LEN: usize = 1024;

/// Longest value in bytes: 1 MiB (memcached's default item size limit, `-I 1m`).
pub const MAX_VALUE_LEN: usize = 1024 * 1024;

/// GET (method 1): the value of a key, or NOT_FOUND.
pub const GET: Method<Key, Value> = Method::new(SERVICE, 1, "kv.Get");
/// SET (method 2): stores a value under a key, replacing any.
pub const SET: Method<SetRequest, ()> = Method::new(SERVICE, 2, "kv.Set");
/// DELETE (method 3): removes a key; says whether it existed.
pub const DELETE: Method<Key, Deleted> = Method::new(SERVICE, 3, "kv.Delete");

/// A key: the whole payload of GET and DELETE requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key(pub Bytes);

impl Message for Key {
    fn encode<B: BufMut>(&self, dst: &mut B) {
        dst.put_slice(&self.0);
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
    fn encode<B: BufMut>(&self, dst: &mut B) {
        dst.put_slice(&self.0);
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

impl Message for SetRequest {
    fn encode<B: BufMut>(&self, dst: &mut B) {
        // Keys longer than u16 are refused by the server's limit; clamp rather than wrap.
        let len = u16::try_from(self.key.len()).unwrap_or(u16::MAX);
        dst.put_u16(len);
        dst.put_slice(&self.key[..usize::from(len)]);
        dst.put_slice(&self.value);
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
    fn encode<B: BufMut>(&self, dst: &mut B) {
        dst.put_u8(u8::from(self.0));
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

/// The in-memory store behind the kv service. Cheap to share: clone the `Arc`.
#[derive(Debug, Default)]
pub struct Store {
    map: RwLock<HashMap<Bytes, Bytes>>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Store::default()
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.read().get(key).cloned()
    }

    /// Stores `value` under `key`. Both are copied, so the store never pins a connection's
    /// read buffer.
    pub fn set(&self, key: &[u8], value: &[u8]) {
        self.write()
            .insert(Bytes::copy_from_slice(key), Bytes::copy_from_slice(value));
    }

    /// Removes `key`; `true` if it was there.
    pub fn delete(&self, key: &[u8]) -> bool {
        self.write().remove(key).is_some()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// `true` when the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Bytes, Bytes>> {
        // A panic while holding the lock cannot leave the map half-updated (each operation is
        // one HashMap call), so a poisoned lock is still consistent.
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Bytes, Bytes>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Registers GET, SET and DELETE over `store` on `router`.
pub fn register(router: &mut Router, store: Arc<Store>) {
    let s = Arc::clone(&store);
    router.register(GET, move |_ctx, key: Key| {
        s.get(&key.0)
            .map(Value)
            .ok_or_else(|| Status::not_found("key not found"))
    });
    let s = Arc::clone(&store);
    router.register(SET, move |_ctx, req: SetRequest| {
        s.set(&req.key, &req.value);
        Ok(())
    });
    router.register(DELETE, move |_ctx, key: Key| {
        Ok(Deleted(store.delete(&key.0)))
    });
}
