#!/usr/bin/env python3
"""Test vectors for the message encodings of SERVICES.md Section 4.

Run from the repository root:

    python3 proto-spec/gen_message_vectors.py

It (re)writes proto-spec/vectors/messages.json; the output is deterministic.
Standard library only. The CBOR encoder below is written from RFC 8949
(Sections 3 and 4.2.1: the head of each item in its shortest form) and the
JSON from RFC 8259, independently of the Rust crates the library uses, so the
Rust test (tests/message_vectors.rs) checks the library against the RFCs.
"""

import json
import os
import struct


# ---------------------------------------------------------------------------
# A small CBOR encoder (RFC 8949): unsigned and negative integers, text
# strings, arrays, maps with text keys, null, booleans and half-precision
# floats, each head in its shortest form.
# ---------------------------------------------------------------------------

class Half(float):
    """A float to encode as IEEE 754 half precision (major type 7, 25)."""


def head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    for extra, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | extra]) + struct.pack(fmt, n)
    raise ValueError(n)


def cbor(value):
    if value is None:
        return b"\xf6"
    if value is True:
        return b"\xf5"
    if value is False:
        return b"\xf4"
    if isinstance(value, Half):
        return b"\xf9" + struct.pack(">e", value)
    if isinstance(value, int):
        return head(0, value) if value >= 0 else head(1, -1 - value)
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return head(3, len(raw)) + raw
    if isinstance(value, list):
        return head(4, len(value)) + b"".join(cbor(v) for v in value)
    if isinstance(value, dict):  # in insertion order: serde writes fields in declaration order
        return head(5, len(value)) + b"".join(cbor(k) + cbor(v) for k, v in value.items())
    raise TypeError(type(value))


def to_json(value):
    """JSON as serde_json writes it: no spaces, fields in declaration order."""
    if isinstance(value, Half):
        value = float(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------------------
# The vectors. "type" names a type the Rust test declares with serde (shown in
# SERVICES.md Section 4.3); "value" is the value in JSON.
# ---------------------------------------------------------------------------

USER = {"id": 300, "name": "ada", "roles": ["Admin", {"Guest": {"until": 9}}],
        "email": None, "score": Half(1.5)}


def build():
    vectors = []

    def fixed(name, rust_type, value, raw):
        vectors.append({"name": name, "encoding": "fixed", "type": rust_type,
                        "value": value, "hex": raw.hex()})

    fixed("u8", "u8", 7, struct.pack(">B", 7))
    fixed("u16", "u16", 258, struct.pack(">H", 258))
    fixed("u32", "u32", 4000000000, struct.pack(">I", 4000000000))
    fixed("i32_negative", "i32", -2, struct.pack(">i", -2))
    fixed("u64", "u64", 72623859790382856, struct.pack(">Q", 72623859790382856))
    fixed("i64_min", "i64", -9223372036854775808, struct.pack(">q", -9223372036854775808))
    fixed("bool_true", "bool", True, b"\x01")
    fixed("bool_false", "bool", False, b"\x00")
    fixed("string", "String", "héllo", "héllo".encode("utf-8"))
    fixed("empty", "()", None, b"")

    def serde(name, rust_type, value):
        vectors.append({"name": name + "_cbor", "encoding": "cbor", "type": rust_type,
                        "value": json.loads(to_json(value)), "hex": cbor(value).hex()})
        vectors.append({"name": name + "_json", "encoding": "json", "type": rust_type,
                        "value": json.loads(to_json(value)),
                        "hex": to_json(value).encode("utf-8").hex()})

    serde("user", "User", USER)
    serde("user_no_roles", "User",
          {"id": 0, "name": "", "roles": [], "email": "a@b.c", "score": Half(-0.25)})
    serde("integers", "Vec<i64>", [0, 23, 24, 255, 256, 65536, 4294967296, -1, -24, -25, -257])
    serde("unit_variant", "Role", "Admin")
    serde("struct_variant", "Role", {"Guest": {"until": 4294967295}})

    def invalid(name, encoding, rust_type, raw, why):
        vectors.append({"name": name, "encoding": encoding, "type": rust_type,
                        "hex": raw.hex(), "error": why})

    invalid("u32_short", "fixed", "u32", b"\x00\x01\x02", "3 bytes, not 4")
    invalid("u16_long", "fixed", "u16", b"\x00\x01\x02", "3 bytes, not 2")
    invalid("bool_two", "fixed", "bool", b"\x02", "a bool is 0 or 1")
    invalid("string_not_utf8", "fixed", "String", b"\xff", "not UTF-8")
    invalid("empty_not_empty", "fixed", "()", b"\x00", "the empty message has no bytes")
    invalid("cbor_trailing", "cbor", "Role", cbor("Admin") + b"\x00", "a byte after the value")
    invalid("cbor_truncated", "cbor", "User", cbor(USER)[:-3], "the value is cut short")
    invalid("cbor_wrong_type", "cbor", "User", cbor(7), "an integer, not a map")
    invalid("cbor_unknown_variant", "cbor", "Role", cbor("Owner"), "no such variant")
    invalid("json_trailing", "json", "Role", b'"Admin" 1', "text after the value")
    return vectors


def main():
    vectors = build()
    names = [v["name"] for v in vectors]
    assert len(names) == len(set(names)), "duplicate vector names"
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors", "messages.json")
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        json.dump({"vectors": vectors}, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    print("wrote %s: %d vectors" % (os.path.relpath(out), len(vectors)))


if __name__ == "__main__":
    main()
