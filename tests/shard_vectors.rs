//! Client-side sharding (`courier_rpc::client::balance`) against `proto-spec/vectors/shards.json`
//! (`proto-spec/SERVICES.md` Section 2.7), which `proto-spec/gen_shard_vectors.py` writes from
//! the published definitions of FNV-1a 64 and SplitMix64 independently of the Rust code: every
//! hash, score and owner in the file is what the library computes. And how many keys move when
//! a server is added, measured.

use courier_rpc::client::balance::{fnv1a64, mix64, score, Rendezvous};
use serde_json::Value;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/proto-spec/vectors/shards.json"
);

fn vectors() -> Value {
    let text = std::fs::read_to_string(VECTORS).expect("read proto-spec/vectors/shards.json");
    serde_json::from_str(&text).expect("shards.json is JSON")
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn u64_of(v: &Value) -> u64 {
    let text = v.as_str().expect("a u64 is a string of 16 hex digits");
    assert_eq!(text.len(), 16, "{text:?}");
    u64::from_str_radix(text, 16).expect("hex u64")
}

fn list<'a>(v: &'a Value, field: &str) -> &'a Vec<Value> {
    let list = v[field].as_array().expect("a list");
    assert!(!list.is_empty(), "no {field} vectors");
    list
}

#[test]
fn fnv1a64_and_mix64_match_the_vectors() {
    let v = vectors();
    for case in list(&v, "fnv1a64") {
        let input = hex(case["hex"].as_str().expect("hex"));
        assert_eq!(fnv1a64(&input), u64_of(&case["fnv1a64"]), "{case}");
    }
    for case in list(&v, "mix64") {
        assert_eq!(mix64(u64_of(&case["in"])), u64_of(&case["mix64"]), "{case}");
    }
}

#[test]
fn scores_match_the_vectors() {
    let v = vectors();
    for case in list(&v, "score") {
        let name = case["name"].as_str().expect("name");
        let key = hex(case["key_hex"].as_str().expect("key_hex"));
        assert_eq!(
            score(name.as_bytes(), &key),
            u64_of(&case["score"]),
            "{case}"
        );
    }
}

#[test]
fn owners_match_the_vectors_in_any_order_of_the_names() {
    let v = vectors();
    let lists = list(&v, "owner");
    assert_eq!(lists.len(), 2, "a 3-name and a 4-name list");
    let mut checked = 0;
    for case in lists {
        let names: Vec<&str> = case["names"]
            .as_array()
            .expect("names")
            .iter()
            .map(|n| n.as_str().expect("a name"))
            .collect();
        let shards = Rendezvous::new(names.iter().copied());
        let mut reversed_names = names.clone();
        reversed_names.reverse();
        let reversed = Rendezvous::new(reversed_names);
        for key in list(case, "keys") {
            let bytes = hex(key["key_hex"].as_str().expect("key_hex"));
            let owner = key["owner"].as_str().expect("owner");
            assert_eq!(shards.name(shards.owner(&bytes)), owner, "{key}");
            assert_eq!(reversed.name(reversed.owner(&bytes)), owner, "{key}");
            assert_eq!(shards.ranking(&bytes)[0], shards.owner(&bytes), "{key}");
            checked += 1;
        }
    }
    assert!(checked >= 40, "{checked} owner vectors");
    // The list holds the empty key and bytes that are not UTF-8.
    let keys = list(&lists[0], "keys");
    assert!(keys.iter().any(|k| k["key_hex"] == ""));
    assert!(keys
        .iter()
        .any(|k| std::str::from_utf8(&hex(k["key_hex"].as_str().unwrap())).is_err()));
}

/// The fraction of `keys` keys (`key:NNNNNNNNNN`) whose owner changes from `before` to
/// `after`, which has one name more; panics if a key moves anywhere but to the new name.
fn moved_fraction(before: &Rendezvous, after: &Rendezvous, keys: u64) -> f64 {
    let added = after.name(after.len() - 1);
    let mut moved = 0u64;
    for n in 0..keys {
        let key = format!("key:{n:010}");
        let old = before.name(before.owner(key.as_bytes()));
        let new = after.name(after.owner(key.as_bytes()));
        if old != new {
            assert_eq!(
                new, added,
                "{key} moved from {old} to {new}, not to the new server"
            );
            moved += 1;
        }
    }
    moved as f64 / keys as f64
}

/// Adding a server to N moves only keys to it, about 1/(N+1) of them: measured over 100,000
/// keys for N = 1 to 9, with names in the form a client is given (`10.0.0.X:7879`).
#[test]
fn adding_a_server_moves_about_one_in_n_plus_1_keys_and_only_to_it() {
    const KEYS: u64 = 100_000;
    let name = |i: usize| format!("10.0.0.{}:7879", i + 1);
    for n in 1..10usize {
        let before = Rendezvous::new((0..n).map(name));
        let after = Rendezvous::new((0..=n).map(name));
        let fraction = moved_fraction(&before, &after, KEYS);
        let ideal = 1.0 / (n + 1) as f64;
        eprintln!(
            "{n} -> {} servers: {fraction:.4} of {KEYS} keys moved (1/(N+1) = {ideal:.4}, \
             ratio {:.3})",
            n + 1,
            fraction / ideal
        );
        // Deterministic for these names and keys. A perfect hash would be off by binomial
        // noise alone, about 1% of 1/(N+1) at N = 9 over 100,000 keys; 5% leaves room for the
        // unevenness between particular names, and still catches a biased hash.
        assert!(
            (fraction - ideal).abs() < 0.05 * ideal,
            "{n} -> {}: {fraction} moved, expected about {ideal}",
            n + 1
        );
    }
}
