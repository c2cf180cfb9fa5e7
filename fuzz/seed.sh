#!/usr/bin/env bash
# Seeds the corpora from every vector of proto-spec/vectors/frames.json:
# - decode_frame and chunking: a zero first byte (no chunking prefix), then the vector's bytes;
# - roundtrip: the raw branch (first byte 0) with the vector's bytes, and the same bytes read
#   by the structured branch (first byte 1);
# - connection: the vector's bytes as receive ops.
# - preauth: the same receive ops (its op 0 reads like connection's), then sequences of its own
#   ops: AUTH with the right token, wrong ones and ones around the 1,024-byte limit, echoes
#   below and above the 16 KiB pre-auth limit, the kv-like request, WHOAMI, reads of 1 and 37
#   bytes, partial flushes, time steps, a drain, and AUTH frames written by hand as raw bytes.
# - tls_accept: ClientHellos (the one tests/support/mod.rs builds, TLS 1.2 only; and one made by
#   Python's ssl module, TLS 1.3 with ALPN courier/1, new each time the script runs), whole and
#   in chunks, for the configuration without and with a client CA; and plaintext courier frames.
# - client_core: a config byte (0: ids from 1; 1: ids from just below the wrap), then ops as
#   fuzz/fuzz_targets/client_core.rs reads them: three requests, then each vector's bytes as
#   server bytes, then every outcome taken; and sequences of its own (responses out of order,
#   GOAWAY then the end of the stream or an ERROR, PINGs both ways, timeouts and late answers,
#   AUTH answered and refused, one-byte reads, a 4,000-byte body, damaged frames, a header
#   over the body limit, ids across the wrap, a broken connection's read of 5,000 bytes).
# - kv_record: small kv log files from the generator below (clean logs, a torn tail, a zero
#   tail, a damaged record before valid ones, records whose checksums match but whose bodies
#   break the format), each after a 0 (read as they are) and after a 1 (checksums fixed first).
# Then copies every file of fuzz/regressions/<target>/ into that target's corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p fuzz/corpus/decode_frame fuzz/corpus/connection fuzz/corpus/chunking fuzz/corpus/roundtrip \
    fuzz/corpus/kv_record fuzz/corpus/preauth fuzz/corpus/tls_accept fuzz/corpus/client_core
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
    pathlib.Path("fuzz/corpus/preauth", v["name"]).write_bytes(ops)
    # client_core: ids from 1, three requests (no deadline, no payload), the bytes, take all.
    pathlib.Path("fuzz/corpus/client_core", v["name"]).write_bytes(
        b"\x00" + b"\x02\x00\x00" * 3 + ops + b"\x0c")

# kv_record: log files as src/kv/log/record.rs writes them (CRC-32 IEEE, as crc32fast computes).
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
# preauth: op bytes as fuzz/fuzz_targets/preauth.rs reads them (low nibble: the op; bits 4-5:
# the step's read cap; bits 6-7: its flush room; 0 for both reads and flushes everything).
def frame(kind, request_id, word, payload):
    head = b"COUR" + bytes([1, kind]) + struct.pack(">HQIII", 0, request_id, word, 0, len(payload))
    head += struct.pack(">I", zlib.crc32(payload))
    return head + struct.pack(">I", zlib.crc32(head)) + payload
def receive(data):
    return b"".join(b"\x00" + bytes([len(c)]) + c for c in (data[i:i+255] for i in range(0, len(data), 255)))
AUTH, WRONG, ECHO, KV, WHOAMI, PING, READ, EOF, TIME, DRAIN = (bytes([op]) for op in (2, 3, 4, 6, 7, 8, 9, 10, 11, 12))
def echo(size, fill=0x61):
    return ECHO + struct.pack(">H", size) + bytes([fill])
def wrong(token):
    return WRONG + bytes([len(token)]) + token
preauth = {
    "auth-echo-kv-whoami": AUTH + echo(100) + KV + WHOAMI,
    "before-auth-echo-kv-whoami-then-auth": echo(10) + KV + WHOAMI + AUTH + echo(10) + KV + WHOAMI,
    "echo-40k-after-auth": AUTH + echo(40000, 0x62) + WHOAMI,
    "echo-20k-before-auth": echo(20000, 0x63) + AUTH,
    "echo-16k-at-limit-before-auth": echo(16384) + echo(16385),
    "three-wrong-auths": wrong(b"wrong") + wrong(b"") + wrong(b"fuzz-toke") + AUTH + echo(1),
    "wrong-then-right": wrong(b"nope") + AUTH + wrong(b"again") + echo(5) + wrong(b"last") + echo(6),
    "tokens-around-1024": WRONG + b"\x98" + WRONG + b"\x99" + AUTH,
    "auth-in-one-byte-reads": bytes([0x12]) + bytes([0x1d]) * 80 + echo(3) + bytes([0x1d]) * 80,
    "auth-in-37-byte-reads-no-flush": bytes([0x62]) + bytes([0x6d]) * 4 + echo(300) + bytes([0xad]) * 8,
    "ping-whoami-eof": PING + b"\x07" + WHOAMI + AUTH + EOF,
    "frame-timeout": receive(frame(1, 9, 1 << 16 | 1, b"x" * 50)[:40]) + TIME + b"\x1f",
    "idle-timeout": AUTH + TIME + b"\xff" + TIME + b"\xff",
    "drain-after-auth": AUTH + echo(7) + DRAIN + echo(8),
    "raw-auth-then-echo": receive(frame(1, 1, 2, b"fuzz-token") + frame(1, 2, 1 << 16 | 1, b"hi")),
    "raw-wrong-auth-three-times": receive(b"".join(frame(1, i, 2, b"bad") for i in (1, 2, 3))),
    "raw-whoami-then-kv": receive(frame(1, 4, 3, b"") + frame(1, 5, 2 << 16 | 1, b"k")),
}
for name, data in preauth.items():
    pathlib.Path("fuzz/corpus/preauth", name).write_bytes(data)

# client_core: op bytes as fuzz/fuzz_targets/client_core.rs reads them (low nibble: the op;
# high nibble: its variant), after the config byte.
def cc_req(deadline=0, payload=1):
    return b"\x02" + bytes([deadline, payload])
CC_PING = lambda t=25: b"\x04" + bytes([t])
CC_AUTH = b"\x45\x05"  # a 5-byte token, 200 ms
CC_TAKE = b"\x07\x00"  # the call with the lowest id
CC_TIME = lambda ms: b"\x08" + bytes([ms])
CC_TIMEOUT, CC_WRITE, CC_EOF, CC_TAKE_ALL, CC_DISCARD = b"\x09", b"\x0a\x00", b"\x0b", b"\x0c", b"\x0d"
def cc_big(data):
    # op 1: the length byte counts 32-byte units.
    n = (len(data) + 31) // 32
    return b"\x01" + bytes([n]) + data + bytes(n * 32 - len(data))
def damaged(data, at):
    data = bytearray(data)
    data[at] ^= 0x01
    return bytes(data)
resp = lambda i, payload=b"": frame(2, i, 0, payload)
big_header = frame(2, 1, 0, b"")[:24] + struct.pack(">II", 5000, 0)
big_header += struct.pack(">I", zlib.crc32(big_header))
client_core = {
    "out-of-order": b"\x00" + cc_req() * 3 + CC_WRITE
        + receive(resp(3, b"c") + resp(1, b"a") + resp(2, b"b")) + CC_TAKE * 3,
    "across-the-wrap": b"\x01" + cc_req() * 4 + CC_WRITE
        + receive(resp(2**64 - 1, b"max") + resp(1, b"one")) + CC_TAKE_ALL,
    "goaway-then-eof": b"\x00" + cc_req() * 4
        + receive(frame(5, 2, 0, b"bye") + resp(1)) + cc_req() + CC_EOF + CC_TAKE_ALL,
    "goaway-then-error": b"\x00" + cc_req() * 3
        + receive(frame(5, 1, 0, b"") + frame(5, 0, 0, b"") + frame(6, 0, 13, b"boom")) + CC_TAKE_ALL,
    "ping-pong": b"\x00" + CC_PING() + CC_WRITE + CC_TIME(5) + receive(frame(4, 1, 0, b""))
        + CC_TAKE + CC_PING(1) + CC_TIME(9) + CC_TIMEOUT + CC_TAKE,
    "server-pings": b"\x00" + cc_req() + receive(frame(3, 7, 0, b"") * 3) + b"\x0a\x05" + CC_WRITE,
    "timeouts-late-answer": b"\x00" + cc_req(1) + cc_req(50) + bytes([0x12, 9, 3]) + CC_TIME(10)
        + CC_TIMEOUT + receive(resp(1, b"late")) + CC_TAKE * 3,
    "auth-ok": b"\x00" + CC_AUTH + CC_WRITE + receive(resp(1, b"alice")) + CC_TAKE + cc_req(),
    "auth-refused": b"\x00" + CC_AUTH + receive(frame(2, 1, 16, b"unknown token")) + CC_DISCARD
        + CC_TAKE,
    "one-byte-reads": b"\x00" + cc_req() + b"".join(b"\x00\x01" + bytes([c]) for c in resp(1, b"hello"))
        + CC_TAKE,
    "body-4000": b"\x00" + cc_req(0, 200) + CC_WRITE + cc_big(resp(1, b"x" * 4000)) + CC_TAKE,
    "header-over-the-limit": b"\x00" + cc_req() + receive(big_header) + CC_TAKE,
    "header-damaged": b"\x00" + cc_req() * 2 + receive(damaged(resp(1, b"a"), 12) + resp(2)) + CC_TAKE_ALL,
    "body-damaged": b"\x00" + cc_req() * 2 + receive(damaged(resp(1, b"abc"), 37) + resp(2)) + CC_TAKE_ALL,
    "request-from-server": b"\x00" + cc_req() + receive(frame(1, 1, 1 << 16 | 1, b"?")) + CC_TAKE,
    # One read of more than a frame's worth after a header that breaks the connection: none
    # of it may stay buffered.
    "header-damaged-then-5000-bytes": b"\x00" + cc_req() + b"\x01\xa0"
        + damaged(resp(1, b"a"), 12) + b"x" * 5000,
}
for name, data in client_core.items():
    pathlib.Path("fuzz/corpus/client_core", name).write_bytes(data)

# tls_accept: byte 0 = client CA (bit 0) | number of chunk sizes << 1, then the sizes, then the
# stream. The ClientHello of tests/support/mod.rs's tls_client_hello():
host = b"localhost"
ext = b"\x00\x00" + struct.pack(">HHBH", len(host) + 5, len(host) + 3, 0, len(host)) + host
ext += bytes([0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17])
ext += bytes([0x00, 0x0b, 0x00, 0x02, 0x01, 0x00])
ext += bytes([0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x01, 0x04, 0x03])
suites = bytes([0xc0, 0x2f, 0xc0, 0x2b, 0x00, 0x9c, 0x00, 0x2f])
hello = b"\x03\x03" + bytes((i * 37 + 11) & 0xff for i in range(32)) + b"\x00"
hello += struct.pack(">H", len(suites)) + suites + b"\x01\x00" + struct.pack(">H", len(ext)) + ext
handshake = b"\x01" + struct.pack(">I", len(hello))[1:] + hello
hellos = {"tls12-hello": b"\x16\x03\x01" + struct.pack(">H", len(handshake)) + handshake}
# A TLS 1.3 ClientHello (ALPN courier/1, x25519 key share) as OpenSSL writes it.
try:
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["courier/1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hellos["tls13-hello"] = outgoing.read()
except Exception as e:  # no ssl module: the hand-made hello is still there
    print(f"tls_accept: no OpenSSL ClientHello ({e})")
for name, data in hellos.items():
    for ca in (0, 1):
        tail = "-client-ca" if ca else ""
        pathlib.Path("fuzz/corpus/tls_accept", name + tail).write_bytes(bytes([ca]) + data)
        # In chunks of 1, 5 and 40 bytes: record header, handshake header, the rest.
        pathlib.Path("fuzz/corpus/tls_accept", name + "-chunked" + tail).write_bytes(
            bytes([3 << 1 | ca, 1, 5, 40]) + data)
    # The hello followed by a courier frame, as a confused client might send.
    pathlib.Path("fuzz/corpus/tls_accept", name + "-then-frame").write_bytes(
        b"\x00" + data + frame(3, 1, 0, b""))
for name in ("request_echo", "ping", "request_admin_auth", "bad_magic_http_request",
             "bad_magic_tls_client_hello"):
    if name in {v["name"] for v in vectors}:
        data = bytes.fromhex(next(v["hex"] for v in vectors if v["name"] == name))
        pathlib.Path("fuzz/corpus/tls_accept", "plaintext-" + name).write_bytes(b"\x00" + data)
# Regression inputs stay in the corpus they came from.
for target in ("decode_frame", "chunking", "roundtrip", "kv_record", "preauth", "tls_accept",
               "client_core"):
    regressions = pathlib.Path("fuzz/regressions", target)
    if regressions.is_dir():
        for f in sorted(regressions.iterdir()):
            if f.is_file() and not f.name.startswith(".") and f.name != "README.md":
                pathlib.Path("fuzz/corpus", target, "regression-" + f.name).write_bytes(f.read_bytes())
PY
for target in decode_frame chunking roundtrip connection kv_record preauth tls_accept client_core; do
    echo "fuzz/corpus/$target: $(ls "fuzz/corpus/$target" | wc -l) inputs"
done
