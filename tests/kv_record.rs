//! The kv log's record format on real bytes: a 1,000-record log cut at every byte, every
//! single-byte corruption of it, zero-filled and garbage tails, records whose checksums match
//! but whose bodies break the format, and encode/scan round trips at the limits.

use courier_rpc::kv::log::record::{
    self, Damage, End, Op, Scan, FILE_HEADER, MAX_BODY_LEN, RECORD_HEADER_LEN,
};
use courier_rpc::kv::{MAX_KEY_LEN, MAX_VALUE_LEN};

/// One record of the test log, owned.
#[derive(Debug)]
enum Expected {
    Set(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

impl Expected {
    fn op(&self) -> Op<'_> {
        match self {
            Expected::Set(key, value) => Op::Set { key, value },
            Expected::Delete(key) => Op::Delete { key },
        }
    }
}

/// A log, its records, and the offset each record starts at (plus the end of the last).
struct Log {
    bytes: Vec<u8>,
    records: Vec<Expected>,
    /// `bounds[i]` is where record `i` starts; `bounds[records.len()]` is the file's length.
    bounds: Vec<usize>,
}

/// A small deterministic generator (xorshift64*), so a failure names a reproducible log.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        // Byte 0 and byte 255 a quarter of the time each.
        (0..len)
            .map(|_| match self.below(4) {
                0 => 0,
                1 => 255,
                _ => self.next() as u8,
            })
            .collect()
    }
}

/// 1,000 records (about 30 KB): about a third DELETEs, keys of 1 to 16 bytes, values of 0 to
/// 24 bytes with one SET in five empty.
fn thousand_records() -> Log {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut records = Vec::new();
    for i in 0..1000 {
        let key = match i {
            0 => vec![0],
            1 => vec![255],
            _ => {
                let len = 1 + rng.below(16);
                rng.bytes(len)
            }
        };
        if rng.below(3) == 0 {
            records.push(Expected::Delete(key));
        } else {
            let len = if rng.below(5) == 0 { 0 } else { rng.below(25) };
            records.push(Expected::Set(key, rng.bytes(len)));
        }
    }
    build(records)
}

fn build(records: Vec<Expected>) -> Log {
    let mut bytes = FILE_HEADER.to_vec();
    let mut bounds = Vec::new();
    for r in &records {
        bounds.push(bytes.len());
        match r {
            Expected::Set(key, value) => record::encode_set(&mut bytes, key, value),
            Expected::Delete(key) => record::encode_delete(&mut bytes, key),
        }
    }
    bounds.push(bytes.len());
    Log {
        bytes,
        records,
        bounds,
    }
}

/// Scans `bytes`, asserting that the records visited are exactly `log`'s first ones, at their
/// offsets, and returns the scan and how many were visited.
fn scan_against(log: &Log, bytes: &[u8]) -> (Scan, usize) {
    let mut seen = 0;
    let scan = record::scan(bytes, |offset, op| {
        assert!(seen < log.records.len(), "more records than were written");
        assert_eq!(offset, log.bounds[seen] as u64, "offset of record {seen}");
        assert_eq!(op, log.records[seen].op(), "record {seen}");
        seen += 1;
    });
    (scan, seen)
}

/// The scan that visited records `0..n` and stopped with `end` (at record `n`, or at 0).
fn stopped(n: usize, end: End) -> Scan {
    let valid_len = match end {
        End::Clean => unreachable!("a stop is not clean"),
        End::TornTail { offset, .. } | End::Corrupt { offset, .. } => offset,
    };
    Scan {
        records: n as u64,
        valid_len,
        end,
    }
}

#[test]
fn the_test_log_is_mixed_and_modest() {
    let log = thousand_records();
    let deletes = log
        .records
        .iter()
        .filter(|r| matches!(r, Expected::Delete(_)))
        .count();
    let empty = log
        .records
        .iter()
        .filter(|r| matches!(r, Expected::Set(_, v) if v.is_empty()))
        .count();
    assert!((250..450).contains(&deletes), "{deletes} deletes");
    assert!(empty >= 50, "{empty} empty values");
    assert!(
        (30_000..=60_000).contains(&log.bytes.len()),
        "{} bytes",
        log.bytes.len()
    );
    let (scan, seen) = scan_against(&log, &log.bytes);
    assert_eq!(seen, 1000);
    let whole = Scan {
        records: 1000,
        valid_len: log.bytes.len() as u64,
        end: End::Clean,
    };
    assert_eq!(scan, whole);
}

#[test]
fn cut_at_every_byte_keeps_the_records_wholly_before_the_cut() {
    let log = thousand_records();
    for cut in 0..=log.bytes.len() {
        let (scan, seen) = scan_against(&log, &log.bytes[..cut]);
        // Records wholly before the cut, and where the last of them ends.
        let n = log.bounds.partition_point(|&b| b <= cut).saturating_sub(1);
        let boundary = log.bounds[n];
        let expected = if cut == 0 {
            Scan {
                records: 0,
                valid_len: 0,
                end: End::Clean,
            }
        } else if cut < FILE_HEADER.len() {
            let end = End::TornTail {
                offset: 0,
                damage: Damage::ShortFileHeader,
            };
            stopped(0, end)
        } else if cut == boundary {
            Scan {
                records: n as u64,
                valid_len: cut as u64,
                end: End::Clean,
            }
        } else {
            let present = cut - boundary;
            let damage = if present < RECORD_HEADER_LEN {
                Damage::ShortHeader
            } else {
                Damage::ShortBody {
                    needed: (log.bounds[n + 1] - boundary - RECORD_HEADER_LEN) as u32,
                    available: (present - RECORD_HEADER_LEN) as u32,
                }
            };
            let end = End::TornTail {
                offset: boundary as u64,
                damage,
            };
            stopped(n, end)
        };
        assert_eq!(scan, expected, "cut at {cut}");
        assert_eq!(seen as u64, scan.records, "cut at {cut}");
    }
}

/// What a scan of the log with byte `pos` flipped must say: the file header is corrupt; a
/// damaged record is corrupt when a record follows it, and a torn tail when it is the last.
fn corrupted_at(log: &Log, pos: usize) -> Scan {
    if pos < FILE_HEADER.len() {
        let end = End::Corrupt {
            offset: 0,
            damage: Damage::BadFileHeader,
        };
        return stopped(0, end);
    }
    let n = log.bounds.partition_point(|&b| b <= pos) - 1;
    let offset = log.bounds[n] as u64;
    let damage = if pos - log.bounds[n] < RECORD_HEADER_LEN {
        Damage::HeaderCrc
    } else {
        Damage::BodyCrc
    };
    let end = if n == log.records.len() - 1 {
        End::TornTail { offset, damage }
    } else {
        End::Corrupt { offset, damage }
    };
    stopped(n, end)
}

#[test]
fn every_single_byte_corruption_before_the_tail_is_corrupt_at_its_record() {
    let log = thousand_records();
    // About 100,000 scans: split the positions over the CPUs, interleaved so that each thread
    // gets early (cheap) and late (dear) positions alike.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for first in 0..threads {
            let log = &log;
            s.spawn(move || {
                let mut bytes = log.bytes.clone();
                for pos in (first..bytes.len()).step_by(threads) {
                    let expected = corrupted_at(log, pos);
                    for mask in [0x01, 0x80, 0xFF] {
                        bytes[pos] ^= mask;
                        let (scan, seen) = scan_against(log, &bytes);
                        bytes[pos] ^= mask;
                        assert_eq!(scan, expected, "byte {pos} xor {mask:#04x}");
                        assert_eq!(seen as u64, scan.records, "byte {pos} xor {mask:#04x}");
                    }
                }
            });
        }
    });
}

#[test]
fn a_zero_filled_tail_is_torn_and_keeps_every_record() {
    let log = thousand_records();
    for zeros in [1, 11, 12, 15, 16, 100, 4096] {
        let mut bytes = log.bytes.clone();
        bytes.resize(bytes.len() + zeros, 0);
        let (scan, seen) = scan_against(&log, &bytes);
        let damage = if zeros < RECORD_HEADER_LEN {
            Damage::ShortHeader
        } else {
            Damage::HeaderCrc
        };
        let end = End::TornTail {
            offset: log.bytes.len() as u64,
            damage,
        };
        assert_eq!(scan, stopped(1000, end), "{zeros} zeros");
        assert_eq!(seen, 1000);
    }
}

/// A record with matching checksums around an arbitrary body.
fn raw_record(body: &[u8]) -> Vec<u8> {
    raw_record_claiming(body.len() as u32, body)
}

/// A record with matching head CRC and body CRC whose header claims `body_len` bytes.
fn raw_record_claiming(body_len: u32, body: &[u8]) -> Vec<u8> {
    let mut head = Vec::new();
    head.extend_from_slice(&body_len.to_be_bytes());
    head.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    let head_crc = crc32fast::hash(&head);
    head.extend_from_slice(&head_crc.to_be_bytes());
    [head, body.to_vec()].concat()
}

/// Records written with matching checksums that break the format, and their damage.
fn malformed() -> Vec<(Vec<u8>, Damage)> {
    let long_key = (MAX_KEY_LEN as u16 + 1).to_be_bytes();
    let mut long_key_body = vec![1, long_key[0], long_key[1]];
    long_key_body.resize(3 + MAX_KEY_LEN + 1, b'k');
    let too_long = MAX_BODY_LEN as u32 + 1;
    vec![
        (raw_record(&[3, 0, 1, b'k', b'v']), Damage::BadOp(3)),
        (raw_record(&[0, 0, 1, b'k']), Damage::BadOp(0)),
        (raw_record(&[]), Damage::BodyTooShort(0)),
        (raw_record(&[1, 0]), Damage::BodyTooShort(2)),
        (raw_record(&[1, 0, 0, b'v']), Damage::BadKeyLength(0)),
        (raw_record(&[2, 0, 0]), Damage::BadKeyLength(0)),
        (raw_record(&[1, 0, 5, b'k', b'e']), Damage::BadKeyLength(5)),
        (
            raw_record(&long_key_body),
            Damage::BadKeyLength(MAX_KEY_LEN as u16 + 1),
        ),
        (
            raw_record(&[2, 0, 1, b'k', b'x', b'y']),
            Damage::DeleteWithValue(2),
        ),
        // Head CRC matches, body CRC of nothing in particular: the length alone is refused.
        (
            raw_record_claiming(too_long, b""),
            Damage::BodyTooLong(too_long),
        ),
        (
            raw_record_claiming(u32::MAX, b""),
            Damage::BodyTooLong(u32::MAX),
        ),
    ]
}

#[test]
fn a_record_that_breaks_the_format_is_corrupt_whatever_follows() {
    let log = thousand_records();
    let offset = log.bytes.len() as u64;
    let mut valid_after = Vec::new();
    record::encode_set(&mut valid_after, b"after", b"it");
    let tails: [&[u8]; 3] = [b"", b"\xde\xad\xbe\xef garbage", &valid_after];
    for (rec, damage) in malformed() {
        for tail in tails {
            let bytes = [&log.bytes[..], &rec, tail].concat();
            let (scan, seen) = scan_against(&log, &bytes);
            let end = End::Corrupt { offset, damage };
            assert_eq!(scan, stopped(1000, end), "{damage:?} then {tail:?}");
            assert_eq!(seen, 1000);
        }
    }
}

#[test]
fn a_damaged_record_then_garbage_is_torn_and_then_a_record_is_corrupt() {
    let log = thousand_records();
    let offset = log.bytes.len() as u64;
    let mut good = Vec::new();
    record::encode_set(&mut good, b"next", b"value");
    let mut bad_head = good.clone();
    bad_head[2] ^= 0x10;
    let mut bad_body = good.clone();
    bad_body[RECORD_HEADER_LEN + 4] ^= 0x10;
    let garbage: Vec<u8> = (0..300u32).map(|i| (i * 37 % 251) as u8).collect();
    for (rec, damage) in [(&bad_head, Damage::HeaderCrc), (&bad_body, Damage::BodyCrc)] {
        let torn = [&log.bytes[..], rec, &garbage].concat();
        let (scan, seen) = scan_against(&log, &torn);
        let end = End::TornTail { offset, damage };
        assert_eq!(scan, stopped(1000, end), "{damage:?} then garbage");
        assert_eq!(seen, 1000);

        let corrupt = [&log.bytes[..], rec, &garbage, &good, &garbage].concat();
        let (scan, _) = scan_against(&log, &corrupt);
        let end = End::Corrupt { offset, damage };
        assert_eq!(scan, stopped(1000, end), "{damage:?} then a valid record");
    }
}

#[test]
fn a_bad_file_header_is_corrupt_and_a_short_prefix_of_it_is_torn() {
    let corrupt = Scan {
        records: 0,
        valid_len: 0,
        end: End::Corrupt {
            offset: 0,
            damage: Damage::BadFileHeader,
        },
    };
    let torn = Scan {
        records: 0,
        valid_len: 0,
        end: End::TornTail {
            offset: 0,
            damage: Damage::ShortFileHeader,
        },
    };
    let no_visits = |_: u64, op: Op<'_>| panic!("visited {op:?}");
    assert_eq!(record::scan(b"CKV", no_visits), torn);
    assert_eq!(record::scan(b"CKVLOG\x00", no_visits), torn);
    assert_eq!(record::scan(b"X", no_visits), corrupt);
    assert_eq!(record::scan(b"CKVLOG\x01", no_visits), corrupt);
    assert_eq!(record::scan(b"CKVLOG\x00\x02", no_visits), corrupt);
    let mut other_version = b"CKVLOG\x00\x02".to_vec();
    record::encode_delete(&mut other_version, b"k");
    assert_eq!(record::scan(&other_version, no_visits), corrupt);
    let empty = Scan {
        records: 0,
        valid_len: 0,
        end: End::Clean,
    };
    assert_eq!(record::scan(b"", no_visits), empty);
}

#[test]
fn set_and_delete_round_trip_at_the_limits() {
    let key: Vec<u8> = (0..MAX_KEY_LEN).map(|i| (i % 256) as u8).collect();
    let value: Vec<u8> = (0..MAX_VALUE_LEN).map(|i| (i * 7 % 256) as u8).collect();
    let cases: [(&[u8], Option<&[u8]>); 5] = [
        (&key, Some(&value)),
        (&key, Some(b"")),
        (b"\x00", Some(b"\xff")),
        (&key, None),
        (b"\xff", None),
    ];
    let mut log = FILE_HEADER.to_vec();
    let mut offsets = Vec::new();
    for (key, value) in cases {
        let before = log.len();
        offsets.push(before as u64);
        match value {
            Some(value) => {
                record::encode_set(&mut log, key, value);
                assert_eq!(log.len() - before, record::set_len(key.len(), value.len()));
                assert_eq!(log.len() - before, 12 + 3 + key.len() + value.len());
            }
            None => {
                record::encode_delete(&mut log, key);
                assert_eq!(log.len() - before, record::delete_len(key.len()));
                assert_eq!(log.len() - before, 12 + 3 + key.len());
            }
        }
    }
    // The largest record is exactly the largest body plus its header.
    assert_eq!(
        record::set_len(MAX_KEY_LEN, MAX_VALUE_LEN),
        RECORD_HEADER_LEN + MAX_BODY_LEN
    );
    let mut seen = Vec::new();
    let scan = record::scan(&log, |offset, op| seen.push((offset, op)));
    let expected: Vec<(u64, Op<'_>)> = cases
        .iter()
        .zip(&offsets)
        .map(|(&(key, value), &offset)| match value {
            Some(value) => (offset, Op::Set { key, value }),
            None => (offset, Op::Delete { key }),
        })
        .collect();
    assert_eq!(seen, expected);
    let whole = Scan {
        records: 5,
        valid_len: log.len() as u64,
        end: End::Clean,
    };
    assert_eq!(scan, whole);
}

#[test]
fn encoding_appends_to_a_bytes_mut_too() {
    let mut buf = bytes::BytesMut::new();
    buf.extend_from_slice(&FILE_HEADER);
    record::encode_set(&mut buf, b"k", b"v");
    let mut vec = FILE_HEADER.to_vec();
    record::encode_set(&mut vec, b"k", b"v");
    assert_eq!(&buf[..], &vec[..]);
}
