#!/usr/bin/env bash
# Seeds the corpora from every vector of proto-spec/vectors/frames.json:
# - decode_frame and chunking: a zero first byte (no chunking prefix), then the vector's bytes;
# - roundtrip: the raw branch (first byte 0) with the vector's bytes, and the same bytes read
#   by the structured branch (first byte 1);
# - connection: the vector's bytes as receive ops.
# - kv_record: small kv log files from the generator below (clean logs, a torn tail, a zero
#   tail, a damaged record before valid ones, records whose checksums match but whose bodies
#   break the format), each after a 0 (read as they are) and after a 1 (checksums fixed first).
# Then copies every file of fuzz/regressions/<target>/ into that target's corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p fuzz/corpus/decode_frame fuzz/corpus/connection fuzz/corpus/chunking fuzz/corpus/roundtrip \
    fuzz/corpus/kv_record
python3 - <<'PY'
import json, pathlib
vectors = json.load(open("proto-spec/vectors/frames.json"))["vectors"]
for v in vectors:
    data = bytes.fromhex(v["hex"])
    pathlib.Path("fuzz/corpus/decode_frame", v["name"]).write_bytes(b"\x00" + data)
    pathlib.Path("fuzz/corpus/chunking", v["name"]).write_bytes(b"\x00" + data)
    pathlib.Path("fuzz/corpus/roundtrip", "raw-" + v["name"]).write_bytes(b"\x00" + data)
    pathlib.Path("fuzz/corpus/roundtrip", "structured-" + v["name"]).write_bytes(b"\x01" + data)
    # connection: op 0 (receive) with a length byte per chunk of at most 255 bytes.
    ops = b"".join(b"\x00" + bytes([len(c)]) + c for c in (data[i:i+255] for i in range(0, len(data), 255)))
    pathlib.Path("fuzz/corpus/connection", v["name"]).write_bytes(ops)

# kv_record: log files as src/kv/record.rs writes them (CRC-32 IEEE, as crc32fast computes).
import struct, zlib
def raw(body, body_len=None):
    head = struct.pack(">II", len(body) if body_len is None else body_len, zlib.crc32(body))
    return head + struct.pack(">I", zlib.crc32(head)) + body
def put(key, value=None):
    op = b"\x01" if value is not None else b"\x02"
    return raw(op + struct.pack(">H", len(key)) + key + (value or b""))
header = b"CKVLOG\x00\x01"
records = [put(b"a", b"1"), put(b"\x00key", b""), put(b"\xff" * 3, bytes(range(40))),
           put(b"a"), put(b"k" * 1024, b"v" * 100), put(b"b", b"2")]
clean = header + b"".join(records)
flipped = bytearray(clean)
flipped[len(header) + len(records[0]) + 14] ^= 0xFF  # the second record's body
logs = {
    "empty": b"",
    "header-only": header,
    "header-torn": header[:5],
    "clean-6": clean,
    "torn-mid-body": clean[:-3],
    "torn-mid-header": clean + records[0][:7],
    "zero-tail": clean + bytes(64),
    "corrupt-then-valid": bytes(flipped),
    "bad-op": header + records[0] + raw(b"\x03\x00\x01kv"),
    "bad-key-length": header + raw(b"\x01\x04\x01k"),
    "delete-with-value": header + raw(b"\x02\x00\x01kv"),
    "body-too-long": header + raw(b"", body_len=1 + 2 + 1024 + 1024 * 1024 + 1),
    "other-version": b"CKVLOG\x00\x02" + records[0],
}
for name, data in logs.items():
    pathlib.Path("fuzz/corpus/kv_record", "raw-" + name).write_bytes(b"\x00" + data)
    pathlib.Path("fuzz/corpus/kv_record", "fixed-" + name).write_bytes(b"\x01" + data)
# Regression inputs stay in the corpus they came from.
for target in ("decode_frame", "chunking", "roundtrip", "kv_record"):
    regressions = pathlib.Path("fuzz/regressions", target)
    if regressions.is_dir():
        for f in sorted(regressions.iterdir()):
            if f.is_file() and not f.name.startswith(".") and f.name != "README.md":
                pathlib.Path("fuzz/corpus", target, "regression-" + f.name).write_bytes(f.read_bytes())
PY
for target in decode_frame chunking roundtrip connection kv_record; do
    echo "fuzz/corpus/$target: $(ls "fuzz/corpus/$target" | wc -l) inputs"
done
