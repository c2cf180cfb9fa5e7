//! The optional metadata section: bounded key/value pairs for trace ids, auth tokens and the like.
//!
//! Present only when the METADATA flag (`0x0001`) is set, on REQUEST and RESPONSE frames; a
//! frame without metadata carries no section and costs nothing (`proto-spec/PROTOCOL.md` §5,
//! "Flags and metadata").
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-------------------------------+---------------+---------------+
//! |  section length S (u16, BE)   | key len K (u8)|  key (K bytes)
//! +-------------------------------+---------------+-- ... --------+
//! |  value len V (u16, BE)        |  value (V bytes) ...          |
//! +-------------------------------+-------------------------------+
//! |  ... more entries (K, key, V, value), exactly filling S bytes |
//! +---------------------------------------------------------------+
//! ```
//!
//! Limits: `1 <= S <=` [`MAX_METADATA_LEN`]; at most [`MAX_METADATA_ENTRIES`] entries;
//! `1 <= K <= 255`; each key byte is visible ASCII (`0x21..=0x7E`); `V <= 65535`.

use std::fmt;

use byteorder::{BigEndian, ByteOrder};
use bytes::{BufMut, Bytes, BytesMut};

/// Largest metadata section, in bytes of entries (the `S` field, excluding its own 2 bytes): 16 KiB.
///
/// HTTP/2 peers commonly cap a header list at 16 KiB (`SETTINGS_MAX_HEADER_LIST_SIZE` in
/// several servers); trace ids and tokens fit with room to spare.
pub const MAX_METADATA_LEN: usize = 16 * 1024;

/// Most entries in one metadata section: 64.
pub const MAX_METADATA_ENTRIES: usize = 64;

/// Why a metadata section is malformed, or why an entry cannot be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataError {
    /// `S` is 0, above [`MAX_METADATA_LEN`], or `2 + S` is more than the body holds.
    SectionLength,
    /// An entry runs past the end of the section.
    EntryOverrun,
    /// A key of length 0.
    EmptyKey,
    /// A key longer than 255 bytes (only when building).
    KeyTooLong,
    /// A key byte outside visible ASCII `0x21..=0x7E`.
    InvalidKeyByte,
    /// A value longer than 65,535 bytes (only when building).
    ValueTooLong,
    /// More than [`MAX_METADATA_ENTRIES`] entries.
    TooManyEntries,
}

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MetadataError::SectionLength => "metadata section length out of range",
            MetadataError::EntryOverrun => "metadata entry runs past its section",
            MetadataError::EmptyKey => "metadata key is empty",
            MetadataError::KeyTooLong => "metadata key is longer than 255 bytes",
            MetadataError::InvalidKeyByte => "metadata key byte outside 0x21..=0x7E",
            MetadataError::ValueTooLong => "metadata value is longer than 65535 bytes",
            MetadataError::TooManyEntries => "more than 64 metadata entries",
        })
    }
}

impl std::error::Error for MetadataError {}

/// A validated metadata section: an ordered list of `(key, value)` byte pairs; keys may repeat.
///
/// Holds the encoded entries as one [`Bytes`] (a slice of the received frame when decoded), so
/// an empty `Metadata` allocates nothing and a decoded one copies nothing.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Encoded entries, without the 2-byte section length; always valid.
    entries: Bytes,
    count: usize,
}

impl Metadata {
    /// An empty section (the METADATA flag stays clear). Allocates nothing.
    #[inline]
    pub fn new() -> Self {
        Metadata::default()
    }

    /// Builds a section from pairs, in order.
    ///
    /// # Errors
    /// The first [`MetadataError`] an entry breaks (key empty, too long or not visible ASCII,
    /// value over 65,535 bytes, more than 64 entries, section over 16 KiB).
    pub fn from_pairs<K, V, I>(pairs: I) -> Result<Self, MetadataError>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
        I: IntoIterator<Item = (K, V)>,
    {
        let mut buf = BytesMut::new();
        let mut count = 0;
        for (key, value) in pairs {
            let (key, value) = (key.as_ref(), value.as_ref());
            check_key(key)?;
            if value.len() > usize::from(u16::MAX) {
                return Err(MetadataError::ValueTooLong);
            }
            count += 1;
            if count > MAX_METADATA_ENTRIES {
                return Err(MetadataError::TooManyEntries);
            }
            if buf.len() + 3 + key.len() + value.len() > MAX_METADATA_LEN {
                return Err(MetadataError::SectionLength);
            }
            // Both lengths were checked just above to fit their fields.
            buf.put_u8(key.len() as u8);
            buf.put_slice(key);
            buf.put_u16(value.len() as u16);
            buf.put_slice(value);
        }
        Ok(Metadata {
            entries: buf.freeze(),
            count,
        })
    }

    /// Number of entries.
    #[inline]
    pub fn len(&self) -> usize {
        self.count
    }

    /// `true` when there are no entries (the frame carries no section).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The entries in wire order, as `(key, value)`.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            rest: &self.entries,
        }
    }

    /// The value of the first entry with this key.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<&[u8]> {
        let key = key.as_ref();
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Bytes this section takes in a body: 0 when empty, else 2 + the entries.
    #[inline]
    pub fn encoded_len(&self) -> usize {
        if self.is_empty() {
            0
        } else {
            2 + self.entries.len()
        }
    }

    /// Appends the section (length prefix and entries) to `dst`; nothing when empty.
    #[inline]
    pub(crate) fn encode(&self, dst: &mut BytesMut) {
        if !self.is_empty() {
            dst.extend_from_slice(&self.section_len());
            dst.extend_from_slice(&self.entries);
        }
    }

    /// Feeds the section's bytes, as [`Metadata::encode`] writes them, to a CRC; nothing when
    /// empty.
    #[inline]
    pub(crate) fn update_crc(&self, crc: &mut crc32fast::Hasher) {
        if !self.is_empty() {
            crc.update(&self.section_len());
            crc.update(&self.entries);
        }
    }

    /// The section's 2-byte length prefix `S`, big-endian.
    #[inline]
    fn section_len(&self) -> [u8; 2] {
        // `entries.len() <= MAX_METADATA_LEN < u16::MAX` by construction.
        (self.entries.len() as u16).to_be_bytes()
    }

    /// Splits a body that starts with a metadata section into the section and the payload.
    ///
    /// Enforces `proto-spec/PROTOCOL.md` §5.3 (check 9 of §8): every limit listed in the module docs.
    pub(crate) fn parse(body: &Bytes) -> Result<(Metadata, Bytes), MetadataError> {
        if body.len() < 2 {
            return Err(MetadataError::SectionLength);
        }
        let section_len = usize::from(BigEndian::read_u16(&body[..2]));
        if section_len == 0 || section_len > MAX_METADATA_LEN || 2 + section_len > body.len() {
            return Err(MetadataError::SectionLength);
        }
        let section = &body[2..2 + section_len];
        let mut pos = 0;
        let mut count = 0;
        while pos < section.len() {
            count += 1;
            if count > MAX_METADATA_ENTRIES {
                return Err(MetadataError::TooManyEntries);
            }
            let key_len = usize::from(section[pos]);
            let key_start = pos + 1;
            let key_end = key_start + key_len;
            // Key and the value's 2-byte length must both fit in the section.
            if key_end + 2 > section.len() {
                return Err(MetadataError::EntryOverrun);
            }
            check_key(&section[key_start..key_end])?;
            let value_len = usize::from(BigEndian::read_u16(&section[key_end..key_end + 2]));
            let value_end = key_end + 2 + value_len;
            if value_end > section.len() {
                return Err(MetadataError::EntryOverrun);
            }
            pos = value_end;
        }
        let metadata = Metadata {
            entries: body.slice(2..2 + section_len),
            count,
        };
        Ok((metadata, body.slice(2 + section_len..)))
    }
}

fn check_key(key: &[u8]) -> Result<(), MetadataError> {
    if key.is_empty() {
        return Err(MetadataError::EmptyKey);
    }
    if key.len() > usize::from(u8::MAX) {
        return Err(MetadataError::KeyTooLong);
    }
    if key.iter().any(|b| !(0x21..=0x7E).contains(b)) {
        return Err(MetadataError::InvalidKeyByte);
    }
    Ok(())
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.iter()
                    .map(|(k, v)| (String::from_utf8_lossy(k), String::from_utf8_lossy(v))),
            )
            .finish()
    }
}

/// Iterator over a [`Metadata`]'s entries, from [`Metadata::iter`].
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // The entries were validated when the `Metadata` was built, so `get` never fails here;
        // a failure would end the iteration rather than panic.
        let (&key_len, rest) = self.rest.split_first()?;
        let key = rest.get(..usize::from(key_len))?;
        let rest = &rest[key.len()..];
        let value_len = usize::from(BigEndian::read_u16(rest.get(..2)?));
        let value = rest.get(2..2 + value_len)?;
        self.rest = &rest[2 + value_len..];
        Some((key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_parse_keeps_order_and_duplicates() {
        let md = Metadata::from_pairs([("trace-id", &b"abc"[..]), ("k", b""), ("k", b"2")])
            .expect("valid");
        assert_eq!(md.len(), 3);
        let mut body = BytesMut::new();
        md.encode(&mut body);
        body.put_slice(b"payload");
        let (parsed, payload) = Metadata::parse(&body.freeze()).expect("parses");
        assert_eq!(parsed, md);
        assert_eq!(&payload[..], b"payload");
        assert_eq!(parsed.get("k"), Some(&b""[..]));
        let pairs: Vec<_> = parsed.iter().collect();
        assert_eq!(pairs[2], (&b"k"[..], &b"2"[..]));
    }

    #[test]
    fn building_rejects_bad_keys_and_too_many_entries() {
        assert_eq!(
            Metadata::from_pairs([("", "v")]),
            Err(MetadataError::EmptyKey)
        );
        assert_eq!(
            Metadata::from_pairs([("a b", "v")]),
            Err(MetadataError::InvalidKeyByte)
        );
        let many: Vec<_> = (0..65).map(|i| (format!("k{i}"), "v")).collect();
        assert_eq!(
            Metadata::from_pairs(many),
            Err(MetadataError::TooManyEntries)
        );
    }
}
