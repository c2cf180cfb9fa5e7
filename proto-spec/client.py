#!/usr/bin/env python3
"""A minimal courier client in plain Python 3 (standard library only), written from
PROTOCOL.md and SERVICES.md alone: an example of an interoperable client in another language.

    python3 proto-spec/client.py [OPTIONS] ping
    python3 proto-spec/client.py [OPTIONS] echo TEXT
    python3 proto-spec/client.py [OPTIONS] set KEY VALUE | get KEY | del KEY
    python3 proto-spec/client.py [OPTIONS] pipeline N   # N echoes in one write
    python3 proto-spec/client.py [OPTIONS] whoami       # the connection's identity
    python3 proto-spec/client.py [OPTIONS] methods      # what the server serves (reflection)
    python3 proto-spec/client.py --shards ADDR,ADDR,... set KEY VALUE | get KEY | del KEY
    python3 proto-spec/client.py --shards ADDR,ADDR,... owner KEY   # which server owns KEY

Options:
    --addr HOST:PORT        the server (default 127.0.0.1:7878)
    --shards ADDR,ADDR,...  kv servers over which the keys are partitioned (SERVICES.md
                            section 2.7): set, get and del go to the server that owns the key,
                            by rendezvous hashing of the addresses exactly as written here
                            (every client must be given the same strings); instead of --addr
    --deadline SECONDS      the deadline of echo, set, get and del
    --tls                   TLS 1.3 with ALPN courier/1 (PROTOCOL.md section 17)
    --ca FILE               roots (PEM) the server's certificate must chain to; default: the
                            system's roots (needs --tls)
    --server-name NAME      the DNS name or IP address the server's certificate must hold;
                            default: HOST of --addr (needs --tls)
    --cert FILE --key FILE  a client certificate chain and its private key (PEM), for mutual
                            TLS (needs --tls)
    --token-file FILE       send AUTH once connected, with the token in FILE (its final line
                            ending dropped); without it, the token in $COURIER_TOKEN, if set.
                            Never on the command line, where other users can read it.

Exit status: 0 on success, 1 when a key is missing (get, del), 2 on any error.
"""

import os
import socket
import ssl
import struct
import sys
import zlib

MAGIC, VERSION, HEADER_LEN = b"COUR", 1, 36
REQUEST, RESPONSE, PING, PONG, GOAWAY, ERROR = 1, 2, 3, 4, 5, 6
OK, NOT_FOUND, FAILED_PRECONDITION, UNAVAILABLE = 0, 5, 9, 14
STATUS_NAMES = ("OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND "
                "ALREADY_EXISTS PERMISSION_DENIED RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED "
                "OUT_OF_RANGE UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS UNAUTHENTICATED").split()
ECHO = (1, 1)                               # SERVICES.md: echo service 1, method 1
KV_GET, KV_SET, KV_DELETE = (2, 1), (2, 2), (2, 3)
ADMIN_AUTH, ADMIN_WHOAMI = (0, 2), (0, 3)   # SERVICES.md sections 0.2 and 0.3
ADMIN_METHODS = (0, 4)                      # SERVICES.md section 0.5
SOURCES = {0: "anonymous", 1: "certificate", 2: "token", 3: "custom"}
MAX_TOKEN_LEN = 1024
ALPN = "courier/1"                          # PROTOCOL.md section 17.2


def fnv1a64(data):
    """SERVICES.md section 2.7: 64-bit FNV-1a of the bytes `data`."""
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def mix64(x):
    """SERVICES.md section 2.7: SplitMix64's output function, on 64 bits."""
    x = ((x ^ (x >> 30)) * 0xbf58476d1ce4e5b9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94d049bb133111eb) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def shard_owner(names, key):
    """SERVICES.md section 2.7: the name (a str, as configured) of the server that owns the
    bytes `key`: the highest mix64(fnv1a64(name) ^ fnv1a64(key)), equal scores to the name
    that is greater as bytes. No other server may be asked instead when it is down."""
    k = fnv1a64(key)
    return max(names, key=lambda n: (mix64(fnv1a64(n.encode()) ^ k), n.encode()))


class ProtocolError(Exception):
    pass


class StatusError(Exception):
    def __init__(self, code, message, prefix=""):
        name = STATUS_NAMES[code] if code < len(STATUS_NAMES) else "not a canonical code"
        super().__init__(f"{prefix}status {code} ({name}): {message}")
        self.code, self.message = code, message


class ErrorFrame(StatusError):
    """An ERROR frame: the server ended the connection (PROTOCOL.md section 9.1)."""

    def __init__(self, code, message):
        super().__init__(code, message, "the server ended the connection with ERROR ")


class AuthError(Exception):
    pass


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


def split_frame(buf):
    """((kind, request_id, word, body), rest) for the frame at the start of buf, or None while
    it is incomplete; checks the magic, the version and both CRCs (PROTOCOL.md section 8)."""
    if len(buf) < HEADER_LEN:
        return None
    head = buf[:HEADER_LEN]
    if head[:4] != MAGIC or head[4] != VERSION:
        raise ProtocolError("not a courier v1 frame")
    (kind, _flags, request_id, word, _deadline, body_len, body_crc,
     header_crc) = struct.unpack(">BHQIIIII", head[5:])
    if crc32(head[:32]) != header_crc:
        raise ProtocolError("header checksum mismatch")
    if len(buf) < HEADER_LEN + body_len:
        return None
    body = buf[HEADER_LEN:HEADER_LEN + body_len]
    if crc32(body) != body_crc:
        raise ProtocolError("body checksum mismatch")
    return (kind, request_id, word, body), buf[HEADER_LEN + body_len:]


def tls_context(ca=None, cert=None, key=None):
    """PROTOCOL.md section 17: TLS 1.3 only, ALPN courier/1, the server's chain checked against
    `ca` (else the system's roots) and its name against its certificate's DNS or IP SANs
    (create_default_context: PROTOCOL_TLS_CLIENT, CERT_REQUIRED, check_hostname); a client
    certificate for mutual TLS if given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols([ALPN])
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def not_tls(received, sock):
    """PROTOCOL.md section 17.4: a plaintext courier server answers a ClientHello with an ERROR
    frame, so its first bytes are the magic where a TLS record should begin. The report of
    that, with the ERROR's message if it arrives whole; None for bytes that are not courier."""
    if not received or not MAGIC.startswith(received[:4]):
        return None
    report = "the server does not speak TLS on this port (it answered in plaintext courier)"
    try:
        while (parsed := split_frame(received)) is None and len(received) < 65536:
            chunk = sock.recv(65536)
            if not chunk:
                return report
            received += chunk
    except (OSError, ProtocolError):
        return report
    if parsed is None or parsed[0][0] != ERROR:
        return report
    _kind, _rid, word, body = parsed[0]
    return f"{report}: ERROR {StatusError(word, body.decode('utf-8', 'replace'))}"


class TlsStream:
    """TLS over a connected socket, through memory BIOs so that the bytes a plaintext server
    answers with can be shown (PROTOCOL.md section 17.4). sendall, recv and close, like the
    socket it wraps."""

    def __init__(self, sock, context, server_name):
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=server_name)
        received = b""  # the server's bytes, to recognise a plaintext courier answer
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                chunk = sock.recv(65536)
                if not chunk:
                    raise ProtocolError(not_tls(received, sock) or
                                        "the server closed the connection during the TLS "
                                        "handshake")
                received = (received + chunk)[:65536]
                self.incoming.write(chunk)
            except ssl.SSLCertVerificationError as err:
                raise ProtocolError(f"TLS: the server's certificate is refused: "
                                    f"{err.verify_message}") from None
            except ssl.SSLError as err:
                raise ProtocolError(not_tls(received, sock) or
                                    f"TLS handshake failed: {err.reason or err}") from None
        self.flush()
        selected = self.tls.selected_alpn_protocol()
        if selected not in (None, ALPN):  # section 17.3: if one was selected, it is courier/1
            raise ProtocolError(f"the server selected ALPN {selected!r}, not {ALPN}")

    def flush(self):
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def sendall(self, data):
        view = memoryview(data)
        while view:
            try:
                view = view[self.tls.write(view):]
            except ssl.SSLError as err:
                raise ProtocolError(f"TLS: {err.reason or err}") from None
            self.flush()

    def recv(self, size):
        """Up to `size` bytes; b"" once the server has closed with close_notify."""
        while True:
            try:
                data = self.tls.read(size)
                self.flush()
                return data
            except ssl.SSLWantReadError:
                self.flush()
                chunk = self.sock.recv(65536)
                if not chunk:
                    # Section 17.5: an end without close_notify is a failed transport.
                    raise ProtocolError("the connection ended without TLS close_notify: "
                                        "outcome unknown")
                self.incoming.write(chunk)
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLError as err:  # a fatal alert, e.g. the server refused our certificate
                raise ProtocolError(f"TLS: {err.reason or err}") from None

    def close(self):
        """Section 17.5: close_notify, then the TCP close (the server's own is not awaited)."""
        try:
            self.tls.unwrap()
        except ssl.SSLError:
            pass
        try:
            self.flush()
        except OSError:
            pass
        self.sock.close()


class Client:
    def __init__(self, addr, timeout=10.0, tls=None, server_name=None, token=None):
        host, port = addr.rsplit(":", 1)
        host = host.strip("[]")  # [::1]:7878
        sock = socket.create_connection((host, int(port)), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = sock if tls is None else TlsStream(sock, tls, server_name or host)
        except BaseException:
            sock.close()
            raise
        self.buf = b""
        self.next_id = 1  # section 11: never 0, increasing
        self.arrived = {}  # request id -> (kind, word, body) that came before it was asked for
        self.goaway = None  # the last request id a GOAWAY said the server will process
        self.identity = None  # the name AUTH proved
        if token is not None:
            self.authenticate(token)

    def close(self):
        self.sock.close()

    def authenticate(self, token):
        """PROTOCOL.md section 18.3: AUTH once, before any other request; waits for the answer
        and returns the identity's name."""
        try:
            self.identity = self.call(ADMIN_AUTH, token).decode("utf-8")
        except ErrorFrame:
            raise
        except StatusError as err:
            if err.code == FAILED_PRECONDITION:
                raise AuthError(f"the server does not authenticate with tokens ({err})") from None
            raise AuthError(f"authentication failed: {err}") from None
        return self.identity

    def whoami(self):
        """SERVICES.md section 0.3: (source, name) of the connection's identity."""
        body = self.call(ADMIN_WHOAMI)
        if not body:
            raise ProtocolError("empty WHOAMI answer")
        return SOURCES.get(body[0], f"source {body[0]}"), body[1:].decode("utf-8")

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
            parsed = split_frame(self.buf)
            if parsed is not None:
                frame, self.buf = parsed
                return frame
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
                raise ErrorFrame(word, body.decode("utf-8"))
            elif kind == PING:
                self.sock.sendall(encode_frame(PONG, rid))
        word, body = self.arrived.pop(request_id)
        if word != OK:
            raise StatusError(word, body.decode("utf-8"))
        return body

    def methods(self):
        """METHODS (SERVICES.md 0.5): a list of (service, method, name, request, response)."""
        entries = []
        for line in self.call(ADMIN_METHODS).decode("ascii").splitlines():
            fields = line.split(" ")
            if len(fields) != 5 or not all(fields[2:]):
                raise ProtocolError(f"bad METHODS line {line!r}")
            entries.append((int(fields[0]), int(fields[1]), *fields[2:]))
        return entries

    def call(self, service_method, body=b"", deadline_ms=0):
        return self.wait(self.send(service_method, body, deadline_ms))

    def ping(self, ping_id=0xC0FFEE):
        self.sock.sendall(encode_frame(PING, ping_id))
        while True:
            kind, rid, word, body = self.read_frame()
            if kind == PONG and rid == ping_id:
                return
            if kind == ERROR:
                raise ErrorFrame(word, body.decode("utf-8"))
            if kind == PING:
                self.sock.sendall(encode_frame(PONG, rid))


def read_token(path):
    """The token in the file `path` without its final line ending, else $COURIER_TOKEN; None
    when neither is given. The error names where the token came from, never the token."""
    if path is not None:
        with open(path, "rb") as f:
            token = f.read()
        token = token[:-1] if token.endswith(b"\n") else token
        token = token[:-1] if token.endswith(b"\r") else token
        where = path
    else:
        token = os.environ.get("COURIER_TOKEN", "").encode()
        if not token:
            return None
        where = "COURIER_TOKEN"
    if not 1 <= len(token) <= MAX_TOKEN_LEN:
        raise ValueError(f"the token in {where} is {len(token)} bytes; a token is 1 to "
                         f"{MAX_TOKEN_LEN} bytes")
    return token


VALUE_OPTIONS = ("--addr", "--deadline", "--ca", "--server-name", "--cert", "--key",
                 "--token-file", "--shards")
KEY_COMMANDS = ("set", "get", "del", "owner")
TLS_OPTIONS = ("--ca", "--server-name", "--cert", "--key")


def main(argv):
    opts, deadline, use_tls = {}, 0, False
    while argv and (argv[0] == "--tls" or (argv[0] in VALUE_OPTIONS and len(argv) >= 2)):
        if argv[0] == "--tls":
            use_tls, argv = True, argv[1:]
            continue
        if argv[0] == "--deadline":
            if float(argv[1]) <= 0:
                # Section 12: a deadline already passed is not sent.
                print("client.py: the deadline has already passed; nothing sent",
                      file=sys.stderr)
                return 2
            deadline = deadline_ms(float(argv[1]))
        opts[argv[0]] = argv[1]
        argv = argv[2:]
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    misplaced = [o for o in TLS_OPTIONS if o in opts and not use_tls]
    if misplaced:
        print(f"client.py: {misplaced[0]} needs --tls", file=sys.stderr)
        return 2
    if ("--cert" in opts) != ("--key" in opts):
        print("client.py: --cert and --key go together", file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    if "--shards" in opts:
        shards = opts["--shards"].split(",")
        if "--addr" in opts:
            print("client.py: --shards replaces --addr", file=sys.stderr)
            return 2
        if command not in KEY_COMMANDS:
            print(f"client.py: --shards is for {', '.join(KEY_COMMANDS)}", file=sys.stderr)
            return 2
        if not all(shards) or len(set(shards)) != len(shards):
            print("client.py: --shards needs distinct addresses, separated by commas",
                  file=sys.stderr)
            return 2
        if not args:
            print(__doc__.strip(), file=sys.stderr)
            return 2
        # The key's owner, and no other server, whether it is up or not. fsencode: the
        # bytes as given, even those that are not UTF-8 (owner takes any key).
        opts["--addr"] = shard_owner(shards, os.fsencode(args[0]))
        if command == "owner":
            print(opts["--addr"])
            return 0
    elif command == "owner":
        print("client.py: owner needs --shards", file=sys.stderr)
        return 2
    opts.setdefault("--addr", "127.0.0.1:7878")
    client = None
    try:
        token = read_token(opts.get("--token-file"))
        if token is not None and not use_tls:
            print("client.py: warning: the token is sent without TLS (PROTOCOL.md section "
                  "18.3)", file=sys.stderr)
        tls = tls_context(opts.get("--ca"), opts.get("--cert"), opts.get("--key")) \
            if use_tls else None
        client = Client(opts["--addr"], tls=tls, server_name=opts.get("--server-name"),
                        token=token)
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
        elif command == "whoami":
            source, name = client.whoami()
            print(source if source == "anonymous" else f"{source} {name}")
        elif command == "methods":
            for service, method, name, request, response in client.methods():
                print(f"{service}/{method} {name}({request}) -> {response}")
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
    except (OSError, ProtocolError, AuthError, IndexError, ValueError) as err:
        print(f"client.py: {err}", file=sys.stderr)
        return 2
    finally:
        if client is not None:
            client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
