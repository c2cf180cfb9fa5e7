#!/usr/bin/env python3
"""Test vectors for client-side sharding of the kv service (SERVICES.md Section 2.7).

Run from the repository root:

    python3 proto-spec/gen_shard_vectors.py

It (re)writes proto-spec/vectors/shards.json; the output is deterministic. Standard library
only. The functions below are written from the published definitions (FNV-1a 64 from
draft-eastlake-fnv, the SplitMix64 finalizer from Steele, Lea and Flood), independently of the
Rust code, so the Rust test (tests/shard_vectors.rs) checks the library against them; before
writing, the generator checks itself against the published values.
"""

import json
import os

MASK = (1 << 64) - 1
FNV_OFFSET_BASIS = 0xcbf29ce484222325   # draft-eastlake-fnv, Section 2
FNV_PRIME = 0x100000001b3


def fnv1a64(data):
    """64-bit FNV-1a of the bytes `data`."""
    h = FNV_OFFSET_BASIS
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK
    return h


def mix64(x):
    """The finalizer of SplitMix64: x ^= x >> 30; x *= C1; x ^= x >> 27; x *= C2;
    x ^= x >> 31, on 64 bits."""
    x ^= x >> 30
    x = (x * 0xbf58476d1ce4e5b9) & MASK
    x ^= x >> 27
    x = (x * 0x94d049bb133111eb) & MASK
    return x ^ (x >> 31)


def score(name, key):
    """The score of the server named `name` (bytes) for `key` (bytes)."""
    return mix64(fnv1a64(name) ^ fnv1a64(key))


def owner(names, key):
    """The name (bytes) that owns `key`: the highest score; equal scores to the greater name."""
    return max(names, key=lambda name: (score(name, key), name))


def u64(x):
    """A u64 in the file: 16 lowercase hex digits (JSON numbers cannot hold every u64)."""
    return "%016x" % x


def self_check():
    # draft-eastlake-fnv, Section 6 (test vectors).
    assert fnv1a64(b"") == 0xcbf29ce484222325
    assert fnv1a64(b"a") == 0xaf63dc4c8601ec8c
    assert fnv1a64(b"foobar") == 0x85944171f73967e8
    # SplitMix64 seeded with 0: its first output is mix64(0x9e3779b97f4a7c15).
    assert mix64(0x9e3779b97f4a7c15) == 0xe220a8397b1dcdaf


THREE = ["10.0.0.1:7879", "10.0.0.2:7879", "10.0.0.3:7879"]
FOUR = THREE + ["10.0.0.4:7879"]

# Keys as bytes: the empty key (the function is defined for it, though kv refuses it), keys
# in courier-bench's form, text, UTF-8 and bytes that are not UTF-8.
KEYS = [
    b"",
    b"a",
    b"foobar",
    b"user:42",
    b"user:43",
    b"key:0000000000",
    b"key:0000000001",
    b"key:0000000002",
    b"key:0000099999",
    b"session/7f3a9c",
    b"h\xc3\xa9llo",                 # "héllo" in UTF-8
    "\u65e5\u672c".encode("utf-8"),  # two CJK characters
    b"\x00",
    b"\x00\x00\x00\x00",
    b"\xff",
    b"\xff\xfe\xfd\x80",
    bytes(range(32)),
    b"k" * 1024,                     # the longest key kv takes
    b"10.0.0.1:7879",                # a key equal to a server's name
    b" ",
]


def build():
    fnv = [{"hex": k.hex(), "fnv1a64": u64(fnv1a64(k))}
           for k in [b"", b"a", b"foobar", b"10.0.0.1:7879", b"[::1]:7001", b"\xff\x00"]]
    mixes = [{"in": u64(x), "mix64": u64(mix64(x))}
             for x in [0, 1, 0x9e3779b97f4a7c15, MASK, 0x0123456789abcdef]]
    scores = []
    for name in ["10.0.0.1:7879", "10.0.0.2:7879", "kv-a.example:7879", "[::1]:7001"]:
        for key in [b"", b"user:42", b"key:0000000000", b"\xff\xfe"]:
            scores.append({"name": name, "key_hex": key.hex(),
                           "score": u64(score(name.encode(), key))})
    owners = []
    for names in (THREE, FOUR):
        raw = [n.encode() for n in names]
        owners.append({
            "names": names,
            "keys": [{"key_hex": k.hex(), "owner": owner(raw, k).decode()} for k in KEYS],
        })
    return {"fnv1a64": fnv, "mix64": mixes, "score": scores, "owner": owners}


def main():
    self_check()
    vectors = build()
    three, four = vectors["owner"]
    for a, b in zip(three["keys"], four["keys"]):
        # Adding a server moves a key only to it.
        assert a["owner"] == b["owner"] or b["owner"] == FOUR[-1], (a, b)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors", "shards.json")
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        json.dump(vectors, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    print("wrote %s: %d fnv1a64, %d mix64, %d score, %d owner vectors" % (
        os.path.relpath(out), len(vectors["fnv1a64"]), len(vectors["mix64"]),
        len(vectors["score"]), sum(len(o["keys"]) for o in vectors["owner"])))


if __name__ == "__main__":
    main()
