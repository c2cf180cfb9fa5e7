//! The wire format the floor server, the afternoon server and raw-bench share.
//!
//! Every frame, both ways, is a `u32` big-endian length `L` followed by `L` bytes of payload
//! (tokio-util's `LengthDelimitedCodec` with its defaults).
//!
//! - A request's payload: 1 byte opcode ([`GET`] or [`SET`]), a `u16` big-endian key length
//!   `K`, the `K` key bytes, then for SET the value (the rest of the payload).
//! - An answer's payload: 1 status byte ([`FOUND`] = 0 for a GET that found its key and for
//!   every SET, [`MISSING`] = 1 for a GET that did not), then for a found GET the value.
//!
//! So with `V`-byte values a GET that finds its key is answered with `4 + 1 + V` bytes and a
//! SET with `4 + 1`.

/// Bytes of a frame's length prefix: 4.
pub const HEADER_LEN: usize = 4;
/// The opcode of a GET: 1.
pub const GET: u8 = 1;
/// The opcode of a SET: 2.
pub const SET: u8 = 2;
/// The status byte of a found GET and of every SET: 0.
pub const FOUND: u8 = 0;
/// The status byte of a GET whose key is not stored: 1.
pub const MISSING: u8 = 1;
/// The default value size of the servers and the driver, in bytes: 64.
pub const DEFAULT_VALUE_SIZE: usize = 64;
/// Bytes of every key [`key`] makes: 14 (`key:` and ten digits).
pub const KEY_LEN: usize = 14;

/// The payload length of the answer to a GET that finds a `value_size`-byte value: the
/// status byte and the value.
pub fn get_answer_len(value_size: usize) -> usize {
    1 + value_size
}

/// The payload length of the answer to a SET: the status byte.
pub const SET_ANSWER_LEN: usize = 1;

/// The key `key:NNNNNNNNNN` (ten digits, zero-padded; the lowest ten digits of `n`), as
/// courier-bench names its keys.
pub fn key(n: u64) -> [u8; KEY_LEN] {
    let mut key = *b"key:0000000000";
    let mut rest = n;
    for digit in key[4..].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    key
}

/// Appends a GET of `key` to `out`.
///
/// # Panics
/// If `key` is longer than 65,535 bytes.
pub fn put_get(out: &mut Vec<u8>, key: &[u8]) {
    put_request(out, GET, key, &[]);
}

/// Appends a SET of `key` to `value` to `out`.
///
/// # Panics
/// If `key` is longer than 65,535 bytes or the payload longer than `u32::MAX` bytes.
pub fn put_set(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    put_request(out, SET, key, value);
}

fn put_request(out: &mut Vec<u8>, op: u8, key: &[u8], value: &[u8]) {
    let key_len = u16::try_from(key.len()).expect("a key of at most 65,535 bytes");
    let len = u32::try_from(1 + 2 + key.len() + value.len()).expect("a payload under 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.push(op);
    out.extend_from_slice(&key_len.to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

/// Appends an answer frame (`status`, then `value`) to `out`.
///
/// # Panics
/// If the payload is longer than `u32::MAX` bytes.
pub fn put_answer(out: &mut Vec<u8>, status: u8, value: &[u8]) {
    let len = u32::try_from(1 + value.len()).expect("a payload under 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.push(status);
    out.extend_from_slice(value);
}

/// Walks the frames of a byte stream read into a fixed buffer, keeping of each frame only its
/// length and the first byte of its payload (the opcode of a request, the status of an
/// answer): the rest of a frame is counted off as it arrives and never kept, so a frame of
/// any length goes through a buffer of any size, and nothing is allocated after
/// [`Scanner::new`].
///
/// Use: read into [`Scanner::spare`], then hand the byte count to [`Scanner::advance`].
#[derive(Debug)]
pub struct Scanner {
    buf: Box<[u8]>,
    /// Bytes at the front of `buf`: a frame's start (at most its header and no first byte).
    filled: usize,
    /// The frame being counted off: its length and first byte, and how many of its bytes
    /// are still to come.
    current: Option<(u32, u8)>,
    skip: usize,
}

impl Scanner {
    /// A scanner reading into a buffer of `capacity` bytes (at least 5: a header and a first
    /// byte; smaller is raised to 5).
    pub fn new(capacity: usize) -> Scanner {
        Scanner {
            buf: vec![0; capacity.max(HEADER_LEN + 1)].into_boxed_slice(),
            filled: 0,
            current: None,
            skip: 0,
        }
    }

    /// Where the next read goes: the buffer's free room (never less than its capacity
    /// minus 4).
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.filled..]
    }

    /// Takes the `n` bytes just read into [`Scanner::spare`] and calls `frame(len, first)`
    /// for each frame they complete, in order: its payload length and its first payload
    /// byte (`None` for an empty payload). Stops at the first error `frame` returns and
    /// returns it; the scanner should not be used after that.
    ///
    /// # Panics
    /// If `n` is larger than the spare room.
    pub fn advance<E>(
        &mut self,
        n: usize,
        mut frame: impl FnMut(u32, Option<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let end = self.filled + n;
        assert!(end <= self.buf.len(), "read more than the spare room");
        let mut pos = 0;
        loop {
            if let Some((len, first)) = self.current {
                let take = self.skip.min(end - pos);
                pos += take;
                self.skip -= take;
                if self.skip > 0 {
                    break;
                }
                self.current = None;
                frame(len, Some(first))?;
                continue;
            }
            if end - pos < HEADER_LEN {
                break;
            }
            let mut header = [0; HEADER_LEN];
            header.copy_from_slice(&self.buf[pos..pos + HEADER_LEN]);
            let len = u32::from_be_bytes(header);
            if len == 0 {
                pos += HEADER_LEN;
                frame(0, None)?;
                continue;
            }
            if end - pos < HEADER_LEN + 1 {
                break;
            }
            let first = self.buf[pos + HEADER_LEN];
            pos += HEADER_LEN + 1;
            self.current = Some((len, first));
            self.skip = len as usize - 1;
        }
        // At most a header (and no first byte) is left: it moves to the front.
        self.buf.copy_within(pos..end, 0);
        self.filled = end - pos;
        Ok(())
    }
}

/// xorshift64* (Vigna, 2016), seeded through splitmix64 as courier-bench seeds its clients:
/// small, fast, and good enough to pick keys.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// The generator of client `index` of a run seeded with `seed` (never 0).
    pub fn for_client(seed: u64, index: usize) -> Rng {
        let mut z = (seed ^ index as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is below 2^-64 * n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_ten_zero_padded_digits() {
        assert_eq!(&key(0), b"key:0000000000");
        assert_eq!(&key(42), b"key:0000000042");
        assert_eq!(&key(9_876_543_210), b"key:9876543210");
    }

    #[test]
    fn requests_are_length_opcode_key_length_key_value() {
        let mut out = Vec::new();
        put_set(&mut out, b"ab", b"xyz");
        put_get(&mut out, b"ab");
        assert_eq!(
            out,
            [
                &[0, 0, 0, 8, SET, 0, 2, b'a', b'b', b'x', b'y', b'z'][..],
                &[0, 0, 0, 5, GET, 0, 2, b'a', b'b'][..]
            ]
            .concat()
        );
    }

    /// Feeds `bytes` to a scanner with a `capacity`-byte buffer `chunk` bytes at a time.
    fn scan(bytes: &[u8], capacity: usize, chunk: usize) -> Vec<(u32, Option<u8>)> {
        let mut scanner = Scanner::new(capacity);
        let mut frames = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let spare = scanner.spare();
            let n = rest.len().min(chunk).min(spare.len());
            spare[..n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            scanner
                .advance(n, |len, first| {
                    frames.push((len, first));
                    Ok::<(), ()>(())
                })
                .expect("no error");
        }
        frames
    }

    #[test]
    fn the_scanner_finds_every_frame_however_the_bytes_are_cut() {
        let mut bytes = Vec::new();
        put_set(&mut bytes, &key(1), &[b'x'; 300]);
        put_get(&mut bytes, &key(2));
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        put_answer(&mut bytes, MISSING, &[]);
        let want = vec![
            (1 + 2 + 14 + 300, Some(SET)),
            (1 + 2 + 14, Some(GET)),
            (0, None),
            (1, Some(MISSING)),
        ];
        for capacity in [5, 6, 16, 64, 1024] {
            for chunk in [1, 2, 3, 5, 7, 100, 4096] {
                assert_eq!(scan(&bytes, capacity, chunk), want, "{capacity} {chunk}");
            }
        }
    }

    #[test]
    fn a_partial_frame_is_not_reported() {
        let mut bytes = Vec::new();
        put_get(&mut bytes, &key(2));
        bytes.pop();
        assert_eq!(scan(&bytes, 64, 64), vec![]);
    }
}
