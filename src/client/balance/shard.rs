//! [`Rendezvous`]: which server owns a key, by rendezvous (highest random weight) hashing.

/// 64-bit FNV-1a of `bytes` (draft-eastlake-fnv, Section 2): offset basis
/// `0xcbf29ce484222325`, prime `0x100000001b3`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64's output function (Steele, Lea and Flood, 2014; the constants of Stafford's
/// variant 13, as in Java 8's `SplittableRandom` and Vigna's `splitmix64.c`): a bijection on
/// 64 bits in which every input bit changes about half the output bits.
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The score of the server named `name` for `key`: `mix64(fnv1a64(name) ^ fnv1a64(key))`.
/// The server with the highest score owns the key (see [`Rendezvous`]).
pub fn score(name: &[u8], key: &[u8]) -> u64 {
    mix64(fnv1a64(name) ^ fnv1a64(key))
}

/// Servers by name, and which of them owns a key. Cheap to query: one hash of the key, then
/// one mix per server.
///
/// Every server gets a score for the key; the server with the highest score owns it
/// (Thaler and Ravishankar, "Using name-based mappings to increase hit rates", IEEE/ACM
/// Transactions on Networking 6(1), 1998). The score of server name `s` for key `k` is
///
/// ```text
/// score(s, k) = mix64(fnv1a64(s) XOR fnv1a64(k))
/// ```
///
/// where `fnv1a64` is 64-bit FNV-1a (offset basis `0xcbf29ce484222325`, prime
/// `0x100000001b3`; draft-eastlake-fnv) over the bytes, and `mix64` is the output function
/// of SplitMix64 as Java 8's `SplittableRandom.mix64` and Vigna's `splitmix64.c` have it
/// (Steele, Lea and Flood, OOPSLA 2014, whose paper calls it `mix64variant13`: Stafford's
/// variant 13): `x ^= x >> 30; x *= 0xbf58476d1ce4e5b9; x ^= x >> 27;
/// x *= 0x94d049bb133111eb; x ^= x >> 31`, all wrapping on 64 bits. Equal
/// scores (a chance of about one in 2^64 per pair) go to the name that is greater as bytes.
/// The server's name is its address as the client was given it (`"10.0.0.7:7879"`), so every
/// client given the same names places every key on the same server, whatever the order of
/// its list. `proto-spec/SERVICES.md` Section 2.7 specifies this for clients in other
/// languages, with vectors (`proto-spec/vectors/shards.json`).
///
/// Why rendezvous hashing rather than a ring (ketama) or jump hash: it needs no table and no
/// virtual nodes, and its moves are exactly the minimal ones. Removing a server moves only
/// the keys it owned (to the runners-up), and adding one moves only the keys it now wins:
/// 1/(N+1) of them on average for N servers before. Jump hash (Lamping and Veach, 2014)
/// numbers its buckets, so removing any server but the last renumbers the rest and moves
/// far more; a ketama ring needs 100 to 200 points per server to come near 1/N. The price,
/// N scores per key, is a few nanoseconds each, nothing beside a network round trip for the
/// handful of shards a client talks to.
///
/// # Examples
///
/// ```
/// use courier_rpc::client::balance::Rendezvous;
///
/// let shards = Rendezvous::new(["10.0.0.1:7879", "10.0.0.2:7879", "10.0.0.3:7879"]);
/// let owner = shards.owner(b"user:42");
/// assert!(owner < 3);
/// // The same names in another order place the key on the same server.
/// let reversed = Rendezvous::new(["10.0.0.3:7879", "10.0.0.2:7879", "10.0.0.1:7879"]);
/// assert_eq!(reversed.name(reversed.owner(b"user:42")), shards.name(owner));
/// ```
#[derive(Clone, Debug)]
pub struct Rendezvous {
    names: Vec<String>,
    /// `fnv1a64` of each name, computed once.
    seeds: Vec<u64>,
}

impl Rendezvous {
    /// The servers named `names`, in this order (indices are positions in it).
    ///
    /// # Panics
    /// If `names` is empty: no server can own a key.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Rendezvous {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        assert!(!names.is_empty(), "Rendezvous::new: no server names");
        let seeds = names.iter().map(|n| fnv1a64(n.as_bytes())).collect();
        Rendezvous { names, seeds }
    }

    /// How many servers there are (at least 1).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always false: there is at least one server.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The name of server `index`, as given to [`Rendezvous::new`].
    ///
    /// # Panics
    /// If `index` is not below [`Rendezvous::len`].
    pub fn name(&self, index: usize) -> &str {
        &self.names[index]
    }

    /// The names, in the order given.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The index of the server that owns `key`: the one with the highest
    /// [`score`]; on equal scores, the one whose name is greater as bytes.
    pub fn owner(&self, key: &[u8]) -> usize {
        let k = fnv1a64(key);
        let mut best = 0;
        let mut best_score = mix64(self.seeds[0] ^ k);
        for (i, seed) in self.seeds.iter().enumerate().skip(1) {
            let s = mix64(seed ^ k);
            if s > best_score
                || (s == best_score && self.names[i].as_bytes() > self.names[best].as_bytes())
            {
                best = i;
                best_score = s;
            }
        }
        best
    }

    /// Every server's index, from the owner of `key` down to the lowest scorer: where the key
    /// would go if the servers before it in the list were removed.
    pub fn ranking(&self, key: &[u8]) -> Vec<usize> {
        let k = fnv1a64(key);
        let mut ranked: Vec<(u64, usize)> = self
            .seeds
            .iter()
            .enumerate()
            .map(|(i, seed)| (mix64(seed ^ k), i))
            .collect();
        ranked.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| self.names[b.1].as_bytes().cmp(self.names[a.1].as_bytes()))
        });
        ranked.into_iter().map(|(_, i)| i).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_published_values() {
        // draft-eastlake-fnv, Section 6 (test vectors): "" and "a" and "foobar".
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn mix64_matches_splitmix64() {
        // SplitMix64 seeded with 0: its first output is mix64(0x9e3779b97f4a7c15).
        assert_eq!(mix64(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn owner_ignores_the_order_of_the_names() {
        let a = Rendezvous::new(["s1", "s2", "s3", "s4"]);
        let b = Rendezvous::new(["s4", "s2", "s1", "s3"]);
        for i in 0..2000u32 {
            let key = i.to_be_bytes();
            assert_eq!(a.name(a.owner(&key)), b.name(b.owner(&key)));
            assert_eq!(a.ranking(&key)[0], a.owner(&key));
        }
    }

    #[test]
    fn removing_a_server_moves_only_its_keys_to_the_runner_up() {
        let four = Rendezvous::new(["a:1", "b:1", "c:1", "d:1"]);
        let three = Rendezvous::new(["a:1", "b:1", "d:1"]);
        for i in 0..5000u32 {
            let key = format!("key-{i}");
            let before = four.name(four.owner(key.as_bytes()));
            let after = three.name(three.owner(key.as_bytes()));
            if before == "c:1" {
                let runner_up = four.name(four.ranking(key.as_bytes())[1]);
                assert_eq!(after, runner_up, "{key}");
            } else {
                assert_eq!(after, before, "{key} moved though its server stayed");
            }
        }
    }
}
