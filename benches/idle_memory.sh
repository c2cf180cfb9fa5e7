#!/usr/bin/env bash
# Memory per idle connection: kv-server beside redis-server, 10,000 idle clients each.
#
# Run: bash benches/idle_memory.sh   (from anywhere; builds kv-server in release mode)
#
# For each server and each of RUNS runs, on a freshly started server: read VmRSS, open
# CONNS connections, make each do one round trip (courier: PING -> PONG; redis: PING ->
# +PONG), hold them idle for SETTLE seconds, read VmRSS again, check the server counts them
# (courier: admin STATS connections_open; redis: INFO clients), then time fresh clients
# (connect + one PING round trip) while the idle ones are held. Prints one table of medians.
# VmRSS is user-space memory only: kernel socket buffers are not in it, for either server.
# Target: at most 1 KiB per idle connection for courier. redis shrinks an idle client's query
# and reply buffers in its periodic client cron only some seconds after the client goes idle,
# so with the default SETTLE of 2 s its figure still holds part of those buffers; SETTLE=8
# gives its settled figure.
#
# With TLS=1 every connection is TLS instead (TLS 1.3, with python3's ssl module): the run
# makes an EC P-256 CA and a server certificate for 127.0.0.1 with openssl (lib.sh's
# make_tls_certs); kv-server gets --tls-cert/--tls-key, redis-server --port 0 --tls-port with
# the same certificate and --tls-auth-clients no; the clients verify it against the CA (and
# offer ALPN courier/1 to courier). Each connection's handshake is a full one, then its PING,
# and it is held idle as above; new clients are timed with their handshake. The 1 KiB target
# is for plaintext connections: over TLS the table has no target.
#
# Environment: CONNS (10000), RUNS (3), SETTLE (2 seconds), TLS (0; 1: TLS connections).

set -euo pipefail

CONNS=${CONNS:-10000}
RUNS=${RUNS:-3}
SETTLE=${SETTLE:-2}
TLS=${TLS:-0}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d)
SERVER_PID=""

cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }

# --- prerequisites -------------------------------------------------------------------------

if [[ "$TLS" != 0 && "$TLS" != 1 ]]; then
    log "TLS must be 0 or 1, not \"$TLS\""
    exit 2
fi

(cd "$ROOT" && cargo build --release --bin kv-server) >&2
KV_SERVER="$ROOT/target/release/kv-server"

if ! command -v redis-server >/dev/null 2>&1; then
    log "redis-server not found; installing it"
    apt-get update >&2 && apt-get install -y redis-server >&2
fi

CA=""
if [[ "$TLS" == 1 ]]; then
    command -v openssl >/dev/null 2>&1 || { log "openssl not found"; exit 1; }
    # lib.sh's make_tls_certs, in a subshell: lib.sh's other functions (and the variables
    # its init_run would set) are not this script's, and must not replace them.
    (
        # shellcheck source=/dev/null
        source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
        make_tls_certs "$WORK/certs"
    )
    CA="$WORK/certs/ca.pem"
fi

# Both ends of CONNS connections need a descriptor each, in the helper and in the server.
WANT_FDS=30000
if ! ulimit -n "$WANT_FDS" 2>/dev/null; then
    hard=$(ulimit -Hn)
    if [[ "$hard" == unlimited ]]; then hard=$WANT_FDS; fi
    ulimit -n "$hard"
    log "note: cannot raise the open-file limit to $WANT_FDS (hard limit $hard); using $(ulimit -n)"
fi
if (($(ulimit -n) < CONNS + 100)); then
    log "open-file limit $(ulimit -n) is too low for $CONNS connections"
    exit 1
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_listening() { # port
    for _ in $(seq 100); do
        if python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    log "server did not start listening on port $1"
    return 1
}

start_server() { # kind port
    local tls=()
    case "$1" in
    courier)
        if [[ "$TLS" == 1 ]]; then
            tls=(--tls-cert "$WORK/certs/server.pem" --tls-key "$WORK/certs/server.key")
        fi
        "$KV_SERVER" --addr "127.0.0.1:$2" --max-connections 20000 --in-memory "${tls[@]}" \
            >"$WORK/courier.log" 2>&1 &
        ;;
    redis)
        tls=(--port "$2")
        if [[ "$TLS" == 1 ]]; then
            tls=(--port 0 --tls-port "$2" --tls-cert-file "$WORK/certs/server.pem"
                --tls-key-file "$WORK/certs/server.key" --tls-ca-cert-file "$CA"
                --tls-auth-clients no)
        fi
        redis-server "${tls[@]}" --bind 127.0.0.1 --save '' --appendonly no \
            --maxclients 20000 --daemonize no --logfile '' >"$WORK/redis.log" 2>&1 &
        ;;
    esac
    SERVER_PID=$!
    wait_listening "$2"
}

stop_server() {
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# --- the client: one run against one server --------------------------------------------------
# Prints: kind rss_before_kib rss_idle_kib open_by_server new_client_ms
cat >"$WORK/idle_client.py" <<'PY'
import resource
import socket
import statistics
import struct
import sys
import time
import zlib

kind, port, pid, conns, settle = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                                  int(sys.argv[4]), float(sys.argv[5]))
ca = sys.argv[6] if len(sys.argv) > 6 else ""  # TLS=1: the CA the server's certificate chains to
tls = None
if ca:
    import ssl

    tls = ssl.create_default_context(cafile=ca)  # verifies the chain and the IP SAN
    tls.minimum_version = ssl.TLSVersion.TLSv1_3
    if kind == "courier":
        tls.set_alpn_protocols(["courier/1"])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

PING, PONG, REQUEST = 3, 4, 1
BATCH = 500


def crc32(data):
    return zlib.crc32(data) & 0xFFFFFFFF


def frame(kind_, request_id, word=0, body=b""):
    """proto-spec/PROTOCOL.md section 3: 32 header bytes, their CRC-32, then the body."""
    head = b"COUR" + struct.pack(">BBHQIIII", 1, kind_, 0, request_id, word, 0, len(body),
                                 crc32(body))
    return head + struct.pack(">I", crc32(head)) + body


def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise RuntimeError("server closed the connection")
        data += chunk
    return data


def courier_frame(sock):
    head = recv_exactly(sock, 36)
    if head[:4] != b"COUR" or crc32(head[:32]) != struct.unpack(">I", head[32:])[0]:
        raise RuntimeError("bad courier frame")
    body_len = struct.unpack(">I", head[24:28])[0]
    return head[5], struct.unpack(">Q", head[8:16])[0], recv_exactly(sock, body_len)


def ping_request(i):
    return frame(PING, i) if kind == "courier" else b"PING\r\n"


def check_pong(sock, i):
    if kind == "courier":
        k, rid, _ = courier_frame(sock)
        if (k, rid) != (PONG, i):
            raise RuntimeError(f"expected PONG {i}, got kind {k} id {rid}")
    elif recv_exactly(sock, 7) != b"+PONG\r\n":
        raise RuntimeError("expected +PONG")


def connect():
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is None:
        return s
    s = tls.wrap_socket(s, server_hostname="127.0.0.1")  # the full handshake, here
    if kind == "courier" and s.selected_alpn_protocol() != "courier/1":
        raise RuntimeError(f"ALPN: {s.selected_alpn_protocol()!r}, not courier/1")
    return s


def open_by_server(sock):
    """How many connections the server itself counts as open."""
    if kind == "courier":
        sock.sendall(frame(REQUEST, 1, word=(0 << 16) | 1))  # admin STATS (service 0, method 1)
        k, _, body = courier_frame(sock)
        stats = dict(line.split(" ") for line in body.decode().splitlines())
        return int(stats["connections_open"])
    sock.sendall(b"INFO clients\r\n")
    header = b""
    while not header.endswith(b"\r\n"):
        header += recv_exactly(sock, 1)
    body = recv_exactly(sock, int(header[1:-2]) + 2).decode()
    return int(body.split("connected_clients:")[1].split()[0])


before = rss_kib()
held = []
for start in range(0, conns, BATCH):
    batch = [connect() for _ in range(min(BATCH, conns - start))]
    for i, s in enumerate(batch):
        s.sendall(ping_request(start + i + 1))
    for i, s in enumerate(batch):
        check_pong(s, start + i + 1)
    held.extend(batch)
time.sleep(settle)
idle = rss_kib()

rtts = []
for i in range(5):
    t0 = time.perf_counter()
    s = connect()
    s.sendall(ping_request(1))
    check_pong(s, 1)
    rtts.append((time.perf_counter() - t0) * 1000)
    if i == 4:
        counted = open_by_server(s) - 1  # less this fresh client
    s.close()
for s in held:
    s.close()
print(kind, before, idle, counted, f"{statistics.median(rtts):.3f}")
PY

# --- runs ------------------------------------------------------------------------------------

: >"$WORK/results"
for run in $(seq "$RUNS"); do
    for kind in courier redis; do
        port=$(free_port)
        start_server "$kind" "$port"
        log "run $run/$RUNS: $kind (pid $SERVER_PID, port $port): $CONNS idle connections"
        python3 "$WORK/idle_client.py" "$kind" "$port" "$SERVER_PID" "$CONNS" "$SETTLE" \
            ${CA:+"$CA"} | tee -a "$WORK/results" >&2
        stop_server
    done
done

python3 - "$WORK/results" "$CONNS" "$RUNS" "$SETTLE" "$TLS" <<'PY'
import statistics
import sys

path, conns, runs, settle = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
tls = sys.argv[5] == "1"
rows = {}
for line in open(path):
    kind, before, idle, counted, rtt = line.split()
    rows.setdefault(kind, []).append((int(before), int(idle), int(counted), float(rtt)))


def med(values):
    return statistics.median(values)


summary = {}
for kind, runs_ in rows.items():
    summary[kind] = {
        "before": med([r[0] for r in runs_]),
        "idle": med([r[1] for r in runs_]),
        "per_conn": med([(r[1] - r[0]) * 1024 / conns for r in runs_]),
        "counted": min(r[2] for r in runs_),
        "rtt": med([r[3] for r in runs_]),
    }
redis_per_conn = summary["redis"]["per_conn"]
print()
if tls:
    print(f"Idle TLS connections (TLS 1.3, a full handshake each, then one PING): {conns:,} per "
          f"server; medians of {runs} runs, each on a fresh server.")
    print("RSS = VmRSS (user space; kernel socket buffers not included). New client = connect + "
          "TLS handshake + one PING round trip while the idle ones are held (median of 5 per run).")
else:
    print(f"Idle connections: {conns:,} per server; medians of {runs} runs, each on a fresh server.")
    print("RSS = VmRSS (user space; kernel socket buffers not included). New client = connect + "
          "one PING round trip while the idle ones are held (median of 5 per run).")
print()
print(f"| {'server':<10} | {'RSS before':>12} | {'RSS with ' + format(conns, ',') + ' idle':>22} "
      f"| {'bytes/idle conn':>15} | {'held (server count)':>19} | {'new client ms':>13} "
      f"| {'vs redis':>8} |")
print(f"|{'-' * 12}|{'-' * 14}|{'-' * 24}|{'-' * 17}|{'-' * 21}|{'-' * 15}|{'-' * 10}|")
for kind in ("courier", "redis"):
    s = summary[kind]
    ratio = s["per_conn"] / redis_per_conn if redis_per_conn > 0 else float("nan")
    print(f"| {kind:<10} | {s['before']:>8,.0f} KiB | {s['idle']:>18,.0f} KiB "
          f"| {s['per_conn']:>15,.0f} | {s['counted']:>19,} | {s['rtt']:>13.3f} | {ratio:>8.2f} |")
print()
courier = summary["courier"]["per_conn"]
if tls:
    print(f"Over TLS: no target (the 1,024-byte target is for plaintext connections); courier "
          f"{courier:,.0f} bytes per idle connection, redis {redis_per_conn:,.0f}.")
else:
    verdict = "met" if courier <= 1024 else "NOT met"
    print(f"Target <= 1,024 bytes per idle connection for courier: {verdict} ({courier:,.0f} bytes).")
print(f"Measured {settle:g} s after the round trips; redis shrinks idle clients' buffers in its "
      "client cron some seconds after they go idle (SETTLE=8 for its settled figure).")
PY
