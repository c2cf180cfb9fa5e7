#!/usr/bin/env bash
# courier beside its peers on this machine, in one table: kv-server against redis-server
# (courier-bench against redis-benchmark) and echo-server against iperf3; and in a second
# one, kv-server's CPU per request beside two reference servers (benches/floor, see below).
#
# Run: bash benches/compare.sh [--markdown]   (from anywhere; builds the binaries and the
# reference servers' crate, benches/floor, in release mode: the first build of benches/floor
# fetches and compiles tokio, which the courier-rpc crate itself never builds; installs
# redis-server and iperf3 with apt-get when they are missing)
#
# Everything listens on 127.0.0.1. One kv-server, one redis-server, one echo-server and one
# iperf3 server are started for the whole run (on free ports) and stopped on exit, failure or
# interrupt. Both key-value servers are first filled with every key of the keyspace (KEYSPACE
# keys, VALUE_SIZE-byte values), so every GET finds its key on both sides. Then, ROUNDS times,
# each case runs once against courier and once against its peer, back to back (courier first
# in odd rounds, the peer first in even ones), and the table shows the medians over the
# rounds:
#
#   GET and SET, pipeline 1 and PIPELINE deep: CLIENTS connections, VALUE_SIZE-byte values,
#     keys drawn uniformly from KEYSPACE, a fixed number of requests (REQUESTS unpipelined,
#     REQUESTS_PIPELINED pipelined) on both sides; LOAD_THREADS load-generator threads on
#     both sides. One by default: redis-benchmark's default, and on a 2-core machine it leaves
#     the server a core of its own (redis-benchmark runs --threads N only when N > 1).
#   echo with 1 MiB frames against iperf3's single-stream loopback bandwidth, ECHO_SECONDS
#     each: courier-bench --workload echo with ECHO_CLIENTS connection(s) ECHO_PIPELINE deep.
#     One connection, like iperf3's one stream; two frames kept outstanding (--window), so
#     that one frame travels to the server while the previous one comes back (deeper was no
#     faster on a 2-core machine). echo-server accepts bodies up to 4 MiB by default.
#
# For each case: throughput, p99 latency as the load generator reports it, and the server's
# CPU time (user + system, all its threads: /proc/PID/stat before and after the case) per
# million requests (per GB of payload for echo and iperf3). The courier/peer column is the
# median over the rounds of the ratio within each round.
#
# Beside the kv cases, the same load runs against two reference servers (benches/floor, one
# thread each, started for the whole run like the others), so that courier's server CPU per
# request can be read against what the work itself costs:
#
#   floor   floor-server: a bare mio server (the same mio major version as courier), one
#           thread, that does only what any server of length-prefixed frames must: read into
#           a reused buffer until the socket is drained, find each frame's 4-byte length and
#           opcode, and write a canned answer of the size ldc-server sends (all the answers
#           of a read in one write); no checksum, no map, no allocation per request.
#   ldc     ldc-server: what a user writes in an afternoon: tokio on one thread (a
#           current-thread runtime), tokio-util's LengthDelimitedCodec, a 1-byte opcode, a
#           HashMap store, no checks and no limits, one flush per batch of requests read.
#
# Both speak a wire of their own (a u32 length, then opcode, u16 key length, key, value) and
# are driven by raw-bench, benches/floor's load driver in courier-bench's shape (mio, each
# connection a batch of PIPELINE requests outstanding, keys drawn uniformly, every answer's
# length checked: a wrong one fails the run), with the same CLIENTS, pipeline, VALUE_SIZE,
# KEYSPACE, request count and LOAD_THREADS; ldc-server is first filled with the keyspace. In
# each round, each kv case runs against courier, redis, floor and ldc back to back (in that
# order in odd rounds, the reverse in even ones), and each server's CPU per request is
# measured as kv-server's is. A second table shows, per kv case, the server CPU in
# microseconds per request of courier, floor and ldc, and courier/floor and courier/ldc: the
# median of the per-round ratios, with the range over the rounds. Server CPU is the process's
# user + system time, so it includes the kernel's work for the server's syscalls: for the
# floor that is most of it, and the same reads and writes are part of every server's figure.
#
# Targets (the "target" column checks them):
#   kv GET and SET throughput >= 1.0x redis unpipelined and >= 1.2x pipelined PIPELINE deep;
#   kv server CPU per request <= redis's; kv p99 <= redis's;
#   echo with 1 MiB frames >= 40% of iperf3's single-stream loopback bandwidth.
# and in the second table (medians of the per-round ratios):
#   kv server CPU per request <= 1.10x the floor's unpipelined, <= 1.6x PIPELINE deep;
#   kv server CPU per request <= 0.85x ldc's in every case.
#
# Environment (defaults in parentheses):
#   ROUNDS (3)                  rounds; the table shows medians
#   REQUESTS (200000)           requests per unpipelined kv case
#   REQUESTS_PIPELINED (1000000) requests per pipelined kv case
#   CLIENTS (50)                connections per kv case
#   PIPELINE (16)               depth of the pipelined kv cases
#   VALUE_SIZE (64)             bytes per value
#   KEYSPACE (100000)           distinct keys
#   LOAD_THREADS (1)            load-generator threads, both sides
#   ECHO_SECONDS (5)            seconds per echo / iperf3 case
#   ECHO_CLIENTS (1)            courier-bench connections for echo (iperf3 uses one stream)
#   ECHO_PIPELINE (2)           1 MiB frames each echo connection keeps outstanding
#   CASE_TIMEOUT (120)          seconds after which one load-generator run is killed (failure)
#   COURIER_SERVER_ARGS (--loops N) kv-server flags; N is the cores the load generator leaves
#                               free (cores - LOAD_THREADS, at least 1): on this 2-core
#                               machine one loop, one core, as redis-server's one thread
#   ECHO_SERVER_ARGS ($COURIER_SERVER_ARGS) echo-server flags
#   MARKDOWN (0)                1: print the table as Markdown (same as --markdown)
#   RAW_DIR ()                  a directory to keep every raw tool output in

set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-200000}
REQUESTS_PIPELINED=${REQUESTS_PIPELINED:-1000000}
CLIENTS=${CLIENTS:-50}
PIPELINE=${PIPELINE:-16}
VALUE_SIZE=${VALUE_SIZE:-64}
KEYSPACE=${KEYSPACE:-100000}
LOAD_THREADS=${LOAD_THREADS:-1}
ECHO_SECONDS=${ECHO_SECONDS:-5}
ECHO_CLIENTS=${ECHO_CLIENTS:-1}
ECHO_PIPELINE=${ECHO_PIPELINE:-2}
CASE_TIMEOUT=${CASE_TIMEOUT:-120}
# The server gets the cores the load generator does not use: a second event loop on a core
# the load generator needs only makes the two fight over it.
FREE_CORES=$(free_cores "$LOAD_THREADS")
COURIER_SERVER_ARGS=${COURIER_SERVER_ARGS:---loops $FREE_CORES}
ECHO_SERVER_ARGS=${ECHO_SERVER_ARGS:-$COURIER_SERVER_ARGS}
MARKDOWN=${MARKDOWN:-0}
RAW_DIR=${RAW_DIR:-}
ECHO_FRAME=1048576

parse_args "${BASH_SOURCE[0]}" "$@"

require_positive_integers ROUNDS REQUESTS REQUESTS_PIPELINED CLIENTS PIPELINE VALUE_SIZE \
    KEYSPACE LOAD_THREADS ECHO_SECONDS ECHO_CLIENTS ECHO_PIPELINE CASE_TIMEOUT

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
init_run

# --- prerequisites -------------------------------------------------------------------------

(cd "$ROOT" && cargo build --release --bins) >&2
KV_SERVER="$ROOT/target/release/kv-server"
ECHO_SERVER="$ROOT/target/release/echo-server"
BENCH="$ROOT/target/release/courier-bench"
FLOOR="$ROOT/benches/floor"
log "building the reference servers (benches/floor) in release mode"
(cd "$FLOOR" && cargo build --release --bins) >&2
FLOOR_SERVER="$FLOOR/target/release/floor-server"
LDC_SERVER="$FLOOR/target/release/ldc-server"
RAW_BENCH="$FLOOR/target/release/raw-bench"

missing=()
for tool in redis-server redis-benchmark redis-cli; do
    command -v "$tool" >/dev/null 2>&1 || missing+=(redis-server)
done
command -v iperf3 >/dev/null 2>&1 || missing+=(iperf3)
if ((${#missing[@]} > 0)); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    install_packages "${missing[@]}"
fi
require_commands redis-server redis-benchmark redis-cli iperf3 timeout

CLK_TCK=$(getconf CLK_TCK)
read -r -a COURIER_EXTRA <<<"$COURIER_SERVER_ARGS"
read -r -a ECHO_EXTRA <<<"$ECHO_SERVER_ARGS"
if "$KV_SERVER" --help 2>/dev/null | grep -q -- '--in-memory'; then
    COURIER_EXTRA=(--in-memory "${COURIER_EXTRA[@]}")
fi
# redis-benchmark is single-threaded by default; its --threads switches to another code path.
REDIS_THREADS=()
if ((LOAD_THREADS > 1)); then REDIS_THREADS=(--threads "$LOAD_THREADS"); fi

# --- servers -------------------------------------------------------------------------------

KV_PORT=$(free_port)
start kv-server "$KV_SERVER" --addr "127.0.0.1:$KV_PORT" "${COURIER_EXTRA[@]}"
KV_PID=$LAST_PID
wait_listening "$KV_PID" "$KV_PORT" kv-server

REDIS_PORT=$(free_port)
start redis-server redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
    --appendonly no --daemonize no --logfile '' --protected-mode yes
REDIS_PID=$LAST_PID
wait_listening "$REDIS_PID" "$REDIS_PORT" redis-server

ECHO_PORT=$(free_port)
start echo-server "$ECHO_SERVER" --addr "127.0.0.1:$ECHO_PORT" "${ECHO_EXTRA[@]}"
ECHO_PID=$LAST_PID
wait_listening "$ECHO_PID" "$ECHO_PORT" echo-server

IPERF_PORT=$(free_port)
start iperf3-server iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT"
IPERF_PID=$LAST_PID
wait_listening "$IPERF_PID" "$IPERF_PORT" iperf3-server

FLOOR_PORT=$(free_port)
start floor-server "$FLOOR_SERVER" --addr "127.0.0.1:$FLOOR_PORT" --value-size "$VALUE_SIZE"
FLOOR_PID=$LAST_PID
wait_listening "$FLOOR_PID" "$FLOOR_PORT" floor-server

LDC_PORT=$(free_port)
start ldc-server "$LDC_SERVER" --addr "127.0.0.1:$LDC_PORT"
LDC_PID=$LAST_PID
wait_listening "$LDC_PID" "$LDC_PORT" ldc-server

log "kv-server pid $KV_PID port $KV_PORT; redis-server pid $REDIS_PID port $REDIS_PORT;" \
    "echo-server pid $ECHO_PID port $ECHO_PORT; iperf3 -s pid $IPERF_PID port $IPERF_PORT;" \
    "floor-server pid $FLOOR_PID port $FLOOR_PORT; ldc-server pid $LDC_PID port $LDC_PORT"

# --- prefill -------------------------------------------------------------------------------
# Every key of the keyspace, once, on both sides. courier-bench names keys key:NNNNNNNNNN,
# redis-benchmark key:NNNNNNNNNNNN (-r); the values are VALUE_SIZE bytes of 'x' on both.
# ldc-server too (raw-bench names keys as courier-bench does); the floor stores nothing.

log "prefill: $KEYSPACE keys of $VALUE_SIZE bytes on each server"
bounded "courier prefill" "$BENCH" --addr "127.0.0.1:$KV_PORT" --workload get --prefill \
    --keyspace "$KEYSPACE" --value-size "$VALUE_SIZE" --clients 1 --threads 1 --requests 1 \
    --json >"$WORK/prefill-courier.json"
prefill_redis redis-cli -h 127.0.0.1 -p "$REDIS_PORT"
bounded "ldc prefill" "$RAW_BENCH" --addr "127.0.0.1:$LDC_PORT" --prefill --requests 0 \
    --keyspace "$KEYSPACE" --value-size "$VALUE_SIZE" --clients 1 >"$WORK/prefill-ldc.json"

# --- the cases -----------------------------------------------------------------------------
# Each run appends "round case side throughput p99_ms cpu_per_unit" to $WORK/results:
# kv cases: req/s, ms, CPU s per 1M requests; echo: MB/s (10^6 bytes, one way), ms or -,
# CPU s per GB (10^9 bytes) of one-way payload. The reference servers' runs append the same
# fields (side floor or ldc) to $WORK/refs.

: >"$WORK/results"
: >"$WORK/refs"
: >"$WORK/commands"
WARNINGS=()

run_courier_kv() { # case workload pipeline requests
    local out="$WORK/r$ROUND-$1-courier.json" before after cmd
    cmd=("$BENCH" --addr "127.0.0.1:$KV_PORT" --workload "$2" --clients "$CLIENTS"
        --threads "$LOAD_THREADS" --pipeline "$3" --requests "$4" --value-size "$VALUE_SIZE"
        --keyspace "$KEYSPACE" --json)
    note_command "${cmd[@]}"
    before=$(cpu_ticks "$KV_PID")
    bounded "courier-bench $1" "${cmd[@]}" >"$out"
    after=$(cpu_ticks "$KV_PID")
    bench_errors "$out" "round $ROUND $1 courier"
    awk -v r="$ROUND" -v c="$1" -v t="$(json_number "$out" throughput)" \
        -v p="$(json_number "$out" p99)" -v n="$(json_number "$out" requests)" \
        -v d=$((after - before)) -v hz="$CLK_TCK" \
        'BEGIN { printf "%s %s courier %s %s %.6f\n", r, c, t, p, d / hz / n * 1e6 }' \
        >>"$WORK/results"
    log_result 7
}

run_redis_kv() { # case test pipeline requests
    local out="$WORK/r$ROUND-$1-redis.csv" before after cmd
    cmd=(redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c "$CLIENTS" -d "$VALUE_SIZE"
        -r "$KEYSPACE" -n "$4" -P "$3" -t "$2" "${REDIS_THREADS[@]}" --csv --precision 3)
    note_command "${cmd[@]}"
    before=$(cpu_ticks "$REDIS_PID")
    bounded "redis-benchmark $1" "${cmd[@]}" >"$out"
    after=$(cpu_ticks "$REDIS_PID")
    # Columns by header name: "test","rps",...,"p99_latency_ms",...
    awk -F, -v r="$ROUND" -v c="$1" -v test="$2" -v n="$4" -v d=$((after - before)) \
        -v hz="$CLK_TCK" '
        { gsub(/"/, "") }
        NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        toupper($1) == toupper(test) && !done {
            printf "%s %s redis %s %s %.6f\n", r, c, $col["rps"], $col["p99_latency_ms"], d / hz / n * 1e6
            done = 1
        }
        END { if (!done || !col["rps"] || !col["p99_latency_ms"]) exit 1 }' "$out" \
        >>"$WORK/results" || die "cannot read redis-benchmark's output: $(cat "$out")"
    log_result 7
}

run_reference_kv() { # side (floor or ldc) case workload pipeline requests
    local side=$1 out="$WORK/r$ROUND-$2-$1.json" pid port before after cmd
    case "$side" in
    floor) pid=$FLOOR_PID port=$FLOOR_PORT ;;
    ldc) pid=$LDC_PID port=$LDC_PORT ;;
    esac
    cmd=("$RAW_BENCH" --addr "127.0.0.1:$port" --workload "$3" --clients "$CLIENTS"
        --threads "$LOAD_THREADS" --pipeline "$4" --requests "$5" --value-size "$VALUE_SIZE"
        --keyspace "$KEYSPACE")
    note_command "${cmd[@]}"
    before=$(cpu_ticks "$pid")
    bounded "raw-bench $2 $side" "${cmd[@]}" >"$out"
    after=$(cpu_ticks "$pid")
    awk -v r="$ROUND" -v c="$2" -v s="$side" -v t="$(json_number "$out" requests_per_second)" \
        -v p="$(json_number "$out" p99_ms)" -v n="$(json_number "$out" requests)" \
        -v d=$((after - before)) -v hz="$CLK_TCK" \
        'BEGIN { if (n + 0 <= 0) exit 1; printf "%s %s %s %s %s %.6f\n", r, c, s, t, p, d / hz / n * 1e6 }' \
        >>"$WORK/refs" || die "cannot read raw-bench's output: $(cat "$out")"
    log "  $(tail -n 1 "$WORK/refs" | awk '{ printf "%-7s throughput %s  p99 %s ms  cpu %s", $3, $4, $5, $6 }')"
}

run_courier_echo() {
    local out="$WORK/r$ROUND-echo-courier.json" before after cmd
    cmd=("$BENCH" --addr "127.0.0.1:$ECHO_PORT" --workload echo --clients "$ECHO_CLIENTS"
        --threads "$LOAD_THREADS" --pipeline "$ECHO_PIPELINE" --window --duration "$ECHO_SECONDS"
        --value-size "$ECHO_FRAME" --json)
    note_command "${cmd[@]}"
    before=$(cpu_ticks "$ECHO_PID")
    bounded "courier-bench echo" "${cmd[@]}" >"$out"
    after=$(cpu_ticks "$ECHO_PID")
    bench_errors "$out" "round $ROUND echo courier"
    awk -v r="$ROUND" -v t="$(json_number "$out" throughput)" -v p="$(json_number "$out" p99)" \
        -v n="$(json_number "$out" requests)" -v size="$ECHO_FRAME" -v d=$((after - before)) \
        -v hz="$CLK_TCK" 'BEGIN {
            printf "%s echo courier %.3f %s %.6f\n", r, t * size / 1e6, p, d / hz / (n * size / 1e9)
        }' >>"$WORK/results"
    log_result 7
}

run_iperf3() {
    local out="$WORK/r$ROUND-echo-iperf3.json" before after cmd
    cmd=(iperf3 -c 127.0.0.1 -p "$IPERF_PORT" -t "$ECHO_SECONDS" -J)
    note_command "${cmd[@]}"
    before=$(cpu_ticks "$IPERF_PID")
    bounded "iperf3" "${cmd[@]}" >"$out"
    after=$(cpu_ticks "$IPERF_PID")
    # The receiver's totals: "bytes" and "bits_per_second" of the end section's "sum_received".
    awk -v r="$ROUND" -v d=$((after - before)) -v hz="$CLK_TCK" '
        /"sum_received"/ { inside = 1 }
        inside && /"bytes"/ { gsub(/[^0-9.]/, "", $2); bytes = $2 }
        inside && /"bits_per_second"/ { gsub(/[^0-9.eE+]/, "", $2); bps = $2 }
        inside && /}/ { inside = 0 }
        END {
            if (!bytes || !bps) exit 1
            printf "%s echo iperf3 %.3f - %.6f\n", r, bps / 8 / 1e6, d / hz / (bytes / 1e9)
        }' "$out" >>"$WORK/results" || die "cannot read iperf3's output: $(head -c 600 "$out")"
    log_result 7
}

for ROUND in $(seq "$ROUNDS"); do
    order=(courier peer)
    kv_order=(courier peer floor ldc)
    if ((ROUND % 2 == 0)); then order=(peer courier) kv_order=(ldc floor peer courier); fi
    for spec in "get_p1 get 1 $REQUESTS" "set_p1 set 1 $REQUESTS" \
        "get_pN get $PIPELINE $REQUESTS_PIPELINED" "set_pN set $PIPELINE $REQUESTS_PIPELINED"; do
        read -r name workload depth count <<<"$spec"
        log "round $ROUND/$ROUNDS: ${workload^^}, pipeline $depth, $count requests"
        for side in "${kv_order[@]}"; do
            case "$side" in
            courier) run_courier_kv "$name" "$workload" "$depth" "$count" ;;
            peer) run_redis_kv "$name" "$workload" "$depth" "$count" ;;
            *) run_reference_kv "$side" "$name" "$workload" "$depth" "$count" ;;
            esac
        done
    done
    log "round $ROUND/$ROUNDS: echo 1 MiB frames vs iperf3, ${ECHO_SECONDS}s each"
    for side in "${order[@]}"; do
        if [[ $side == courier ]]; then run_courier_echo; else run_iperf3; fi
    done
done

# --- the table -----------------------------------------------------------------------------

courier_rev=$(courier_revision "$ROOT")
elapsed=$((SECONDS - SCRIPT_START))

{
    echo "machine: $(machine_summary)"
    echo "courier: $courier_rev; $(redis-server --version | awk '{ print $1, $2, $3 }');" \
        "$(redis-benchmark --version 2>/dev/null | head -n 1 || echo redis-benchmark);" \
        "$(iperf3 --version | head -n 1 | awk '{ print $1, $2 }')"
    echo "settings: rounds $ROUNDS; $CLIENTS clients; $VALUE_SIZE-byte values; keyspace $KEYSPACE" \
        "(prefilled on both sides); $REQUESTS requests unpipelined, $REQUESTS_PIPELINED pipelined" \
        "$PIPELINE deep; $LOAD_THREADS load-generator thread(s) on both sides; echo: $ECHO_CLIENTS" \
        "connection(s), $ECHO_PIPELINE x 1 MiB frames outstanding, ${ECHO_SECONDS}s; iperf3: one" \
        "stream, ${ECHO_SECONDS}s"
    echo "server args: kv-server ${COURIER_EXTRA[*]:-(none)}; echo-server ${ECHO_EXTRA[*]:-(none)}"
    lock="$FLOOR/Cargo.lock"
    echo "reference servers: floor-server (mio $(locked_version "$lock" mio); port $FLOOR_PORT)" \
        "and ldc-server (tokio $(locked_version "$lock" tokio), tokio-util" \
        "$(locked_version "$lock" tokio-util);" \
        "port $LDC_PORT), benches/floor, one thread each, loaded by raw-bench with the kv" \
        "cases' settings; ldc-server prefilled"
    for name in kv-server echo-server; do
        said=$(grep 'listening on' "$WORK/$name.log" | tail -n 1 | sed 's/^\[[^]]*\] *//')
        echo "$name log: ${said:-(no listening line)}"
    done
} >"$WORK/header"

awk -v markdown="$MARKDOWN" -v depth="$PIPELINE" -v rounds="$ROUNDS" "$AWK_STATS"'
function fmt(x, kind) {
    if (x == "") return "-"
    if (kind == "tput") return x >= 10000 ? group(x) : sprintf("%.1f", x)
    if (kind == "p99") return sprintf("%.3f", x)
    return sprintf("%.3f", x)
}
function add(c, m) { rows[++nrows] = c SUBSEP m }
{
    # round case side throughput p99 cpu
    key = $2 SUBSEP $3
    v["tput", key] = v["tput", key] " " $4
    if ($5 != "-") v["p99", key] = v["p99", key] " " $5
    v["cpu", key] = v["cpu", key] " " $6
    val[$1, $2, $3, "tput"] = $4; val[$1, $2, $3, "p99"] = $5; val[$1, $2, $3, "cpu"] = $6
    peer[$2] = $3 == "courier" ? peer[$2] : $3
}
END {
    split("get_p1 set_p1 get_pN set_pN echo", cases, " ")
    label["get_p1"] = "GET, pipeline 1"; label["set_p1"] = "SET, pipeline 1"
    label["get_pN"] = "GET, pipeline " depth; label["set_pN"] = "SET, pipeline " depth
    label["echo"] = "echo 1 MiB frames"
    head[1] = "case"; head[2] = "metric"; head[3] = "courier"; head[4] = "peer"
    head[5] = "courier/peer"; head[6] = "per round"; head[7] = "target"
    n = 0
    for (ci = 1; ci <= 5; ci++) {
        c = cases[ci]
        for (mi = 1; mi <= 3; mi++) {
            m = mi == 1 ? "tput" : mi == 2 ? "p99" : "cpu"
            if (c == "echo") {
                metric = m == "tput" ? "throughput, MB/s one way" : m == "p99" ? "p99 latency, ms" : "server CPU s per GB"
            } else {
                metric = m == "tput" ? "throughput, req/s" : m == "p99" ? "p99 latency, ms" : "server CPU s per 1M req"
            }
            cm = median(v[m, c SUBSEP "courier"])
            pm = median(v[m, c SUBSEP peer[c]])
            ratios = ""
            for (r = 1; r <= rounds; r++) {
                a = val[r, c, "courier", m]; b = val[r, c, peer[c], m]
                if (a != "" && a != "-" && b != "" && b != "-" && b + 0 > 0) ratios = ratios " " a / b
            }
            ratio = median(ratios)
            range = span(ratios)
            target = ""
            if (c == "echo" && m == "tput") { op = ">="; goal = 0.40 }
            else if (c != "echo" && m == "tput") { op = ">="; goal = c ~ /_p1$/ ? 1.0 : 1.2 }
            else if (c != "echo") { op = "<="; goal = 1.0 }
            else op = ""
            if (op != "" && ratio != "") {
                ok = op == ">=" ? ratio >= goal : ratio <= goal
                target = sprintf("%s %.2f: %s", op, goal, ok ? "met" : "NOT met")
            } else if (op != "") target = sprintf("%s %.2f: -", op, goal)
            n++
            cell[n, 1] = label[c] " (" peer[c] ")"; cell[n, 2] = metric
            cell[n, 3] = fmt(cm, m); cell[n, 4] = fmt(pm, m)
            cell[n, 5] = ratio == "" ? "-" : sprintf("%.2f", ratio); cell[n, 6] = range == "" ? "-" : range
            cell[n, 7] = target == "" ? "-" : target
        }
    }
    for (j = 3; j <= 6; j++) right[j] = 1
    print_table(n, 7, markdown, 3)
}' "$WORK/results" >"$WORK/table"

notes=(
    "Medians over $ROUNDS round(s). courier/peer is the median of the per-round ratios (a round runs both sides back to back, so a slow spell of the machine hits both), and can differ from the quotient of the two medians; \"per round\" is the lowest and highest per-round ratio."
    "Throughput and p99 are as each load generator reports them: courier-bench times a request from the write of its last byte to the decode of its response, each connection driven by readiness; redis-benchmark times a batch of pipelined requests from its write to the first read of its replies and records that figure for every request of the batch, so pipelined, its p99 leaves out the wait for the later replies of a batch that courier-bench counts."
    "Server CPU = utime + stime of the whole server process (all threads) from /proc/PID/stat over the case, per million requests (kv) or per 10^9 bytes of one-way payload (echo, iperf3); includes accepting the load generator's connections."
    "echo: courier-bench sends each 1 MiB frame to echo-server and reads it back, so every byte crosses loopback twice; the figure is one-way payload (responses x 1 MiB per second, MB = 10^6 bytes), against iperf3's receiver bandwidth for one stream, which moves the bytes one way. iperf3 reports no latency; its server CPU is for receiving only, echo-server's for receiving and sending."
)
# The second table: courier's kv cases beside the floor and the afternoon server.
awk -v markdown="$MARKDOWN" -v depth="$PIPELINE" -v rounds="$ROUNDS" "$AWK_STATS"'
function verdict(r, bound) { return r == "-" ? "-" : r + 0 <= bound ? "met" : "NOT met" }
function ratio_of(c, m, ref,    r, a, b, list) {
    list = ""
    for (r = 1; r <= rounds; r++) {
        a = val[r, c, "courier", m]; b = val[r, c, ref, m]
        if (a != "" && b != "" && b + 0 > 0) list = list " " a / b
    }
    ratio[ref] = list == "" ? "-" : sprintf("%.2f", median(list))
    range[ref] = list == "" ? "-" : span(list)
}
# round case side throughput p99 cpu; the courier, floor and ldc lines of the kv cases
$3 == "courier" || $3 == "floor" || $3 == "ldc" {
    key = $2 SUBSEP $3
    v["tput", key] = v["tput", key] " " $4
    v["cpu", key] = v["cpu", key] " " $6
    val[$1, $2, $3, "tput"] = $4; val[$1, $2, $3, "cpu"] = $6
}
END {
    split("get_p1 set_p1 get_pN set_pN", cases, " ")
    label["get_p1"] = "GET, pipeline 1"; label["set_p1"] = "SET, pipeline 1"
    label["get_pN"] = "GET, pipeline " depth; label["set_pN"] = "SET, pipeline " depth
    head[1] = "case"; head[2] = "metric"; head[3] = "courier"; head[4] = "floor"
    head[5] = "ldc"; head[6] = "courier/floor"; head[7] = "per round"
    head[8] = "courier/ldc"; head[9] = "per round"; head[10] = "target"
    n = 0
    for (ci = 1; ci <= 4; ci++) {
        c = cases[ci]
        for (mi = 1; mi <= 2; mi++) {
            m = mi == 1 ? "cpu" : "tput"
            n++
            cell[n, 1] = label[c]
            cell[n, 2] = m == "cpu" ? "server CPU us/req" : "throughput, req/s"
            for (si = 1; si <= 3; si++) {
                side = si == 1 ? "courier" : si == 2 ? "floor" : "ldc"
                x = median(v[m, c SUBSEP side])
                cell[n, 2 + si] = x == "" ? "-" : m == "cpu" ? sprintf("%.3f", x) : group(x)
            }
            ratio_of(c, m, "floor"); ratio_of(c, m, "ldc")
            cell[n, 6] = ratio["floor"]; cell[n, 7] = range["floor"]
            cell[n, 8] = ratio["ldc"]; cell[n, 9] = range["ldc"]
            cell[n, 10] = "-"
            if (m == "cpu") {
                bound = c ~ /_p1$/ ? 1.10 : 1.60
                cell[n, 10] = sprintf("floor <= %.2f: %s; ldc <= 0.85: %s", bound, \
                    verdict(ratio["floor"], bound), verdict(ratio["ldc"], 0.85))
            }
        }
    }
    for (j = 3; j <= 9; j++) right[j] = 1
    print_table(n, 10, markdown, 2)
}' "$WORK/results" "$WORK/refs" >"$WORK/floor-table"

notes+=(
    "Reference servers: floor = floor-server, a bare mio server that frames and answers canned bytes (no checksum, no map); ldc = ldc-server, tokio + tokio-util's LengthDelimitedCodec with a HashMap, as written in an afternoon; both on one thread, speaking a wire of their own (no request ids, no checksums) and loaded by raw-bench (benches/floor) with the kv cases' clients, pipeline, values, keyspace, request counts and load threads. Their server CPU is measured as kv-server's; it includes the kernel's work for each server's reads and writes, which is most of the floor's. courier/floor and courier/ldc are medians of per-round ratios (range in \"per round\"); above 1, courier spends more server CPU per request (or, for throughput, serves more)."
)
print_report "$elapsed" "ports" \
    "Server CPU per request beside the floor and the afternoon server (benches/floor)" \
    "$WORK/floor-table" "${notes[@]}"
