//! CRC-32 for both checksum fields: CRC-32/ISO-HDLC, the IEEE 802.3 CRC that `crc32fast`
//! computes (`proto-spec/PROTOCOL.md` §2).
//!
//! `crc32fast` uses the CPU's carry-less multiply (PCLMULQDQ, or VPCLMULQDQ with AVX2/AVX-512)
//! when the CPU has it, and picks that kernel at run time: `crc32fast::hash` and
//! `crc32fast::Hasher::new` check the CPU's features (a cached test, but a test and a branch)
//! on every call, which for a 32-byte header is a measurable part of the work. The codec probes once ([`prototype`]) and clones the
//! result: the same kernel, the same checksum, without the probe.

use std::sync::OnceLock;

use crc32fast::Hasher;

/// A fresh hasher (initial state, no bytes yet) using the fastest kernel the CPU supports, to
/// be cloned for each checksum.
#[inline]
pub(crate) fn prototype() -> &'static Hasher {
    static PROTOTYPE: OnceLock<Hasher> = OnceLock::new();
    PROTOTYPE.get_or_init(Hasher::new)
}

/// CRC-32 of `data`, computed by a clone of `prototype` (the hasher from [`prototype`], or a
/// clone of it).
#[inline]
pub(crate) fn crc32_with(prototype: &Hasher, data: &[u8]) -> u32 {
    let mut hasher = prototype.clone();
    hasher.update(data);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn matches_the_spec_check_values() {
        // PROTOCOL.md §2: CRC-32("123456789") = 0xCBF43926, CRC-32("") = 0.
        assert_eq!(crc32_with(prototype(), b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32_with(prototype(), b""), 0);
    }

    proptest! {
        #[test]
        fn agrees_with_crc32fast_hash(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            prop_assert_eq!(crc32_with(prototype(), &bytes), crc32fast::hash(&bytes));
        }
    }
}
