//! [`Table`]: one shard's map from key to [`Entry`], an open-addressing hash table whose
//! slots keep each entry's full 64-bit hash beside its pointer.
//!
//! ```text
//!                slot i: 24 bytes
//! +-----------------------+-------------------------+
//! | hash of the key (u64) | entry pointer, or empty |---> +---------+-----+-------+
//! +-----------------------+-------------------------+     | key len | key | value |
//!                                                         +---------+-----+-------+
//! ```
//!
//! A lookup reads its key's slot (hash & mask) and the slots after it until it meets the key's
//! hash or an empty slot (linear probing), and follows the pointer only when the hashes are
//! equal: two memory reads for a hit, the slot and the entry, where a table keeping the hash
//! apart from the pointer (std's `HashSet`: a control byte array, then the slot) needs three.
//! Those two reads are also what [`Table::slot_address`] and [`Table::entry_extent`] give a
//! caller that wants to prefetch them ([`Store::prefetch`](super::Store::prefetch)).
//!
//! The hash is the caller's (the [`Store`](super::Store) computes it once per key, with a
//! randomly keyed SipHash, and picks the shard from its top bits); this table uses its low
//! bits. At most three quarters of the slots are full (the table doubles first), so a probe
//! always ends. A removal shifts the entries after it back (backward-shift deletion), so
//! there are no tombstones and a lookup never walks past slots that only used to be full.

/// One stored key and its value, in one allocation:
///
/// ```text
/// +------------------+-----------+-------------+
/// | key length (u16) | key bytes | value bytes |
/// +------------------+-----------+-------------+
/// ```
///
/// A [`Table`] holds a pointer to it beside its key's hash: a lookup touches the
/// table slot and this one allocation, nothing else.
#[derive(Debug)]
pub(in crate::kv) struct Entry(Box<[u8]>);

impl Entry {
    /// `key` must be at most [`MAX_KEY_LEN`](crate::kv::MAX_KEY_LEN) bytes (well within `u16`).
    pub(in crate::kv) fn new(key: &[u8], value: &[u8]) -> Entry {
        let key_len = u16::try_from(key.len()).unwrap_or(u16::MAX);
        let key = &key[..usize::from(key_len)];
        let mut bytes = Vec::with_capacity(2 + key.len() + value.len());
        bytes.extend_from_slice(&key_len.to_be_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        Entry(bytes.into_boxed_slice())
    }

    fn key_end(&self) -> usize {
        2 + usize::from(u16::from_be_bytes([self.0[0], self.0[1]]))
    }

    pub(in crate::kv) fn key(&self) -> &[u8] {
        &self.0[2..self.key_end()]
    }

    pub(in crate::kv) fn value(&self) -> &[u8] {
        &self.0[self.key_end()..]
    }

    /// Where its bytes start, and how many there are: for a prefetch.
    pub(in crate::kv) fn extent(&self) -> (*const u8, usize) {
        (self.0.as_ptr(), self.0.len())
    }
}

/// One slot: an entry and its key's hash, or empty (`entry` is `None`, `hash` unused).
#[derive(Debug, Default)]
struct Slot {
    hash: u64,
    entry: Option<Entry>,
}

/// Slots of a table's first allocation: 8.
const MIN_SLOTS: usize = 8;

/// An open-addressing hash table of [`Entry`]s keyed by their key and a hash of it the caller
/// supplies (which must be the same function of the key for every call on one table).
#[derive(Debug, Default)]
pub(in crate::kv) struct Table {
    /// Empty, or a power of two of at least [`MIN_SLOTS`], at most 3/4 full.
    slots: Box<[Slot]>,
    len: usize,
}

impl Table {
    /// Entries held.
    pub(in crate::kv) fn len(&self) -> usize {
        self.len
    }

    /// `true` when the table holds no entry.
    pub(in crate::kv) fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Walks `hash`'s probe sequence: `Ok` with the index of the first slot holding an entry
    /// with that hash and, when `key` is given, that key; `Err` with the index of the empty
    /// slot that ends the walk, where such an entry would go. The table must have slots.
    fn search(&self, hash: u64, key: Option<&[u8]>) -> Result<usize, usize> {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        // Ends: at most 3/4 of the slots are full, so an empty one is met.
        loop {
            let slot = &self.slots[i];
            match &slot.entry {
                None => return Err(i),
                Some(entry) if slot.hash == hash && key.is_none_or(|key| entry.key() == key) => {
                    return Ok(i)
                }
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    /// [`Table::search`]'s found slot, if any; `None` too while the table has no slots.
    fn probe(&self, hash: u64, key: Option<&[u8]>) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        self.search(hash, key).ok()
    }

    /// The index of the slot holding `key`, if any.
    fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        self.probe(hash, Some(key))
    }

    /// The entry of `key`, if any.
    pub(in crate::kv) fn get(&self, hash: u64, key: &[u8]) -> Option<&Entry> {
        let i = self.find(hash, key)?;
        self.slots[i].entry.as_ref()
    }

    /// Puts `entry` (whose key hashes to `hash`) in the table, replacing and returning the
    /// entry of the same key, if any.
    pub(in crate::kv) fn replace(&mut self, hash: u64, entry: Entry) -> Option<Entry> {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        match self.search(hash, Some(entry.key())) {
            Ok(i) => self.slots[i].entry.replace(entry),
            Err(empty) => {
                self.slots[empty] = Slot {
                    hash,
                    entry: Some(entry),
                };
                self.len += 1;
                None
            }
        }
    }

    /// Removes and returns the entry of `key`, if any.
    pub(in crate::kv) fn take(&mut self, hash: u64, key: &[u8]) -> Option<Entry> {
        let mut hole = self.find(hash, key)?;
        let taken = self.slots[hole].entry.take();
        self.len -= 1;
        // Backward shift: each entry after the hole that may move back to it (its home slot
        // is not between the hole and where it sits) does, until an empty slot.
        let mask = self.mask();
        let mut next = (hole + 1) & mask;
        while self.slots[next].entry.is_some() {
            let home = self.slots[next].hash as usize & mask;
            let from_home = next.wrapping_sub(home) & mask;
            let from_hole = next.wrapping_sub(hole) & mask;
            if from_home >= from_hole {
                self.slots.swap(hole, next);
                hole = next;
            }
            next = (next + 1) & mask;
        }
        taken
    }

    /// Doubles the slots (or makes the first [`MIN_SLOTS`]) and puts every entry back by its
    /// kept hash: no key is hashed again.
    fn grow(&mut self) {
        let slots = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(
            &mut self.slots,
            (0..slots).map(|_| Slot::default()).collect(),
        );
        let mask = self.mask();
        for slot in old.into_vec() {
            if slot.entry.is_some() {
                let mut i = slot.hash as usize & mask;
                while self.slots[i].entry.is_some() {
                    i = (i + 1) & mask;
                }
                self.slots[i] = slot;
            }
        }
    }

    /// Every entry, in slot order.
    pub(in crate::kv) fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().filter_map(|slot| slot.entry.as_ref())
    }

    /// The address of the slot a lookup of `hash` reads first (`None` while the table is
    /// empty): for a prefetch, which needs no lock to be safe once it has the address.
    pub(in crate::kv) fn slot_address(&self, hash: u64) -> Option<*const u8> {
        let slot = self.slots.get(hash as usize & self.mask())?;
        Some((slot as *const Slot).cast())
    }

    /// The extent (address and length) of the first entry, in `hash`'s probe sequence, whose key has
    /// that hash: the second read of a lookup, for a prefetch. Compares no key (that would be
    /// the very read the prefetch is for), so it may name another key's entry when two hashes
    /// are equal: as good as any for a hint.
    pub(in crate::kv) fn entry_extent(&self, hash: u64) -> Option<(*const u8, usize)> {
        let i = self.probe(hash, None)?;
        self.slots[i].entry.as_ref().map(Entry::extent)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A deliberately poor hash, so that keys collide and probe runs are long: the low 3 bits
    /// of the key's first byte, and the key's length above them.
    fn crowded(key: &[u8]) -> u64 {
        u64::from(key[0] & 7) | ((key.len() as u64) << 3)
    }

    #[test]
    fn agrees_with_a_hash_map_through_inserts_replaces_and_removals() {
        for hash in [crowded as fn(&[u8]) -> u64, |key: &[u8]| {
            key.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
        }] {
            let mut table = Table::default();
            let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
            // A fixed pseudo-random sequence of operations over 300 keys.
            let mut state = 0x9e37_79b9_7f4a_7c15_u64;
            for step in 0..20_000u32 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let key = format!("{}k{}", (state % 7) as u8, state % 300).into_bytes();
                let h = hash(&key);
                if state.is_multiple_of(3) {
                    let taken = table.take(h, &key);
                    assert_eq!(
                        taken.as_ref().map(|e| e.value().to_vec()),
                        model.remove(&key),
                        "step {step}"
                    );
                } else {
                    let value = step.to_be_bytes().to_vec();
                    let old = table.replace(h, Entry::new(&key, &value));
                    assert_eq!(
                        old.as_ref().map(|e| e.value().to_vec()),
                        model.insert(key.clone(), value),
                        "step {step}"
                    );
                }
                assert_eq!(table.len(), model.len());
            }
            for (key, value) in &model {
                let entry = table.get(hash(key), key).expect("every model key is found");
                assert_eq!(entry.value(), &value[..]);
                assert_eq!(entry.key(), &key[..]);
            }
            assert_eq!(table.iter().count(), model.len());
            assert!(table.get(hash(b"absent"), b"absent").is_none());
            assert!(table.slots.len() >= MIN_SLOTS);
            assert!(table.len() * 4 <= table.slots.len() * 3);
        }
    }

    #[test]
    fn removing_everything_leaves_an_empty_table_that_still_works() {
        let mut table = Table::default();
        assert!(table.is_empty());
        assert!(table.slot_address(1).is_none());
        let keys: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i, i]).collect();
        for key in &keys {
            assert!(table.replace(crowded(key), Entry::new(key, key)).is_none());
        }
        assert_eq!(table.len(), 100);
        // The prefetch's extent is that of an entry whose key has the hash (here, with the
        // crowded hash, one of several), never of another hash's.
        let hash = crowded(&keys[5]);
        let extent = table.entry_extent(hash).expect("the hash is held");
        let same_hash: Vec<_> = keys.iter().filter(|key| crowded(key) == hash).collect();
        assert!(same_hash.len() > 1);
        assert!(same_hash
            .iter()
            .any(|key| table.get(hash, key).map(Entry::extent) == Some(extent)));
        assert_eq!(table.entry_extent(1 << 40), None);
        for key in &keys {
            assert!(table.take(crowded(key), key).is_some(), "{key:?}");
            assert!(table.take(crowded(key), key).is_none());
        }
        assert!(table.is_empty());
        assert!(table.slots.iter().all(|slot| slot.entry.is_none()));
        assert!(table
            .replace(crowded(b"again"), Entry::new(b"again", b"1"))
            .is_none());
        assert_eq!(
            table.get(crowded(b"again"), b"again").map(Entry::value),
            Some(&b"1"[..])
        );
    }
}
