//! Arbitrary bytes read as a kv log file: the scan never panics, visits exactly the records it
//! counts, at offsets that tile the valid part, and the valid part is exactly the file header
//! followed by the canonical encoding of every visited op, which scans clean with the same
//! count. A stop is at `valid_len`. Run with `-malloc_limit_mb` to catch an allocation sized
//! by a length the input merely claims: the scan allocates nothing.
//!
//! Input: a mode byte, then the log file's bytes from offset 0. Even mode: the bytes as they
//! are. Odd mode: the checksums are fixed first (walking the records by their body lengths, each
//! body CRC and head CRC is set to match), so that mutations reach the checks behind them (op,
//! key length, DELETE values, body length limit) instead of stopping at a CRC mismatch.
#![no_main]

use courier_rpc::kv::log::record::{self, End, Op, FILE_HEADER, RECORD_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

/// CRC-32 (IEEE 802.3, reflected, as `crc32fast` computes it), bit by bit: a second opinion,
/// independent of the crate's.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Sets every record's body CRC and head CRC to match, from offset 8, following body lengths;
/// a body that runs past the end keeps its body CRC.
fn fix_checksums(log: &mut [u8]) {
    let mut at = FILE_HEADER.len();
    while at + RECORD_HEADER_LEN <= log.len() {
        let len = u32::from_be_bytes([log[at], log[at + 1], log[at + 2], log[at + 3]]) as usize;
        let body = at + RECORD_HEADER_LEN;
        let whole = body.checked_add(len).filter(|&end| end <= log.len());
        if let Some(end) = whole {
            let crc = crc32(&log[body..end]);
            log[at + 4..at + 8].copy_from_slice(&crc.to_be_bytes());
        }
        let crc = crc32(&log[at..at + 8]);
        log[at + 8..at + 12].copy_from_slice(&crc.to_be_bytes());
        match whole {
            Some(end) => at = end,
            None => break,
        }
    }
}

fn check(log: &[u8]) {
    let mut ops: Vec<(u64, Op<'_>)> = Vec::new();
    let scan = record::scan(log, |offset, op| ops.push((offset, op)));

    assert!(
        scan.valid_len <= log.len() as u64,
        "valid_len past the input"
    );
    assert_eq!(
        ops.len() as u64,
        scan.records,
        "visits differ from the count"
    );
    match scan.end {
        End::Clean => assert_eq!(scan.valid_len, log.len() as u64, "clean but not whole"),
        End::TornTail { offset, .. } | End::Corrupt { offset, .. } => {
            assert_eq!(offset, scan.valid_len, "stop offset differs from valid_len")
        }
    }
    let valid = &log[..scan.valid_len as usize];
    if valid.len() < FILE_HEADER.len() {
        // Empty, or a damaged or short file header: nothing accepted.
        assert_eq!(scan.valid_len, 0, "part of a file header accepted");
        assert!(ops.is_empty(), "records without a file header");
        return;
    }

    // Property: the valid part is the file header and each op's canonical encoding, in order,
    // each at the offset it was visited at.
    let mut again = FILE_HEADER.to_vec();
    for &(offset, op) in &ops {
        assert_eq!(offset, again.len() as u64, "record offset");
        match op {
            Op::Set { key, value } => record::encode_set(&mut again, key, value),
            Op::Delete { key } => record::encode_delete(&mut again, key),
        }
    }
    assert_eq!(&again[..], valid, "re-encoding differs from the valid part");

    // Property: the valid part alone scans clean, with the same records.
    let mut count = 0;
    let prefix = record::scan(valid, |offset, op| {
        assert_eq!(
            Some(&(offset, op)),
            ops.get(count),
            "prefix visits a different record"
        );
        count += 1;
    });
    assert_eq!(prefix.end, End::Clean, "valid part does not scan clean");
    assert_eq!(prefix.records, scan.records);
    assert_eq!(prefix.valid_len, scan.valid_len);
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, log)) = input.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        check(log);
    } else {
        let mut log = log.to_vec();
        fix_checksums(&mut log);
        check(&log);
    }
});
