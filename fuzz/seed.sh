#!/usr/bin/env bash
# Seeds the decode_frame corpus with every vector of proto-spec/vectors/frames.json (a zero
# first byte: no chunking prefix, the rest is the vector's bytes).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p fuzz/corpus/decode_frame fuzz/corpus/connection
python3 - <<'PY'
import json, pathlib
vectors = json.load(open("proto-spec/vectors/frames.json"))["vectors"]
for v in vectors:
    data = bytes.fromhex(v["hex"])
    pathlib.Path("fuzz/corpus/decode_frame", v["name"]).write_bytes(b"\x00" + data)
    # connection: op 0 (receive) with a length byte per chunk of at most 255 bytes.
    ops = b"".join(b"\x00" + bytes([len(c)]) + c for c in (data[i:i+255] for i in range(0, len(data), 255)))
    pathlib.Path("fuzz/corpus/connection", v["name"]).write_bytes(ops)
PY
echo "seeded $(ls fuzz/corpus/decode_frame | wc -l) inputs per target"
