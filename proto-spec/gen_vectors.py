#!/usr/bin/env python3
"""Reference encoder/decoder and test-vector generator for the courier wire protocol, version 1.

Run from the repository root:

    python3 proto-spec/gen_vectors.py

It (re)writes proto-spec/vectors/frames.json. The output is deterministic.
Standard library only. The normative text is proto-spec/PROTOCOL.md; the JSON
schema is described in proto-spec/vectors/README.md.

The first part of this file (constants, encode_*, decode) is a small reference
implementation of the framing layer and can be read or reused on its own.
"""

import json
import os
import struct
import zlib

# ---------------------------------------------------------------------------
# Constants (PROTOCOL.md sections 3 to 9)
# ---------------------------------------------------------------------------

MAGIC = b"COUR"
VERSION = 1
HEADER_LEN = 36
DEFAULT_MAX_BODY_LEN = 4 * 1024 * 1024  # 4,194,304

KINDS = {"REQUEST": 1, "RESPONSE": 2, "PING": 3, "PONG": 4, "GOAWAY": 5, "ERROR": 6}
KIND_NAMES = {v: k for k, v in KINDS.items()}

FLAG_METADATA = 0x0001
KNOWN_FLAGS = FLAG_METADATA

MAX_METADATA_SECTION = 16384  # max S
MAX_METADATA_ENTRIES = 64

STATUS_NAMES = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
]
STATUS = {name: code for code, name in enumerate(STATUS_NAMES)}

# SERVICES.md section 0: the admin service's methods, and WHOAMI's identity sources.
ADMIN_SERVICE, ADMIN_STATS, ADMIN_AUTH, ADMIN_WHOAMI, ADMIN_METHODS = 0, 1, 2, 3, 4
IDENTITY_SOURCES = {"anonymous": 0, "certificate": 1, "token": 2, "custom": 3}
MAX_TOKEN_LEN = 1024

# Decode error code -> (fatal, status a server answers with), in check order.
DECODE_ERRORS = {
    "BAD_MAGIC": (True, STATUS["INVALID_ARGUMENT"]),
    "UNSUPPORTED_VERSION": (True, STATUS["UNIMPLEMENTED"]),
    "UNKNOWN_KIND": (True, STATUS["INVALID_ARGUMENT"]),
    "HEADER_CHECKSUM": (True, STATUS["DATA_LOSS"]),
    "FRAME_TOO_LARGE": (True, STATUS["RESOURCE_EXHAUSTED"]),
    "INVALID_FLAGS": (True, STATUS["INVALID_ARGUMENT"]),
    "RESERVED_NOT_ZERO": (True, STATUS["INVALID_ARGUMENT"]),
    "BODY_CHECKSUM": (False, STATUS["DATA_LOSS"]),
    "INVALID_METADATA": (False, STATUS["INVALID_ARGUMENT"]),
    "INVALID_UTF8": (False, STATUS["INVALID_ARGUMENT"]),
}


def crc32(data):
    """CRC-32/ISO-HDLC: poly 0x04C11DB7 reflected (0xEDB88320), init and xorout 0xFFFFFFFF."""
    return zlib.crc32(data) & 0xFFFFFFFF


assert crc32(b"123456789") == 0xCBF43926
assert crc32(b"") == 0


def status_name(code):
    return STATUS_NAMES[code] if code < len(STATUS_NAMES) else None


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


def route_word(service, method):
    """The 32-bit word at offset 16 of a REQUEST: service id (high 16 bits), method id (low 16)."""
    return (service << 16) | method


def encode_header(kind, flags, request_id, word, deadline_ms, body_len, body_crc,
                  header_crc=None, magic=MAGIC, version=VERSION):
    """Encode the 36-byte header. `kind` is the numeric kind; `word` is the u32 at offset 16
    (route_word(...) for REQUEST, the status otherwise). If header_crc is None it is computed.
    magic/version/header_crc are parameters only so that invalid vectors can be built."""
    first = magic + struct.pack(">BBHQIIII", version, kind, flags, request_id, word,
                                deadline_ms, body_len, body_crc)
    assert len(first) == 32
    if header_crc is None:
        header_crc = crc32(first)
    return first + struct.pack(">I", header_crc)


def encode_metadata_entry(key, value):
    """One entry: u8 K | key | u16 V | value. No validation (used for invalid vectors too)."""
    return struct.pack(">B", len(key)) + key + struct.pack(">H", len(value)) + value


def encode_metadata(entries):
    """Encode a metadata section (u16 S, then the entries) from a list of (key, value) bytes.
    Enforces every rule of PROTOCOL.md section 6; raises ValueError otherwise."""
    if not entries:
        raise ValueError("an empty metadata list is encoded by clearing the METADATA flag")
    if len(entries) > MAX_METADATA_ENTRIES:
        raise ValueError("more than 64 metadata entries")
    out = b""
    for key, value in entries:
        if not 1 <= len(key) <= 255:
            raise ValueError("metadata key length must be 1..=255")
        if any(b < 0x21 or b > 0x7E for b in key):
            raise ValueError("metadata key bytes must be in 0x21..=0x7E")
        if len(value) > 0xFFFF:
            raise ValueError("metadata value longer than 65535")
        out += encode_metadata_entry(key, value)
    if len(out) > MAX_METADATA_SECTION:
        raise ValueError("metadata section longer than 16384")
    return struct.pack(">H", len(out)) + out


def encode_frame(kind, request_id, *, service=0, method=0, status=0, deadline_ms=0,
                 metadata=(), payload=b"", max_body_len=DEFAULT_MAX_BODY_LEN):
    """Encode one canonical frame. `kind` is a kind name ("REQUEST", ...)."""
    k = KINDS[kind]
    if metadata and kind not in ("REQUEST", "RESPONSE"):
        raise ValueError("metadata is only allowed on REQUEST and RESPONSE")
    if kind in ("PING", "PONG") and payload:
        raise ValueError("PING/PONG have an empty body")
    if kind != "REQUEST" and deadline_ms:
        raise ValueError("deadline is REQUEST only")
    if kind in ("GOAWAY", "ERROR") or (kind == "RESPONSE" and status != 0):
        payload.decode("utf-8")  # raises if not UTF-8
    flags = FLAG_METADATA if metadata else 0
    body = (encode_metadata(list(metadata)) if metadata else b"") + payload
    if len(body) > max_body_len:
        raise ValueError("body longer than max_body_len")
    if kind == "REQUEST":
        word = route_word(service, method)
    elif kind in ("RESPONSE", "GOAWAY", "ERROR"):
        word = status
    else:
        word = 0
    return encode_header(k, flags, request_id, word, deadline_ms, len(body), crc32(body)) + body


# ---------------------------------------------------------------------------
# Decoding (reference; used here to check every vector before it is written)
# ---------------------------------------------------------------------------


class DecodeError(Exception):
    def __init__(self, code, consumed=None):
        super().__init__(code)
        self.code = code
        self.fatal, self.status = DECODE_ERRORS[code]
        self.consumed = consumed  # frame errors only


def decode_metadata(body):
    """Parse a metadata section at the start of `body`. Returns (entries, section_len_incl_S)."""
    if len(body) < 2:
        raise DecodeError("INVALID_METADATA")
    (s,) = struct.unpack_from(">H", body, 0)
    if not 1 <= s <= MAX_METADATA_SECTION or 2 + s > len(body):
        raise DecodeError("INVALID_METADATA")
    section = body[2:2 + s]
    pos, entries = 0, []
    while pos < s:
        if len(entries) == MAX_METADATA_ENTRIES:
            raise DecodeError("INVALID_METADATA")
        k = section[pos]
        pos += 1
        if k == 0 or pos + k + 2 > s:
            raise DecodeError("INVALID_METADATA")
        key = section[pos:pos + k]
        if any(b < 0x21 or b > 0x7E for b in key):
            raise DecodeError("INVALID_METADATA")
        pos += k
        (v,) = struct.unpack_from(">H", section, pos)
        pos += 2
        if pos + v > s:
            raise DecodeError("INVALID_METADATA")
        entries.append((key, section[pos:pos + v]))
        pos += v
    return entries, 2 + s


def decode(buf, max_body_len=DEFAULT_MAX_BODY_LEN):
    """Decode one frame from the start of `buf`.
    Returns None (need more bytes) or (frame_dict, consumed); raises DecodeError."""
    for i in range(min(len(buf), 4)):
        if buf[i] != MAGIC[i]:
            raise DecodeError("BAD_MAGIC")
    if len(buf) > 4 and buf[4] != VERSION:
        raise DecodeError("UNSUPPORTED_VERSION")
    if len(buf) > 5 and buf[5] not in KIND_NAMES:
        raise DecodeError("UNKNOWN_KIND")
    if len(buf) < HEADER_LEN:
        return None
    _, _, kind, flags, rid, word, deadline, body_len, body_crc, header_crc = struct.unpack(
        ">4sBBHQIIIII", buf[:HEADER_LEN])
    if crc32(buf[:32]) != header_crc:
        raise DecodeError("HEADER_CHECKSUM")
    if body_len > max_body_len:
        raise DecodeError("FRAME_TOO_LARGE")
    name = KIND_NAMES[kind]
    if flags & ~KNOWN_FLAGS or (flags & FLAG_METADATA and name not in ("REQUEST", "RESPONSE")):
        raise DecodeError("INVALID_FLAGS")
    if (name in ("PING", "PONG") and (word or body_len)) or (name != "REQUEST" and deadline):
        raise DecodeError("RESERVED_NOT_ZERO")
    total = HEADER_LEN + body_len
    if len(buf) < total:
        return None
    body = bytes(buf[HEADER_LEN:total])
    try:
        if crc32(body) != body_crc:
            raise DecodeError("BODY_CHECKSUM")
        entries, off = decode_metadata(body) if flags & FLAG_METADATA else ([], 0)
        payload = body[off:]
        frame = {"kind": name, "flags": flags, "request_id": str(rid)}
        if name == "REQUEST":
            frame.update(service=word >> 16, method=word & 0xFFFF, deadline_ms=deadline)
        if name in ("REQUEST", "RESPONSE"):
            frame["metadata"] = [{"key": k.decode("ascii"), "value_hex": v.hex()} for k, v in entries]
            frame["payload_hex"] = payload.hex()
        if name in ("RESPONSE", "GOAWAY", "ERROR"):
            frame.update(status=word, status_name=status_name(word))
            if name != "RESPONSE" or word != 0:
                try:
                    frame["message"] = payload.decode("utf-8")
                except UnicodeDecodeError:
                    raise DecodeError("INVALID_UTF8")
    except DecodeError as e:
        e.consumed = total
        raise
    return frame, total


# ---------------------------------------------------------------------------
# Vectors
# ---------------------------------------------------------------------------

VECTORS = []


def _frame_json(kind, request_id, *, service=0, method=0, status=0, deadline_ms=0,
                metadata=(), payload=b""):
    """The JSON description of a frame, built from the same arguments as encode_frame."""
    frame = {"kind": kind, "flags": FLAG_METADATA if metadata else 0, "request_id": str(request_id)}
    if kind == "REQUEST":
        frame.update(service=service, method=method, deadline_ms=deadline_ms)
    if kind in ("REQUEST", "RESPONSE"):
        frame["metadata"] = [{"key": k.decode("ascii"), "value_hex": v.hex()} for k, v in metadata]
        frame["payload_hex"] = payload.hex()
    if kind in ("RESPONSE", "GOAWAY", "ERROR"):
        frame.update(status=status, status_name=status_name(status))
        if kind != "RESPONSE" or status != 0:
            frame["message"] = payload.decode("utf-8")
    return frame


def valid(name, description, kind, request_id, max_body_len=None, **fields):
    limit = DEFAULT_MAX_BODY_LEN if max_body_len is None else max_body_len
    data = encode_frame(kind, request_id, max_body_len=limit, **fields)
    v = {"name": name, "description": description, "hex": data.hex(),
         "frame": _frame_json(kind, request_id, **fields)}
    if max_body_len is not None:
        v["max_body_len"] = max_body_len
    VECTORS.append(v)
    return data


def invalid(name, description, data, error, max_body_len=None):
    fatal, status = DECODE_ERRORS[error]
    if fatal:
        consumed = None
    else:
        (body_len,) = struct.unpack_from(">I", data, 24)
        consumed = HEADER_LEN + body_len
    v = {"name": name, "description": description, "hex": data.hex(), "error": error,
         "fatal": fatal, "status": status, "consumed": consumed}
    if max_body_len is not None:
        v["max_body_len"] = max_body_len
    VECTORS.append(v)


def incomplete(name, description, data):
    VECTORS.append({"name": name, "description": description, "hex": data.hex(), "incomplete": True})


def header(kind, *, flags=0, request_id=1, word=0, deadline_ms=0, body=b"", body_len=None,
           body_crc=None, header_crc=None, magic=MAGIC, version=VERSION):
    """Build header + body with any field overridden (numeric kind); for invalid vectors."""
    k = KINDS[kind] if isinstance(kind, str) else kind
    bl = len(body) if body_len is None else body_len
    bc = crc32(body) if body_crc is None else body_crc
    return encode_header(k, flags, request_id, word, deadline_ms, bl, bc, header_crc,
                         magic, version) + body


def with_byte(data, offset, value):
    return data[:offset] + bytes([value]) + data[offset + 1:]


def recrc(data):
    """Recompute the header CRC of a (possibly modified) frame so that only the intended check fails."""
    return data[:32] + struct.pack(">I", crc32(data[:32])) + data[HEADER_LEN:]


def md(*pairs):
    return [(k.encode("ascii") if isinstance(k, str) else k, v) for k, v in pairs]


def whoami_payload(source, name):
    """WHOAMI's OK payload (SERVICES.md 0.3): u8 source, then the name in UTF-8 (empty when
    anonymous)."""
    encoded = name.encode("utf-8")
    if (source == "anonymous") != (not encoded):
        raise ValueError("the name is empty exactly for an anonymous connection")
    return bytes([IDENTITY_SOURCES[source]]) + encoded


def methods_payload(methods):
    """METHODS' OK payload (SERVICES.md 0.5): one line per method, ordered by service then
    method id: service, method, name, request encoding, response encoding, separated by one
    space, each line ended by LF."""
    lines = []
    for service, method, name, request, response in sorted(methods):
        for field in (name, request, response):
            if not field or any(not (0x21 <= ord(c) <= 0x7e) for c in field):
                raise ValueError(f"{field!r} is not a METHODS field")
        lines.append(f"{service} {method} {name} {request} {response}\n")
    return "".join(lines).encode("ascii")


# What an echo-server (the admin service and echo) answers to METHODS.
ECHO_SERVER_METHODS = [
    (ADMIN_SERVICE, ADMIN_STATS, "admin.Stats", "empty", "utf8"),
    (ADMIN_SERVICE, ADMIN_AUTH, "admin.Auth", "bytes", "utf8"),
    (ADMIN_SERVICE, ADMIN_WHOAMI, "admin.WhoAmI", "empty", "custom"),
    (ADMIN_SERVICE, ADMIN_METHODS, "admin.Methods", "empty", "utf8"),
    (1, 1, "echo.Echo", "bytes", "bytes"),
]


def build():
    # ----- valid: REQUEST -------------------------------------------------
    minimal = valid("request_minimal", "REQUEST with an empty body: no metadata, no payload, no deadline.",
                    "REQUEST", 1, service=1, method=1)
    valid("request_with_payload_and_deadline",
          "REQUEST to service 2 method 1 with a 5-byte payload and a 250 ms deadline.",
          "REQUEST", 42, service=2, method=1, deadline_ms=250, payload=b"hello")
    with_md = valid("request_with_metadata",
                    "REQUEST with two metadata entries, the second with an empty value, then a payload.",
                    "REQUEST", 7, service=1, method=1, deadline_ms=1000,
                    metadata=md(("trace-id", b"4bf92f3577b34da6"), ("x-empty", b"")), payload=b"ping?")
    valid("request_id_zero",
          "Request id 0 decodes as a frame, but the id is reserved (PROTOCOL.md Section 11): a "
          "client MUST NOT send it, and a server answers it with response_request_id_zero_refused "
          "without processing it.", "REQUEST", 0, service=1, method=1, payload=b"\x00")
    valid("request_id_max", "Request id 2^64-1 (all ones) is an ordinary id.", "REQUEST",
          2**64 - 1, service=1, method=1, payload=b"x")
    valid("request_max_route_and_deadline",
          "Service 65535, method 65535 and deadline 0xFFFFFFFF are all representable.",
          "REQUEST", 3, service=0xFFFF, method=0xFFFF, deadline_ms=0xFFFFFFFF)
    valid("request_metadata_without_payload",
          "METADATA set, one entry; the payload after the section is empty (2 + S == body length).",
          "REQUEST", 8, service=1, method=1, metadata=md(("k", b"v")))
    valid("request_metadata_repeated_keys",
          "Keys may repeat; entries keep their order.", "REQUEST", 9, service=2, method=2,
          metadata=md(("tag", b"a"), ("other", b"1"), ("tag", b"b")), payload=b"\x00\x01k")
    valid("request_metadata_64_entries", "The maximum of 64 metadata entries.", "REQUEST", 10,
          service=1, method=1,
          metadata=md(*[("k%02d" % i, bytes([i])) for i in range(64)]), payload=b"p")
    valid("request_metadata_key_edges",
          "A 255-byte key using the lowest (0x21) and highest (0x7E) allowed bytes, and a 1-byte key.",
          "REQUEST", 11, service=1, method=1,
          metadata=md((b"!" + b"a" * 253 + b"~", b"\xff\x00"), (b"~", b"v")))
    valid("request_metadata_section_max",
          "Metadata section length S exactly 16384 (one entry: 1-byte key, 16380-byte value).",
          "REQUEST", 12, service=1, method=1,
          metadata=md(("big", bytes(i & 0xFF for i in range(16384 - 1 - 3 - 2)))), payload=b"tail")
    valid("request_binary_payload", "Payloads are opaque: all 256 byte values.", "REQUEST", 13,
          service=1, method=1, payload=bytes(range(256)))
    valid("request_body_at_small_limit",
          "Body length 16 decoded with max_body_len 16: exactly at the limit is allowed.",
          "REQUEST", 14, max_body_len=16, service=1, method=1, payload=b"0123456789abcdef")
    valid("request_echo", "echo service 1, method 1 ECHO.", "REQUEST", 15, service=1, method=1,
          payload=b"echo me")
    valid("request_kv_set",
          "kv SET: service 2, method 2, payload = u16 key length | key | value (see SERVICES.md).",
          "REQUEST", 16, service=2, method=2, payload=struct.pack(">H", 5) + b"user1" + b"alice")

    # ----- valid: worked example of PROTOCOL.md ---------------------------
    valid("example_kv_get_request",
          "Worked example of PROTOCOL.md: kv GET of key 'user1' with a deadline and one metadata entry.",
          "REQUEST", 5, service=2, method=1, deadline_ms=1500, metadata=md(("trace", b"a1")),
          payload=b"user1")
    valid("example_kv_get_response", "Worked example of PROTOCOL.md: the OK RESPONSE to request 5.",
          "RESPONSE", 5, status=0, payload=b"alice")

    # ----- valid: RESPONSE ------------------------------------------------
    valid("response_ok_with_payload", "RESPONSE OK carrying the method's response message.",
          "RESPONSE", 42, status=0, payload=b"world")
    valid("response_ok_empty", "RESPONSE OK with an empty body (e.g. kv SET).", "RESPONSE", 16, status=0)
    valid("response_ok_with_metadata", "RESPONSE OK with a metadata entry and a payload.",
          "RESPONSE", 7, status=0, metadata=md(("server-timing", b"db;dur=3")), payload=b"pong!")
    valid("response_ok_binary_payload",
          "An OK payload is opaque: invalid UTF-8 (ff fe) is allowed here.", "RESPONSE", 17, status=0,
          payload=b"\xff\xfe")
    valid("response_not_found_with_message", "RESPONSE NOT_FOUND; the payload is a UTF-8 message.",
          "RESPONSE", 18, status=5, payload=b"key not found")
    valid("response_unknown_status_99",
          "Status 99 is not a canonical code: it MUST be accepted and kept (treated as UNKNOWN).",
          "RESPONSE", 19, status=99, payload=b"custom failure")
    valid("response_error_empty_message", "RESPONSE INTERNAL with an empty message.", "RESPONSE", 20,
          status=13)
    valid("response_error_with_metadata_and_non_ascii_message",
          "RESPONSE INVALID_ARGUMENT with metadata and a multi-byte UTF-8 message.", "RESPONSE", 21,
          status=3, metadata=md(("retry", b"no")), payload="clé vide — empty key".encode("utf-8"))
    valid("response_max_status", "Status 0xFFFFFFFF is kept as is.", "RESPONSE", 22,
          status=0xFFFFFFFF, payload=b"?")

    # ----- valid: PING/PONG/GOAWAY/ERROR ---------------------------------
    valid("ping", "PING with opaque id 0x0102030405060708.", "PING", 0x0102030405060708)
    valid("pong", "PONG echoing the PING's id.", "PONG", 0x0102030405060708)
    valid("ping_haproxy_check",
          "The health check of deploy/haproxy.cfg (tcp-check send-binary): PING with the ping "
          "id \"haproxy!\" in ASCII, 0x686170726f787921 (Section 13).", "PING",
          int.from_bytes(b"haproxy!", "big"))
    valid("pong_haproxy_check",
          "The answer that check expects (tcp-check expect binary): PONG with the id "
          "\"haproxy!\" (Section 13).", "PONG", int.from_bytes(b"haproxy!", "big"))
    valid("goaway_ok_empty_message", "Graceful drain: GOAWAY OK, last request id 41, empty message.",
          "GOAWAY", 41, status=0)
    valid("goaway_unavailable_with_message", "GOAWAY UNAVAILABLE with a message.", "GOAWAY", 100,
          status=14, payload=b"server shutting down")
    valid("error_resource_exhausted",
          "ERROR RESOURCE_EXHAUSTED for a frame whose body length exceeded the limit.", "ERROR", 23,
          status=8, payload=b"body length 4194305 exceeds limit 4194304")
    valid("error_unsupported_version",
          "The v1 ERROR UNIMPLEMENTED sent to a peer that spoke another version (request id 0).",
          "ERROR", 0, status=12, payload=b"unsupported version 2; this endpoint speaks version 1")

    # ----- valid: what a server sends at its limits (PROTOCOL.md 7.1, 10, 12, 14) --------
    valid("goaway_none_processed",
          "GOAWAY OK naming request id 0: no request was processed on this connection (0 is "
          "never a request's id, Section 11), so every request sent was not processed.",
          "GOAWAY", 0, status=0, payload=b"server is draining")
    valid("error_flood_names_the_pong",
          "ERROR RESOURCE_EXHAUSTED after more than 100 PONGs in a row; it carries the id of the "
          "PONG that passed the limit (its header was valid, Section 4.6).", "ERROR", 100,
          status=8, payload=b"more than 100 frames in a row asked for nothing")
    valid("error_frame_timeout",
          "ERROR DEADLINE_EXCEEDED for a frame not complete within the frame time: request id 0, "
          "since the late frame never arrived whole (Section 7.1).", "ERROR", 0, status=4,
          payload=b"frame not complete within 30000 ms of its first byte")
    valid("response_request_id_zero_refused",
          "The answer to a REQUEST with the reserved id 0: INVALID_ARGUMENT, not processed.",
          "RESPONSE", 0, status=3,
          payload=b"request id 0 is reserved (PROTOCOL.md Section 11): not processed")
    valid("response_deadline_exceeded_at_dispatch",
          "A request whose deadline passed before it was dispatched: DEADLINE_EXCEEDED, not "
          "processed (Section 12).", "RESPONSE", 24, status=4,
          payload=b"deadline of 100 ms passed before the request was dispatched; not processed")
    valid("response_too_large",
          "A response that would exceed the server's maximum body length is replaced by "
          "RESOURCE_EXHAUSTED; the method ran (Section 10).", "RESPONSE", 25, status=8,
          payload=b"response not sent: frame body of 5000 bytes exceeds the limit of 4096 bytes")
    valid("response_outcome_unknown",
          "UNKNOWN: the outcome of a write is unknown (its log's fsync failed, SERVICES.md 2.5).",
          "RESPONSE", 26, status=2,
          payload=b"outcome unknown: the kv log's fsync failed (fsync kv.log: Input/output error); "
                  b"the writes it covered may or may not survive a restart")

    # ----- valid: TLS, identity and access control (PROTOCOL.md 17, 18; SERVICES.md 0.2-0.4)
    token = b"s3cret-token"
    assert 1 <= len(token) <= MAX_TOKEN_LEN
    valid("request_admin_auth",
          "admin AUTH (service 0, method 2): the payload is the token's raw bytes, here "
          "'s3cret-token' (SERVICES.md 0.2).", "REQUEST", 1, service=ADMIN_SERVICE,
          method=ADMIN_AUTH, payload=token)
    valid("response_admin_auth_ok",
          "AUTH succeeded: OK, the payload is the identity's name 'alice' in UTF-8.",
          "RESPONSE", 1, status=STATUS["OK"], payload=b"alice")
    valid("response_admin_auth_invalid_token",
          "AUTH with a token that proves no identity: UNAUTHENTICATED; the connection's identity "
          "is unchanged.", "RESPONSE", 1, status=STATUS["UNAUTHENTICATED"],
          payload=b"invalid token")
    valid("response_admin_auth_not_enabled",
          "AUTH on a server that does not authenticate with tokens: FAILED_PRECONDITION.",
          "RESPONSE", 1, status=STATUS["FAILED_PRECONDITION"],
          payload=b"authentication is not enabled on this server")
    valid("error_admin_auth_third_failure",
          "The third failed AUTH on a connection (request ids 1, 2 and 3) is answered by this "
          "ERROR UNAUTHENTICATED carrying its id, not by a RESPONSE; the connection closes "
          "(PROTOCOL.md 9.5, 18.3).", "ERROR", 3, status=STATUS["UNAUTHENTICATED"],
          payload=b"3 failed AUTH attempts")
    valid("request_admin_whoami", "admin WHOAMI (service 0, method 3): an empty request.",
          "REQUEST", 2, service=ADMIN_SERVICE, method=ADMIN_WHOAMI)
    valid("response_admin_whoami_token",
          "WHOAMI after AUTH as 'alice': OK, source 2 (token), then the name.",
          "RESPONSE", 2, status=STATUS["OK"], payload=whoami_payload("token", "alice"))
    valid("response_admin_whoami_anonymous",
          "WHOAMI on a connection without an identity: OK, source 0 (anonymous), no name.",
          "RESPONSE", 2, status=STATUS["OK"], payload=whoami_payload("anonymous", ""))
    valid("request_admin_methods", "admin METHODS (service 0, method 4): an empty request.",
          "REQUEST", 4, service=ADMIN_SERVICE, method=ADMIN_METHODS)
    valid("response_admin_methods_echo_server",
          "METHODS answered by an echo-server: one line per method (service, method, name, "
          "request and response encodings), the admin service's four and echo.Echo.",
          "RESPONSE", 4, status=STATUS["OK"], payload=methods_payload(ECHO_SERVER_METHODS))
    valid("response_unauthenticated_before_auth",
          "A request other than AUTH or WHOAMI on a connection without an identity, on a server "
          "that requires one: UNAUTHENTICATED, not processed (PROTOCOL.md 18.4).", "RESPONSE", 1,
          status=STATUS["UNAUTHENTICATED"], payload=b"authenticate first (admin.Auth); not processed")
    valid("response_permission_denied",
          "A method the connection's identity may not call (here 'alice' and echo.Echo): "
          "PERMISSION_DENIED, not processed (PROTOCOL.md 18.5).", "RESPONSE", 3,
          status=STATUS["PERMISSION_DENIED"], payload=b"alice may not call echo.Echo; not processed")
    valid("error_tls_required",
          "The plaintext ERROR a TLS port sends to a client whose first byte is 0x43 ('C', "
          "courier without TLS), then closes; request id 0 (PROTOCOL.md 17.4).", "ERROR", 0,
          status=STATUS["INVALID_ARGUMENT"], payload=b"this port requires TLS (ALPN courier/1)")

    # ----- invalid: BAD_MAGIC ---------------------------------------------
    invalid("bad_magic_http_request", "A plain HTTP/1.1 request: rejected on its first byte 'G'.",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "BAD_MAGIC")
    invalid("bad_magic_tls_client_hello",
            "The start of a TLS ClientHello record (16 03 01 ...): rejected on its first byte.",
            bytes.fromhex("160301020001000001fc0303") + bytes(range(32)), "BAD_MAGIC")
    invalid("bad_magic_wrong_byte_at_offset_3",
            "\"COUX\": only byte 3 is wrong; the rest is a valid REQUEST with a matching header CRC.",
            recrc(with_byte(minimal, 3, ord("X"))), "BAD_MAGIC")
    invalid("bad_magic_lowercase", "\"cour\" is not the magic (case matters).",
            recrc(b"cour" + minimal[4:]), "BAD_MAGIC")
    invalid("bad_magic_zero_header", "36 zero bytes.", bytes(36), "BAD_MAGIC")

    # ----- invalid: UNSUPPORTED_VERSION ----------------------------------
    invalid("unsupported_version_0", "Version byte 0; header CRC matches.",
            header("REQUEST", version=0, word=route_word(1, 1)), "UNSUPPORTED_VERSION")
    invalid("unsupported_version_2", "Version byte 2 (a future version); header CRC matches.",
            header("REQUEST", version=2, word=route_word(1, 1), body=b"v2"), "UNSUPPORTED_VERSION")
    invalid("unsupported_version_255", "Version byte 255; header CRC matches.",
            header("PING", version=255), "UNSUPPORTED_VERSION")

    # ----- invalid: UNKNOWN_KIND ------------------------------------------
    invalid("unknown_kind_0", "Kind 0; magic, version and header CRC are right.",
            header(0), "UNKNOWN_KIND")
    invalid("unknown_kind_7", "Kind 7; magic, version and header CRC are right.",
            header(7, body=b"abc"), "UNKNOWN_KIND")
    invalid("unknown_kind_255", "Kind 255.", header(255), "UNKNOWN_KIND")

    # ----- invalid: HEADER_CHECKSUM --------------------------------------
    invalid("header_checksum_flipped_request_id_bit",
            "request_with_metadata with bit 0 of byte 15 (request id) flipped; header CRC not updated.",
            with_byte(with_md, 15, with_md[15] ^ 0x01), "HEADER_CHECKSUM")
    corrupted = bytearray(with_md)
    struct.pack_into(">I", corrupted, 24, len(with_md) - HEADER_LEN + 1)
    invalid("header_checksum_corrupted_body_length",
            "request_with_metadata with body length increased by one; header CRC no longer matches "
            "(the decoder must not wait for the extra byte).", bytes(corrupted), "HEADER_CHECKSUM")
    invalid("header_checksum_zero", "Valid minimal REQUEST with the header CRC field zeroed.",
            minimal[:32] + bytes(4), "HEADER_CHECKSUM")
    invalid("header_checksum_flipped_crc_bit", "Valid PING with the top bit of the header CRC flipped.",
            with_byte(header("PING"), 32, header("PING")[32] ^ 0x80), "HEADER_CHECKSUM")

    # ----- invalid: FRAME_TOO_LARGE (header only: fires before the body) --
    invalid("frame_too_large_small_limit",
            "Body length 17 with max_body_len 16; only the header is present.",
            header("REQUEST", word=route_word(1, 1), body_len=17, body_crc=0), "FRAME_TOO_LARGE",
            max_body_len=16)
    invalid("frame_too_large_default_limit_plus_one",
            "Body length 4194305 with the default limit; only the header is present.",
            header("REQUEST", word=route_word(1, 1), body_len=DEFAULT_MAX_BODY_LEN + 1, body_crc=0),
            "FRAME_TOO_LARGE")
    invalid("frame_too_large_u32_max", "Body length 0xFFFFFFFF with the default limit; header only.",
            header("REQUEST", word=route_word(1, 1), body_len=0xFFFFFFFF, body_crc=0), "FRAME_TOO_LARGE")

    # ----- invalid: INVALID_FLAGS -----------------------------------------
    invalid("invalid_flags_bit_1", "REQUEST with reserved flag bit 1 (0x0002) set.",
            header("REQUEST", flags=0x0002, word=route_word(1, 1)), "INVALID_FLAGS")
    invalid("invalid_flags_bit_15", "RESPONSE with reserved flag bit 15 (0x8000) set.",
            header("RESPONSE", flags=0x8000, body=b"ok"), "INVALID_FLAGS")
    invalid("invalid_flags_metadata_on_ping", "METADATA flag on a PING (empty body).",
            header("PING", flags=FLAG_METADATA), "INVALID_FLAGS")
    invalid("invalid_flags_metadata_on_goaway",
            "METADATA flag on a GOAWAY whose body is a well-formed metadata section.",
            header("GOAWAY", flags=FLAG_METADATA, body=encode_metadata(md(("k", b"v")))), "INVALID_FLAGS")
    invalid("invalid_flags_metadata_on_error", "METADATA flag on an ERROR.",
            header("ERROR", flags=FLAG_METADATA, word=13, body=encode_metadata(md(("k", b"v")))),
            "INVALID_FLAGS")

    # ----- invalid: RESERVED_NOT_ZERO -------------------------------------
    invalid("reserved_not_zero_deadline_on_response", "RESPONSE with deadline 100.",
            header("RESPONSE", deadline_ms=100, body=b"ok"), "RESERVED_NOT_ZERO")
    invalid("reserved_not_zero_status_word_on_ping", "PING with route/status word 1.",
            header("PING", word=1), "RESERVED_NOT_ZERO")
    invalid("reserved_not_zero_route_word_on_pong", "PONG with route/status word 0x00010001.",
            header("PONG", word=route_word(1, 1)), "RESERVED_NOT_ZERO")
    invalid("reserved_not_zero_body_length_on_pong",
            "PONG with a 4-byte body (body CRC correct).", header("PONG", body=b"abcd"), "RESERVED_NOT_ZERO")
    invalid("reserved_not_zero_body_length_on_ping",
            "PING with body length 1, header only (the check fires before the body is awaited).",
            header("PING", body_len=1, body_crc=0), "RESERVED_NOT_ZERO")
    invalid("reserved_not_zero_deadline_on_goaway", "GOAWAY with deadline 1.",
            header("GOAWAY", deadline_ms=1), "RESERVED_NOT_ZERO")
    invalid("reserved_not_zero_deadline_on_ping", "PING with deadline 0x80000000.",
            header("PING", deadline_ms=0x80000000), "RESERVED_NOT_ZERO")

    # ----- invalid: BODY_CHECKSUM (frame error) ---------------------------
    invalid("body_checksum_wrong_crc_field",
            "REQUEST whose body CRC field is off by one (header CRC recomputed, so it matches).",
            header("REQUEST", request_id=24, word=route_word(1, 1), body=b"hello",
                   body_crc=crc32(b"hello") ^ 1), "BODY_CHECKSUM")
    invalid("body_checksum_corrupted_body_byte",
            "request_with_metadata with the last payload byte changed; both CRC fields untouched.",
            with_byte(with_md, len(with_md) - 1, with_md[-1] ^ 0x20), "BODY_CHECKSUM")
    invalid("body_checksum_nonzero_for_empty_body",
            "REQUEST with an empty body but body CRC 0xDEADBEEF (must be 0).",
            header("REQUEST", request_id=25, word=route_word(1, 1), body_crc=0xDEADBEEF), "BODY_CHECKSUM")
    invalid("body_checksum_on_ping",
            "PING with body CRC 1: the body CRC field is not in the RESERVED_NOT_ZERO list, so this is "
            "a BODY_CHECKSUM frame error (a server still closes: PING is not a REQUEST).",
            header("PING", body_crc=1), "BODY_CHECKSUM")
    invalid("body_checksum_on_response", "RESPONSE OK with a wrong body CRC.",
            header("RESPONSE", request_id=26, body=b"data", body_crc=0), "BODY_CHECKSUM")

    # ----- invalid: INVALID_METADATA (frame error) ------------------------
    def md_req(body, rid=30):
        return header("REQUEST", flags=FLAG_METADATA, request_id=rid, word=route_word(1, 1), body=body)

    entry = encode_metadata_entry(b"k", b"v")  # 5 bytes
    invalid("invalid_metadata_section_length_0", "S = 0 (must be >= 1).",
            md_req(b"\x00\x00" + b"payload"), "INVALID_METADATA")
    invalid("invalid_metadata_section_overruns_body",
            "S = 10 but only 5 bytes follow in the body (2 + S > body length).",
            md_req(b"\x00\x0a" + entry), "INVALID_METADATA")
    invalid("invalid_metadata_body_shorter_than_section_length",
            "METADATA set but the body is a single byte: no room for S.", md_req(b"\x00"),
            "INVALID_METADATA")
    invalid("invalid_metadata_key_length_0", "An entry with K = 0.",
            md_req(struct.pack(">H", 3) + b"\x00\x00\x00"), "INVALID_METADATA")
    invalid("invalid_metadata_key_byte_space", "Key \"a b\": byte 0x20 is not allowed.",
            md_req(struct.pack(">H", 6) + encode_metadata_entry(b"a b", b"")), "INVALID_METADATA")
    invalid("invalid_metadata_key_byte_del", "Key byte 0x7F is not allowed.",
            md_req(struct.pack(">H", 4) + encode_metadata_entry(b"\x7f", b"")), "INVALID_METADATA")
    invalid("invalid_metadata_key_byte_high", "Key byte 0xC3 (non-ASCII) is not allowed.",
            md_req(struct.pack(">H", 4) + encode_metadata_entry(b"\xc3", b"")), "INVALID_METADATA")
    sixty_five = b"".join(encode_metadata_entry(b"k", b"") for _ in range(65))
    invalid("invalid_metadata_65_entries", "65 well-formed entries (the maximum is 64).",
            md_req(struct.pack(">H", len(sixty_five)) + sixty_five), "INVALID_METADATA")
    invalid("invalid_metadata_trailing_partial_entry",
            "S = 7: one 5-byte entry, then 2 bytes (K = 1, key 'a') that are not a whole entry.",
            md_req(struct.pack(">H", 7) + entry + b"\x01a" + b"payload"), "INVALID_METADATA")
    invalid("invalid_metadata_value_overruns_section",
            "S = 5 but the entry declares a 3-byte value: the entry runs past S (into the payload).",
            md_req(struct.pack(">H", 5) + encode_metadata_entry(b"k", b"vvv")[:5] + b"vv"),
            "INVALID_METADATA")
    big = encode_metadata_entry(b"k", bytes(16385 - 4))
    invalid("invalid_metadata_section_length_16385",
            "S = 16385 (maximum 16384) with one entry that exactly fills it.",
            md_req(struct.pack(">H", len(big)) + big), "INVALID_METADATA")
    invalid("invalid_metadata_on_response", "RESPONSE OK whose only entry has K = 0.",
            header("RESPONSE", flags=FLAG_METADATA, request_id=31,
                   body=struct.pack(">H", 4) + b"\x00\x00\x01v"), "INVALID_METADATA")

    # ----- invalid: INVALID_UTF8 (frame error) ----------------------------
    invalid("invalid_utf8_error_message", "ERROR INTERNAL whose message is ff fe.",
            header("ERROR", request_id=0, word=13, body=b"\xff\xfe"), "INVALID_UTF8")
    invalid("invalid_utf8_response_message", "RESPONSE NOT_FOUND whose message contains c3 28.",
            header("RESPONSE", request_id=32, word=5, body=b"bad \xc3\x28"), "INVALID_UTF8")
    invalid("invalid_utf8_goaway_overlong", "GOAWAY with an overlong encoding c0 af.",
            header("GOAWAY", request_id=33, word=14, body=b"\xc0\xaf"), "INVALID_UTF8")
    invalid("invalid_utf8_surrogate", "RESPONSE status 99 whose message is an encoded surrogate ed a0 80.",
            header("RESPONSE", request_id=34, word=99, body=b"\xed\xa0\x80"), "INVALID_UTF8")
    invalid("invalid_utf8_truncated_sequence", "ERROR whose message ends inside a 3-byte sequence (e2 82).",
            header("ERROR", request_id=0, word=3, body=b"euro \xe2\x82"), "INVALID_UTF8")
    invalid("invalid_utf8_after_metadata",
            "RESPONSE INVALID_ARGUMENT with valid metadata; the message after it is ff.",
            header("RESPONSE", flags=FLAG_METADATA, request_id=35, word=3,
                   body=encode_metadata(md(("k", b"v"))) + b"\xff"), "INVALID_UTF8")

    # ----- invalid: check order (two faults; the earlier check wins) ------
    invalid("order_bad_magic_before_header_checksum", "Wrong magic and a stale header CRC: BAD_MAGIC.",
            b"XOUR" + minimal[4:], "BAD_MAGIC")
    invalid("order_unsupported_version_before_unknown_kind", "Version 2 and kind 9: UNSUPPORTED_VERSION.",
            header(9, version=2), "UNSUPPORTED_VERSION")
    invalid("order_unknown_kind_before_header_checksum", "Kind 7 and a zero header CRC: UNKNOWN_KIND.",
            header(7, header_crc=0), "UNKNOWN_KIND")
    invalid("order_header_checksum_before_frame_too_large",
            "Body length 0xFFFFFFFF and a stale header CRC: HEADER_CHECKSUM.",
            header("REQUEST", word=route_word(1, 1), body_len=0xFFFFFFFF, body_crc=0, header_crc=0),
            "HEADER_CHECKSUM")
    invalid("order_frame_too_large_before_reserved_not_zero",
            "PING declaring body length 0xFFFFFFFF: FRAME_TOO_LARGE, not RESERVED_NOT_ZERO.",
            header("PING", body_len=0xFFFFFFFF, body_crc=0), "FRAME_TOO_LARGE")
    invalid("order_frame_too_large_before_invalid_flags",
            "Reserved flag bit and body length 17 with max_body_len 16: FRAME_TOO_LARGE.",
            header("REQUEST", flags=0x0004, word=route_word(1, 1), body_len=17, body_crc=0),
            "FRAME_TOO_LARGE", max_body_len=16)
    invalid("order_invalid_flags_before_reserved_not_zero",
            "PING with METADATA and a non-zero status word: INVALID_FLAGS.",
            header("PING", flags=FLAG_METADATA, word=5), "INVALID_FLAGS")
    invalid("order_body_checksum_before_invalid_metadata",
            "REQUEST with S = 0 and a wrong body CRC: BODY_CHECKSUM.",
            header("REQUEST", flags=FLAG_METADATA, request_id=36, word=route_word(1, 1),
                   body=b"\x00\x00", body_crc=0), "BODY_CHECKSUM")
    invalid("order_invalid_metadata_before_invalid_utf8",
            "RESPONSE NOT_FOUND with K = 0 in its metadata and an invalid UTF-8 message: INVALID_METADATA.",
            header("RESPONSE", flags=FLAG_METADATA, request_id=37, word=5,
                   body=struct.pack(">H", 3) + b"\x00\x00\x00" + b"\xff"), "INVALID_METADATA")

    # ----- incomplete -----------------------------------------------------
    payload_req = encode_frame("REQUEST", 42, service=2, method=1, deadline_ms=250, payload=b"hello world!")
    incomplete("incomplete_empty", "No bytes at all.", b"")
    incomplete("incomplete_magic_prefix", "The first 3 bytes of the magic.", b"COU")
    incomplete("incomplete_through_kind", "Magic, version and kind are right; the header is unfinished.",
               payload_req[:6])
    incomplete("incomplete_header_35_bytes", "The first 35 bytes of a valid REQUEST.", payload_req[:35])
    incomplete("incomplete_header_only", "A valid REQUEST header whose 12-byte body has not arrived.",
               payload_req[:HEADER_LEN])
    incomplete("incomplete_half_body", "A valid REQUEST header and half of its 12-byte body.",
               payload_req[:HEADER_LEN + 6])
    incomplete("incomplete_missing_last_byte", "A valid REQUEST without its last byte.", payload_req[:-1])
    incomplete("incomplete_body_at_default_limit",
               "A header declaring body length 4194304 (exactly the default limit) with no body yet.",
               header("REQUEST", word=route_word(1, 1), body_len=DEFAULT_MAX_BODY_LEN, body_crc=0))


# ---------------------------------------------------------------------------
# Self-check of every vector against the reference decoder, then output
# ---------------------------------------------------------------------------


def check(v):
    data = bytes.fromhex(v["hex"])
    limit = v.get("max_body_len", DEFAULT_MAX_BODY_LEN)
    name = v["name"]
    if "frame" in v:
        got = decode(data, limit)
        assert got == (v["frame"], len(data)), name
        for i in range(len(data)):
            assert decode(data[:i], limit) is None, (name, i)
    elif "error" in v:
        try:
            decode(data, limit)
            raise AssertionError(name + ": decoded")
        except DecodeError as e:
            assert (e.code, e.fatal, e.status) == (v["error"], v["fatal"], v["status"]), (name, e.code)
            assert e.consumed == v["consumed"], name
            if not e.fatal:
                assert e.consumed == len(data), name
        seen = False
        for i in range(len(data) + 1):  # byte-by-byte: need-more, then the same error
            try:
                assert decode(data[:i], limit) is None, (name, i)
            except DecodeError as e:
                assert e.code == v["error"], (name, i, e.code)
                seen = True
                break
        assert seen, name
    else:
        for i in range(len(data) + 1):
            assert decode(data[:i], DEFAULT_MAX_BODY_LEN) is None, (name, i)


def main():
    build()
    names = [v["name"] for v in VECTORS]
    assert len(names) == len(set(names)), "duplicate vector names"
    for v in VECTORS:
        check(v)
    assert {v["error"] for v in VECTORS if "error" in v} == set(DECODE_ERRORS)
    doc = {"protocol_version": VERSION, "default_max_body_len": DEFAULT_MAX_BODY_LEN, "vectors": VECTORS}
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors", "frames.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        json.dump(doc, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    counts = {k: sum(1 for v in VECTORS if k in v) for k in ("frame", "error", "incomplete")}
    print("wrote %s: %d valid, %d invalid, %d incomplete" % (
        os.path.relpath(out), counts["frame"], counts["error"], counts["incomplete"]))


if __name__ == "__main__":
    main()
