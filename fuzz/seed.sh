#!/usr/bin/env bash
# Seeds the corpora from every vector of proto-spec/vectors/frames.json:
# - decode_frame and chunking: a zero first byte (no chunking prefix), then the vector's bytes;
# - roundtrip: the raw branch (first byte 0) with the vector's bytes, and the same bytes read
#   by the structured branch (first byte 1);
# - connection: the vector's bytes as receive ops.
# Then copies every file of fuzz/regressions/<target>/ into that target's corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p fuzz/corpus/decode_frame fuzz/corpus/connection fuzz/corpus/chunking fuzz/corpus/roundtrip
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
# Regression inputs stay in the corpus they came from.
for target in ("decode_frame", "chunking", "roundtrip"):
    regressions = pathlib.Path("fuzz/regressions", target)
    if regressions.is_dir():
        for f in sorted(regressions.iterdir()):
            if f.is_file() and not f.name.startswith(".") and f.name != "README.md":
                pathlib.Path("fuzz/corpus", target, "regression-" + f.name).write_bytes(f.read_bytes())
PY
for target in decode_frame chunking roundtrip connection; do
    echo "fuzz/corpus/$target: $(ls "fuzz/corpus/$target" | wc -l) inputs"
done
