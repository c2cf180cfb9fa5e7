//! The record format of the kv log (sans-IO): encoding records and scanning a log's bytes.
//!
//! The log is an append-only file of SET and DELETE operations. This module only turns
//! operations into bytes and bytes back into operations; opening, appending, syncing and
//! truncating the file are the caller's. All integers are big-endian. Both checksums are
//! CRC-32 with the IEEE 802.3 polynomial (what `crc32fast` computes), as on the wire.
//!
//! It uses nothing of the log around it, only the key and value limits of the kv messages
//! ([`MAX_KEY_LEN`], [`MAX_VALUE_LEN`]); the log ([`super`]) uses it.
//!
//! # File layout
//!
//! The file starts with an 8-byte header, [`FILE_HEADER`]: ASCII `CKVLOG` then the version,
//! a `u16` equal to 1. Records follow it back to back, each [`RECORD_HEADER_LEN`] bytes of
//! header and then its body:
//!
//! ```text
//!  0          4          8          12
//!  +----------+----------+----------+------------------------------------+
//!  | body len | body CRC | head CRC | body (body len bytes)              |
//!  |   u32    |   u32    |   u32    |                                    |
//!  +----------+----------+----------+------------------------------------+
//!  head CRC = CRC-32 of bytes 0..8 (body len and body CRC), so a damaged length is caught
//!  before it is trusted. body CRC = CRC-32 of the body.
//!
//!  body:
//!  +--------+---------------+-----------+---------------------+
//!  | op u8  | key len (u16) | key bytes | value bytes (rest)  |
//!  +--------+---------------+-----------+---------------------+
//!  op 1 = SET (value = the rest, 0..=MAX_VALUE_LEN bytes); op 2 = DELETE (no value bytes).
//!  key length 1..=MAX_KEY_LEN (1024). Value up to MAX_VALUE_LEN (1 MiB).
//! ```
//!
//! A body is therefore 4 to [`MAX_BODY_LEN`] bytes, and a record 16 to
//! `RECORD_HEADER_LEN + MAX_BODY_LEN` bytes. [`set_len`] and [`delete_len`] give a record's
//! exact size.
//!
//! # Recovery rules
//!
//! [`scan`] reads a whole log and says where its valid part ends ([`Scan::valid_len`]) and
//! why ([`End`]). A *torn tail* is what a crash during an append leaves: the caller truncates
//! the file to `valid_len` and goes on. *Corruption* is damage that a crash cannot explain;
//! the caller must not truncate it away silently.
//!
//! - Empty input (0 bytes): [`End::Clean`], `valid_len` 0, no records (the caller writes the
//!   file header).
//! - 1 to 7 bytes that are a prefix of [`FILE_HEADER`]: [`End::TornTail`] at offset 0 (a crash
//!   while creating the file). 1 to 7 bytes that are not a prefix, or 8 bytes or more whose
//!   first 8 are not `FILE_HEADER` (another file, or another version): [`End::Corrupt`] at
//!   offset 0, [`Damage::BadFileHeader`].
//! - After the valid records, at offset `o`, any damage (fewer than 12 bytes left, head CRC
//!   mismatch, body running past the end, body CRC mismatch) is a **torn tail** if no valid
//!   record starts at any later offset, and **corrupt** (damage before the tail) otherwise.
//!   "A valid record starts at `p`" means: 12 header bytes present, head CRC matches, body len
//!   at most [`MAX_BODY_LEN`], the whole body present, body CRC matches, and the body decodes
//!   (op 1 or 2, key length 1 to [`MAX_KEY_LEN`] within the body, DELETE has no value bytes).
//! - Where the search for a later record starts: at `o + 1` when the record's header is short
//!   or its head CRC does not match (its length cannot be trusted); after the record's claimed
//!   end, `o + 12 + body len`, when the head CRC matches (the length is then trusted, so a SET
//!   whose value happens to hold an encoded record cannot turn a torn write into corruption).
//!   A body running past the end of the input is therefore always a torn tail.
//! - A record whose CRCs match but whose body does not decode (unknown op, key length 0 or
//!   over [`MAX_KEY_LEN`] or past the body, DELETE with value bytes, body too short for the op
//!   and key length), or whose head CRC matches but whose body len is over [`MAX_BODY_LEN`],
//!   is corrupt at its offset whatever follows: it was written like that, not torn.
//! - `visit` is called only for the records before the stop offset. `valid_len` is the stop
//!   offset, or the input's length when the scan ends [`End::Clean`].
//!
//! A clean scan reads each byte once. The search for a later record only runs when damage is
//! found; at each offset it checks the 8-byte head CRC first, so it is linear in practice
//! (each candidate whose head CRC matches costs at most one body of [`MAX_BODY_LEN`] bytes).
//! Scanning never allocates and never panics.
//!
//! # Examples
//!
//! ```
//! use courier_rpc::kv::log::record::{self, End, Op, FILE_HEADER};
//!
//! let mut log = FILE_HEADER.to_vec();
//! record::encode_set(&mut log, b"k", b"v");
//! record::encode_delete(&mut log, b"k");
//! log.extend_from_slice(&[0x00, 0x00, 0x01]); // a crash during the next append
//!
//! let mut ops = Vec::new();
//! let scan = record::scan(&log, |offset, op| ops.push((offset, op)));
//! assert_eq!(
//!     ops,
//!     [
//!         (8, Op::Set { key: b"k", value: b"v" }),
//!         (8 + record::set_len(1, 1) as u64, Op::Delete { key: b"k" }),
//!     ]
//! );
//! assert_eq!(scan.records, 2);
//! assert_eq!(scan.valid_len, log.len() as u64 - 3); // truncate the file to this
//! assert!(matches!(scan.end, End::TornTail { .. }));
//! ```

use std::fmt;

use bytes::BufMut;
use crc32fast::Hasher;

use crate::kv::{MAX_KEY_LEN, MAX_VALUE_LEN};

/// The 8 bytes every log file starts with: ASCII `CKVLOG` (43 4B 56 4C 4F 47), then the format
/// version as a big-endian `u16`, 1.
pub const FILE_HEADER: [u8; 8] = *b"CKVLOG\x00\x01";

/// Bytes of a record's header: body len (`u32`), body CRC (`u32`), head CRC (`u32`).
pub const RECORD_HEADER_LEN: usize = 12;

/// Longest body in bytes: op (1) + key length (2) + [`MAX_KEY_LEN`] + [`MAX_VALUE_LEN`].
/// A record whose head CRC matches but whose body len is larger is [`Damage::BodyTooLong`].
pub const MAX_BODY_LEN: usize = 1 + 2 + MAX_KEY_LEN + MAX_VALUE_LEN;

/// Op byte of a SET record.
const OP_SET: u8 = 1;
/// Op byte of a DELETE record.
const OP_DELETE: u8 = 2;
/// Bytes of a body before the key: op (1) and key length (2).
const BODY_PREFIX_LEN: usize = 3;
/// Shortest valid record: a header and a body with a 1-byte key and no value.
const MIN_RECORD_LEN: usize = RECORD_HEADER_LEN + BODY_PREFIX_LEN + 1;

/// One operation of the log, borrowing its key and value from the scanned bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// SET (op 1): `key` (1 to [`MAX_KEY_LEN`] bytes) now holds `value` (0 to
    /// [`MAX_VALUE_LEN`] bytes).
    Set {
        /// The key, 1 to [`MAX_KEY_LEN`] bytes.
        key: &'a [u8],
        /// The value, 0 to [`MAX_VALUE_LEN`] bytes.
        value: &'a [u8],
    },
    /// DELETE (op 2): `key` (1 to [`MAX_KEY_LEN`] bytes) holds nothing any more.
    Delete {
        /// The key, 1 to [`MAX_KEY_LEN`] bytes.
        key: &'a [u8],
    },
}

impl<'a> Op<'a> {
    /// The key the operation writes.
    pub fn key(&self) -> &'a [u8] {
        match self {
            Op::Set { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// Appends one SET record for `key` and `value` to `out`: [`set_len`]`(key.len(), value.len())`
/// bytes.
///
/// The caller keeps `key` to 1..=[`MAX_KEY_LEN`] bytes and `value` to at most
/// [`MAX_VALUE_LEN`] bytes, as the kv service does; a record outside those limits is encoded
/// as given (a key longer than `u16::MAX` bytes is cut to `u16::MAX`, and a value that would
/// take the body past `u32::MAX` bytes is cut to fit), and [`scan`] reports it as
/// [`End::Corrupt`].
///
/// # Panics
///
/// If `out` cannot grow to hold the record (a `&mut [u8]` that is too short), as
/// [`BufMut::put_slice`] does. A `Vec<u8>` or a `BytesMut` grows.
pub fn encode_set<B: BufMut>(out: &mut B, key: &[u8], value: &[u8]) {
    encode(out, OP_SET, key, value);
}

/// Appends one DELETE record for `key` to `out`: [`delete_len`]`(key.len())` bytes.
///
/// The caller keeps `key` to 1..=[`MAX_KEY_LEN`] bytes; a longer key is cut to `u16::MAX`
/// bytes, and [`scan`] reports the record as [`End::Corrupt`].
///
/// # Panics
///
/// If `out` cannot grow to hold the record (a `&mut [u8]` that is too short), as
/// [`BufMut::put_slice`] does. A `Vec<u8>` or a `BytesMut` grows.
pub fn encode_delete<B: BufMut>(out: &mut B, key: &[u8]) {
    encode(out, OP_DELETE, key, &[]);
}

/// Bytes that one SET record of a `key_len`-byte key and a `value_len`-byte value takes,
/// header included: `12 + 3 + key_len + value_len`, with `key_len` cut to `u16::MAX` as
/// [`encode_set`] cuts the key (saturating at `usize::MAX`).
pub fn set_len(key_len: usize, value_len: usize) -> usize {
    delete_len(key_len).saturating_add(value_len)
}

/// Bytes that one DELETE record of a `key_len`-byte key takes, header included:
/// `12 + 3 + key_len`, with `key_len` cut to `u16::MAX` as [`encode_delete`] cuts the key.
pub fn delete_len(key_len: usize) -> usize {
    RECORD_HEADER_LEN + BODY_PREFIX_LEN + key_len.min(usize::from(u16::MAX))
}

fn encode<B: BufMut>(out: &mut B, op: u8, key: &[u8], value: &[u8]) {
    let key_len = u16::try_from(key.len()).unwrap_or(u16::MAX);
    let key = &key[..usize::from(key_len)];
    // Only a value of about 4 GiB reaches this cut; the kv service's limit is 1 MiB.
    let room = u32::MAX as usize - BODY_PREFIX_LEN - key.len();
    let value = &value[..value.len().min(room)];
    let body_len = BODY_PREFIX_LEN + key.len() + value.len();
    let body_len = u32::try_from(body_len).unwrap_or(u32::MAX);

    let mut body_crc = Hasher::new();
    body_crc.update(&[op]);
    body_crc.update(&key_len.to_be_bytes());
    body_crc.update(key);
    body_crc.update(value);
    let mut head = [0; 8];
    head[..4].copy_from_slice(&body_len.to_be_bytes());
    head[4..].copy_from_slice(&body_crc.finalize().to_be_bytes());

    out.put_slice(&head);
    out.put_u32(crc32fast::hash(&head));
    out.put_u8(op);
    out.put_u16(key_len);
    out.put_slice(key);
    out.put_slice(value);
}

/// What [`scan`] found: how many records, how many bytes are valid, and why it stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scan {
    /// Valid records before the stop, each passed to `visit`.
    pub records: u64,
    /// Bytes of file header and valid records: the stop offset, or the input's length when
    /// [`end`](Scan::end) is [`End::Clean`]. After a [`End::TornTail`], the length to truncate
    /// the file to. 0 for an empty input or a damaged file header.
    pub valid_len: u64,
    /// Why the scan stopped.
    pub end: End,
}

/// Why [`scan`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Every byte belongs to the file header or a valid record (or the input is empty).
    Clean,
    /// Damage at `offset` (bytes from the start of the file) and no valid record after it:
    /// what a crash during an append or during the file's creation leaves. `offset` equals
    /// [`Scan::valid_len`].
    TornTail {
        /// Bytes from the start of the file to the damaged record (0: the file header).
        offset: u64,
        /// What is wrong there.
        damage: Damage,
    },
    /// Damage at `offset` that a crash cannot explain: a valid record follows it, or it was
    /// written like that (its checksums match but its contents break the format), or the file
    /// header is not [`FILE_HEADER`]. `offset` equals [`Scan::valid_len`].
    Corrupt {
        /// Bytes from the start of the file to the damaged record (0: the file header).
        offset: u64,
        /// What is wrong there.
        damage: Damage,
    },
}

/// What is wrong at the offset where [`scan`] stopped.
///
/// The first group can come from a torn write ([`End::TornTail`] unless a valid record
/// follows); the file header and the format checks after matching checksums always mean
/// [`End::Corrupt`].
///
/// Marked `#[non_exhaustive]`: a `match` needs a wildcard arm, so that variants can be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Damage {
    /// 1 to 7 bytes, a prefix of [`FILE_HEADER`]: the file was being created.
    ShortFileHeader,
    /// The first 8 bytes (or all of a shorter input) are not [`FILE_HEADER`] or a prefix of it.
    BadFileHeader,
    /// Fewer than [`RECORD_HEADER_LEN`] bytes left.
    ShortHeader,
    /// The head CRC does not match the record's first 8 bytes.
    HeaderCrc,
    /// The body runs past the end of the input: `needed` bytes of body (its body len),
    /// `available` present.
    ShortBody {
        /// The record's body len, in bytes.
        needed: u32,
        /// Bytes present after the record's header, fewer than `needed`.
        available: u32,
    },
    /// The body CRC does not match the body.
    BodyCrc,
    /// Checksums match but the body len (the value, in bytes) is over [`MAX_BODY_LEN`].
    BodyTooLong(u32),
    /// Checksums match but the body (of this many bytes) is shorter than the op byte and the
    /// key length.
    BodyTooShort(u32),
    /// Checksums match but the op byte (the value) is neither 1 (SET) nor 2 (DELETE).
    BadOp(u8),
    /// Checksums match but the key length (the value, in bytes) is 0, over [`MAX_KEY_LEN`],
    /// or runs past the end of the body.
    BadKeyLength(u16),
    /// Checksums match but the DELETE has value bytes (this many).
    DeleteWithValue(u32),
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Damage::ShortFileHeader => f.write_str("file header cut short"),
            Damage::BadFileHeader => f.write_str("not a kv log file header (CKVLOG, version 1)"),
            Damage::ShortHeader => f.write_str("record header cut short"),
            Damage::HeaderCrc => f.write_str("bad CRC of record header"),
            Damage::ShortBody { needed, available } => write!(
                f,
                "record body cut short: {available} of {needed} bytes present"
            ),
            Damage::BodyCrc => f.write_str("bad CRC of record body"),
            Damage::BodyTooLong(len) => write!(
                f,
                "record body of {len} bytes is over the limit of {MAX_BODY_LEN}"
            ),
            Damage::BodyTooShort(len) => write!(
                f,
                "record body of {len} bytes is too short for an op and a key length"
            ),
            Damage::BadOp(op) => write!(f, "unknown record op {op}"),
            Damage::BadKeyLength(len) => write!(
                f,
                "bad key length {len} (must be 1 to {MAX_KEY_LEN} and within the body)"
            ),
            Damage::DeleteWithValue(len) => write!(f, "DELETE record with a value ({len} bytes)"),
        }
    }
}

impl std::error::Error for Damage {}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Clean => f.write_str("clean end"),
            End::TornTail { offset, damage } => write!(f, "torn tail at offset {offset}: {damage}"),
            End::Corrupt { offset, damage } => write!(f, "corrupt at offset {offset}: {damage}"),
        }
    }
}

/// Scans a whole log file's bytes, calling `visit(offset, op)` for each valid record in order,
/// and says where and why it stopped.
///
/// `log` is the file from offset 0, file header included. `offset` is the record's first byte,
/// in bytes from the start of the file; `op` borrows from `log`. The module docs give the
/// recovery rules: [`End::Clean`] when every byte is valid, [`End::TornTail`] when the damage
/// can be a crash's (truncate the file to [`Scan::valid_len`]), [`End::Corrupt`] otherwise.
/// `visit` sees exactly the records before [`Scan::valid_len`].
///
/// Never panics and never allocates; a clean scan reads each byte once.
pub fn scan<'a>(log: &'a [u8], mut visit: impl FnMut(u64, Op<'a>)) -> Scan {
    let stop = |offset: usize, records: u64, end: End| Scan {
        records,
        valid_len: offset as u64,
        end,
    };
    if log.is_empty() {
        return stop(0, 0, End::Clean);
    }
    if log.len() < FILE_HEADER.len() {
        let damage = if FILE_HEADER.starts_with(log) {
            End::TornTail {
                offset: 0,
                damage: Damage::ShortFileHeader,
            }
        } else {
            End::Corrupt {
                offset: 0,
                damage: Damage::BadFileHeader,
            }
        };
        return stop(0, 0, damage);
    }
    if log[..FILE_HEADER.len()] != FILE_HEADER {
        let damage = End::Corrupt {
            offset: 0,
            damage: Damage::BadFileHeader,
        };
        return stop(0, 0, damage);
    }

    // One CPU feature probe per scan; each checksum clones it.
    let crc = Hasher::new();
    let mut offset = FILE_HEADER.len();
    let mut records = 0;
    while offset < log.len() {
        match record(&crc, log, offset) {
            Ok((op, next)) => {
                visit(offset as u64, op);
                records += 1;
                offset = next;
            }
            Err(Bad { damage, search }) => {
                let corrupt = match search {
                    None => true,
                    Some(from) => valid_record_from(&crc, log, from),
                };
                let offset64 = offset as u64;
                let end = if corrupt {
                    End::Corrupt {
                        offset: offset64,
                        damage,
                    }
                } else {
                    End::TornTail {
                        offset: offset64,
                        damage,
                    }
                };
                return stop(offset, records, end);
            }
        }
    }
    stop(log.len(), records, End::Clean)
}

/// Why the bytes at an offset are not a valid record.
struct Bad {
    damage: Damage,
    /// `None`: corrupt whatever follows. `Some(p)`: torn unless a valid record starts at
    /// offset `p` or later.
    search: Option<usize>,
}

impl Bad {
    fn torn_unless_from(damage: Damage, from: usize) -> Bad {
        Bad {
            damage,
            search: Some(from),
        }
    }

    fn corrupt(damage: Damage) -> Bad {
        Bad {
            damage,
            search: None,
        }
    }
}

/// Whether a valid record starts at any offset from `from` on.
fn valid_record_from(crc: &Hasher, log: &[u8], from: usize) -> bool {
    let last = log.len().saturating_sub(MIN_RECORD_LEN);
    (from..=last).any(|p| record(crc, log, p).is_ok())
}

/// The record at `at` and the offset just past it.
fn record<'a>(crc: &Hasher, log: &'a [u8], at: usize) -> Result<(Op<'a>, usize), Bad> {
    // Plain indexing after explicit length checks: this runs once per record and per
    // candidate offset of the search, and stays cheap in unoptimised builds too.
    let rest = log.get(at..).unwrap_or_default();
    if rest.len() < RECORD_HEADER_LEN {
        return Err(Bad::torn_unless_from(Damage::ShortHeader, at + 1));
    }
    let body_len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let body_crc = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
    let head_crc = u32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
    if checksum(crc, &rest[..8]) != head_crc {
        return Err(Bad::torn_unless_from(Damage::HeaderCrc, at + 1));
    }
    // From here on the length is trusted.
    let len = body_len as usize;
    if len > MAX_BODY_LEN {
        return Err(Bad::corrupt(Damage::BodyTooLong(body_len)));
    }
    let end = RECORD_HEADER_LEN + len;
    let next = at + end;
    if rest.len() < end {
        let damage = Damage::ShortBody {
            needed: body_len,
            // Fewer than `body_len`, so within `u32`.
            available: (rest.len() - RECORD_HEADER_LEN) as u32,
        };
        return Err(Bad::torn_unless_from(damage, next));
    }
    let body = &rest[RECORD_HEADER_LEN..end];
    if checksum(crc, body) != body_crc {
        return Err(Bad::torn_unless_from(Damage::BodyCrc, next));
    }
    match decode_body(body) {
        Ok(op) => Ok((op, next)),
        Err(damage) => Err(Bad::corrupt(damage)),
    }
}

/// The op of a body whose checksum matched.
fn decode_body(body: &[u8]) -> Result<Op<'_>, Damage> {
    // Shorter than a checked body len, so within `u32`.
    let len = body.len();
    if len < BODY_PREFIX_LEN {
        return Err(Damage::BodyTooShort(len as u32));
    }
    let op = body[0];
    let key_len = u16::from_be_bytes([body[1], body[2]]);
    if op != OP_SET && op != OP_DELETE {
        return Err(Damage::BadOp(op));
    }
    let key_end = BODY_PREFIX_LEN + usize::from(key_len);
    if key_len == 0 || usize::from(key_len) > MAX_KEY_LEN || key_end > len {
        return Err(Damage::BadKeyLength(key_len));
    }
    let (head, value) = body.split_at(key_end);
    let key = &head[BODY_PREFIX_LEN..];
    if op == OP_SET {
        return Ok(Op::Set { key, value });
    }
    if !value.is_empty() {
        return Err(Damage::DeleteWithValue(value.len() as u32));
    }
    Ok(Op::Delete { key })
}

/// CRC-32 of `data`, by a clone of the scan's hasher.
fn checksum(crc: &Hasher, data: &[u8]) -> u32 {
    let mut hasher = crc.clone();
    hasher.update(data);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(records: &[&[u8]]) -> Vec<u8> {
        let mut log = FILE_HEADER.to_vec();
        for r in records {
            log.extend_from_slice(r);
        }
        log
    }

    fn set(key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_set(&mut out, key, value);
        out
    }

    fn ops(log: &[u8]) -> (Vec<(u64, Op<'_>)>, Scan) {
        let mut ops = Vec::new();
        let scan = scan(log, |offset, op| ops.push((offset, op)));
        (ops, scan)
    }

    #[test]
    fn file_header_is_ckvlog_version_1() {
        assert_eq!(
            FILE_HEADER,
            [0x43, 0x4B, 0x56, 0x4C, 0x4F, 0x47, 0x00, 0x01]
        );
        assert_eq!(MAX_BODY_LEN, 1 + 2 + 1024 + 1024 * 1024);
    }

    #[test]
    fn record_bytes_are_the_documented_layout() {
        let rec = set(b"ab", b"xyz");
        let body = [1, 0, 2, b'a', b'b', b'x', b'y', b'z'];
        let mut head = Vec::new();
        head.extend_from_slice(&8u32.to_be_bytes());
        head.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        let head_crc = crc32fast::hash(&head);
        head.extend_from_slice(&head_crc.to_be_bytes());
        assert_eq!(rec, [&head[..], &body[..]].concat());
    }

    #[test]
    fn a_key_longer_than_u16_is_cut_and_then_refused() {
        let key = vec![7; usize::from(u16::MAX) + 10];
        let rec = set(&key, b"v");
        assert_eq!(rec.len(), set_len(key.len(), 1));
        assert_eq!(rec.len(), 12 + 3 + usize::from(u16::MAX) + 1);
        let log = log_of(&[&rec]);
        let (seen, scan) = ops(&log);
        assert!(seen.is_empty());
        let end = End::Corrupt {
            offset: 8,
            damage: Damage::BadKeyLength(u16::MAX),
        };
        assert_eq!(
            scan,
            Scan {
                records: 0,
                valid_len: 8,
                end
            }
        );
    }

    #[test]
    fn a_torn_set_whose_value_holds_a_record_is_still_a_torn_tail() {
        let inner = [&FILE_HEADER[..], &set(b"inner", b"record")[..], b"more"].concat();
        let outer = set(b"outer", &inner);
        let log = log_of(&[&set(b"a", b"1"), &outer]);
        let at = 8 + set_len(1, 1) as u64;
        // Cut inside the value, just after the embedded record.
        let (seen, scan) = ops(&log[..log.len() - 1]);
        assert_eq!(seen.len(), 1);
        assert!(
            matches!(scan.end, End::TornTail { offset, damage: Damage::ShortBody { .. } } if offset == at)
        );
        // Body damaged before the embedded record.
        let mut damaged = log.clone();
        damaged[at as usize + 12 + 4] ^= 0xFF;
        let (_, scan) = ops(&damaged);
        let end = End::TornTail {
            offset: at,
            damage: Damage::BodyCrc,
        };
        assert_eq!(scan.end, end);
    }

    #[test]
    fn display_says_what_and_where() {
        let end = End::TornTail {
            offset: 42,
            damage: Damage::HeaderCrc,
        };
        assert_eq!(
            end.to_string(),
            "torn tail at offset 42: bad CRC of record header"
        );
        let end = End::Corrupt {
            offset: 8,
            damage: Damage::ShortBody {
                needed: 10,
                available: 3,
            },
        };
        assert_eq!(
            end.to_string(),
            "corrupt at offset 8: record body cut short: 3 of 10 bytes present"
        );
        assert_eq!(End::Clean.to_string(), "clean end");
    }
}
