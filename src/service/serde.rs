//! Serde messages: [`Cbor`] and [`Json`] make any `Serialize + DeserializeOwned` type a
//! [`Message`] (feature `serde`, on by default).
//!
//! Why CBOR, and its layout: see [`Cbor`].

use std::fmt;
use std::ops::{Deref, DerefMut};

use bytes::{Buf, BufMut, Bytes};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::message::{Message, MessageError};

macro_rules! wrapper {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name<T>(pub T);

        impl<T> $name<T> {
            /// The value, unwrapped.
            pub fn into_inner(self) -> T {
                self.0
            }
        }

        impl<T> From<T> for $name<T> {
            fn from(value: T) -> Self {
                $name(value)
            }
        }

        impl<T> Deref for $name<T> {
            type Target = T;
            fn deref(&self) -> &T {
                &self.0
            }
        }

        impl<T> DerefMut for $name<T> {
            fn deref_mut(&mut self) -> &mut T {
                &mut self.0
            }
        }

        impl<T: fmt::Debug> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

wrapper! {
    /// A serde type as a [`Message`] in CBOR (RFC 8949), the encoding `ciborium` writes.
    ///
    /// CBOR (RFC 8949) is the format to use: an IETF standard with a published specification and
    /// decoders in every common language (Python's `cbor2`, Go's `fxamacker/cbor`, JavaScript's
    /// `cbor-x`, Java's Jackson), compact and binary (a field marked `#[serde(with =
    /// "serde_bytes")]` travels as a CBOR byte string, where JSON needs base64; a plain
    /// `Vec<u8>` is an array of integers, serde's default), self-describing, so a client in another language decodes it without
    /// a schema compiler, as it would not with protobuf or bincode. The encoding is what
    /// `ciborium` writes: a struct is a map keyed by its field names (text strings), a newtype
    /// struct is its inner value, a unit enum variant is its name, another variant a one-entry
    /// map from its name to its content (serde's externally tagged form), integers in their
    /// shortest form, floats as `ciborium` chooses (the shortest that keeps the value).
    ///
    /// JSON (RFC 8259) is the second choice, for debugging with tools that print text: larger
    /// and slower, and bytes become arrays of numbers.
    ///
    /// Decoding takes the whole payload: trailing bytes after the value are an error, as is a
    /// value nested deeper than the decoder's recursion limit (`ciborium`: 256, `serde_json`:
    /// 128), so a hostile peer cannot exhaust the stack. The payload is bounded by the frame's
    /// body limit (4 MiB by default) before it is decoded, but what it decodes into is not:
    /// a byte of CBOR can stand for an empty map or string, so a 4 MiB payload decoded as
    /// `Vec<HashMap<..>>` makes about 4 million of them (some 200 MB). Give a method that takes
    /// large serde messages a lower body limit
    /// ([`ServerBuilder::max_body_len`](crate::server::ServerBuilder::max_body_len)), types
    /// without such fan-out, or `rpc(blocking)`, since an inline handler's request is decoded
    /// on the event loop.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_rpc::service::{Cbor, Message};
    /// use courier_rpc::Bytes;
    ///
    /// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    /// struct User { id: u32, name: String }
    ///
    /// let mut buf = Vec::new();
    /// Cbor(User { id: 7, name: "ada".into() }).encode(&mut buf)?;
    /// // A map of 2 entries: "id" => 7, "name" => "ada".
    /// assert_eq!(buf, b"\xa2\x62id\x07\x64name\x63ada");
    /// let back = Cbor::<User>::decode(Bytes::from(buf))?;
    /// assert_eq!(back.name, "ada");
    /// # Ok::<(), courier_rpc::service::MessageError>(())
    /// ```
    Cbor
}

wrapper! {
    /// A serde type as a [`Message`] in JSON (RFC 8259), UTF-8 with no trailing newline: for
    /// debugging with text tools; [`Cbor`] is smaller, faster and carries bytes as they are.
    Json
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Message for Cbor<T> {
    const FORMAT: &'static str = "cbor";

    fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), MessageError> {
        ciborium::into_writer(&self.0, dst.writer())
            .map_err(|err| MessageError::invalid(format!("does not encode as CBOR: {err}")))
    }

    fn decode(src: Bytes) -> Result<Self, MessageError> {
        let mut reader = src.reader();
        let value = ciborium::from_reader(&mut reader)
            .map_err(|err| MessageError::invalid(format!("not the expected CBOR: {err}")))?;
        let rest = reader.get_ref().remaining();
        if rest != 0 {
            return Err(MessageError::invalid(format!(
                "{rest} bytes follow the CBOR value"
            )));
        }
        Ok(Cbor(value))
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Message for Json<T> {
    const FORMAT: &'static str = "json";

    fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), MessageError> {
        serde_json::to_writer(dst.writer(), &self.0)
            .map_err(|err| MessageError::invalid(format!("does not encode as JSON: {err}")))
    }

    fn decode(src: Bytes) -> Result<Self, MessageError> {
        serde_json::from_slice(&src)
            .map(Json)
            .map_err(|err| MessageError::invalid(format!("not the expected JSON: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    enum Role {
        Admin,
        Guest { until: u64 },
    }

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct User {
        id: u32,
        name: String,
        roles: Vec<Role>,
        tags: BTreeMap<String, i64>,
    }

    fn user() -> User {
        User {
            id: 300,
            name: "ada".into(),
            roles: vec![Role::Admin, Role::Guest { until: 9 }],
            tags: BTreeMap::from([("x".to_string(), -1)]),
        }
    }

    fn encoded<M: Message>(m: &M) -> Vec<u8> {
        let mut buf = Vec::new();
        m.encode(&mut buf).expect("encodes");
        buf
    }

    #[test]
    fn cbor_is_rfc_8949_maps_keyed_by_field_name() {
        let bytes = encoded(&Cbor(user()));
        // Decoded independently of serde: the RFC 8949 layout byte by byte.
        let want: &[u8] = &[
            0xa4, // map(4)
            0x62, b'i', b'd', 0x19, 0x01, 0x2c, // "id": unsigned(300), 2-byte form
            0x64, b'n', b'a', b'm', b'e', 0x63, b'a', b'd', b'a', // "name": "ada"
            0x65, b'r', b'o', b'l', b'e', b's', 0x82, // "roles": array(2)
            0x65, b'A', b'd', b'm', b'i', b'n', // "Admin"
            0xa1, 0x65, b'G', b'u', b'e', b's', b't', // {"Guest":
            0xa1, 0x65, b'u', b'n', b't', b'i', b'l', 0x09, // {"until": 9}}
            0x64, b't', b'a', b'g', b's', 0xa1, 0x61, b'x', 0x20, // "tags": {"x": -1}
        ];
        assert_eq!(bytes, want);
        assert_eq!(Cbor::<User>::decode(Bytes::from(bytes)), Ok(Cbor(user())));
    }

    #[test]
    fn cbor_refuses_trailing_bytes_truncation_and_the_wrong_shape() {
        let mut bytes = encoded(&Cbor(user()));
        bytes.push(0);
        let err = Cbor::<User>::decode(Bytes::from(bytes.clone())).unwrap_err();
        assert_eq!(err.to_string(), "1 bytes follow the CBOR value");
        bytes.truncate(bytes.len() - 3);
        assert!(Cbor::<User>::decode(Bytes::from(bytes)).is_err());
        assert!(Cbor::<User>::decode(Bytes::from_static(&[0x07])).is_err());
        assert!(Cbor::<User>::decode(Bytes::new()).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        // 100,000 nested one-element arrays.
        let mut bytes = vec![0x81; 100_000];
        bytes.push(0x00);
        let err = Cbor::<serde_json::Value>::decode(Bytes::from(bytes));
        assert!(err.is_err(), "{err:?}");
        let mut json = "[".repeat(100_000);
        json.push_str(&"]".repeat(100_000));
        assert!(Json::<serde_json::Value>::decode(Bytes::from(json)).is_err());
    }

    #[test]
    fn json_round_trips_and_refuses_trailing_text() {
        let bytes = encoded(&Json(user()));
        assert_eq!(
            std::str::from_utf8(&bytes).expect("utf-8"),
            r#"{"id":300,"name":"ada","roles":["Admin",{"Guest":{"until":9}}],"tags":{"x":-1}}"#
        );
        assert_eq!(Json::<User>::decode(Bytes::from(bytes)), Ok(Json(user())));
        assert!(Json::<u32>::decode(Bytes::from_static(b"1 2")).is_err());
    }
}
