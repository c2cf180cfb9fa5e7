#!/usr/bin/env python3
"""A minimal courier client in plain Python 3 (standard library only), written from
PROTOCOL.md and SERVICES.md alone: an example of an interoperable client in another language.

    python3 proto-spec/client.py [--addr HOST:PORT] ping
    python3 proto-spec/client.py [--addr HOST:PORT] echo TEXT
    python3 proto-spec/client.py [--addr HOST:PORT] set KEY VALUE | get KEY | del KEY
    python3 proto-spec/client.py [--addr HOST:PORT] pipeline N   # N echoes in one write
    python3 proto-spec/client.py [--addr HOST:PORT] [--deadline SECONDS] echo|set|get|del ...

Exit status: 0 on success, 1 when a key is missing (get, del), 2 on any error.
"""

import socket
import struct
import sys
import zlib

MAGIC, VERSION, HEADER_LEN = b"COUR", 1, 36
REQUEST, RESPONSE, PING, PONG, GOAWAY, ERROR = 1, 2, 3, 4, 5, 6
OK, NOT_FOUND, UNAVAILABLE = 0, 5, 14
ECHO = (1, 1)                               # SERVICES.md: echo service 1, method 1
KV_GET, KV_SET, KV_DELETE = (2, 1), (2, 2), (2, 3)


class ProtocolError(Exception):
    pass


class StatusError(Exception):
    def __init__(self, code, message):
        super().__init__(f"status {code}: {message}")
        self.code, self.message = code, message


def crc32(data):
    return zlib.crc32(data) & 0xFFFFFFFF


def deadline_ms(seconds):
    """PROTOCOL.md section 12: whole milliseconds rounded up, never 0 (0 means none), at most
    0xFFFFFFFF. A deadline already passed is sent as 1."""
    ms = -(-int(seconds * 1_000_000) // 1000)  # ceil of microseconds / 1000
    return min(max(ms, 1), 0xFFFFFFFF)


def encode_frame(kind, request_id, word=0, deadline_ms=0, body=b""):
    """PROTOCOL.md section 3: 32 header bytes, their CRC-32, then the body. No metadata."""
    head = MAGIC + struct.pack(">BBHQIIII", VERSION, kind, 0, request_id, word, deadline_ms,
                               len(body), crc32(body))
    return head + struct.pack(">I", crc32(head)) + body


class Client:
    def __init__(self, addr, timeout=10.0):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.next_id = 1  # section 11: never 0, increasing
        self.arrived = {}  # request id -> (kind, word, body) that came before it was asked for
        self.goaway = None  # the last request id a GOAWAY said the server will process

    def send(self, service_method, body, deadline_ms=0):
        service, method = service_method
        request_id = self.next_id
        self.next_id += 1
        self.sock.sendall(encode_frame(REQUEST, request_id, (service << 16) | method,
                                       deadline_ms, body))
        return request_id

    def read_frame(self):
        """Returns (kind, request_id, word, body); checks both CRCs (PROTOCOL.md section 8)."""
        while True:
            if len(self.buf) >= HEADER_LEN:
                head = self.buf[:HEADER_LEN]
                if head[:4] != MAGIC or head[4] != VERSION:
                    raise ProtocolError("not a courier v1 frame")
                (kind, _flags, request_id, word, _deadline, body_len, body_crc,
                 header_crc) = struct.unpack(">BHQIIIII", head[5:])
                if crc32(head[:32]) != header_crc:
                    raise ProtocolError("header checksum mismatch")
                if len(self.buf) >= HEADER_LEN + body_len:
                    body = self.buf[HEADER_LEN:HEADER_LEN + body_len]
                    self.buf = self.buf[HEADER_LEN + body_len:]
                    if crc32(body) != body_crc:
                        raise ProtocolError("body checksum mismatch")
                    return kind, request_id, word, body
            chunk = self.sock.recv(65536)
            if not chunk:
                # Section 15: a request without a response at a close has an unknown outcome.
                raise ProtocolError("server closed the connection: outcome unknown")
            self.buf += chunk

    def wait(self, request_id):
        """The OK response body for request_id; responses may arrive in any order."""
        while request_id not in self.arrived:
            if self.goaway is not None and request_id > self.goaway:
                # Section 14: sent after the last id the server will process: not processed.
                raise StatusError(UNAVAILABLE, "not processed (GOAWAY); safe to retry")
            kind, rid, word, body = self.read_frame()
            if kind == RESPONSE:
                self.arrived[rid] = (word, body)
            elif kind == GOAWAY:
                self.goaway = rid  # 0: none was processed
            elif kind == ERROR:
                raise StatusError(word, body.decode("utf-8"))
            elif kind == PING:
                self.sock.sendall(encode_frame(PONG, rid))
        word, body = self.arrived.pop(request_id)
        if word != OK:
            raise StatusError(word, body.decode("utf-8"))
        return body

    def call(self, service_method, body=b"", deadline_ms=0):
        return self.wait(self.send(service_method, body, deadline_ms))

    def ping(self, ping_id=0xC0FFEE):
        self.sock.sendall(encode_frame(PING, ping_id))
        while True:
            kind, rid, _word, _body = self.read_frame()
            if kind == PONG and rid == ping_id:
                return


def main(argv):
    addr, deadline = "127.0.0.1:7878", 0
    while len(argv) >= 2 and argv[0] in ("--addr", "--deadline"):
        if argv[0] == "--addr":
            addr = argv[1]
        elif float(argv[1]) <= 0:
            # Section 12: a deadline already passed is not sent.
            print("client.py: the deadline has already passed; nothing sent", file=sys.stderr)
            return 2
        else:
            deadline = deadline_ms(float(argv[1]))
        argv = argv[2:]
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    try:
        client = Client(addr)
        if command == "ping":
            client.ping()
            print("PONG")
        elif command == "echo":
            sys.stdout.buffer.write(client.call(ECHO, args[0].encode(), deadline) + b"\n")
        elif command == "set":
            key = args[0].encode()
            client.call(KV_SET, struct.pack(">H", len(key)) + key + args[1].encode(), deadline)
            print("OK")
        elif command == "get":
            sys.stdout.buffer.write(client.call(KV_GET, args[0].encode(), deadline) + b"\n")
        elif command == "del":
            if client.call(KV_DELETE, args[0].encode(), deadline) != b"\x01":
                print(f"key not found: {args[0]}", file=sys.stderr)
                return 1
            print("deleted")
        elif command == "pipeline":
            n = int(args[0])
            frames = b"".join(encode_frame(REQUEST, client.next_id + i, (1 << 16) | 1, 0,
                                           f"message {i}".encode()) for i in range(n))
            first = client.next_id
            client.next_id += n
            client.sock.sendall(frames)
            for i in reversed(range(n)):  # wait in reverse: matching is by request id
                if client.wait(first + i) != f"message {i}".encode():
                    raise ProtocolError(f"wrong echo for request {first + i}")
            print(f"{n} echoes matched")
        else:
            print(f"unknown command {command!r}", file=sys.stderr)
            return 2
    except StatusError as err:
        if err.code == NOT_FOUND:
            print(f"key not found: {args[0]}", file=sys.stderr)
            return 1
        print(f"client.py: {err}", file=sys.stderr)
        return 2
    except (OSError, ProtocolError, IndexError, ValueError) as err:
        print(f"client.py: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
