#!/usr/bin/env bash
# The client side of an RPC, in one table: courier's blocking client, courier's async client,
# tonic and tarpc, each making unary echo calls of a PAYLOAD_SIZE-byte body to its own echo
# server over loopback, on this machine, in the same run.
#
# Run: bash benches/clients.sh [--markdown]   (from anywhere; builds echo-server and the
# peers crate, benches/peers, in release mode: the first build of the peers fetches and
# compiles tokio, tonic and tarpc, which the courier-rpc crate itself never builds)
#
# Everything listens on 127.0.0.1. Three servers are started for the whole run (on free
# ports) and stopped on exit, failure or interrupt: courier's echo-server with one event loop
# (--loops 1), and benches/peers' peer-server tonic and peer-server tarpc, each on one tokio
# thread (a current-thread runtime). With 2 cores or more, every server is pinned to core 0
# and every client to core 1 (taskset), so client and server never share a core; on one
# core nothing is pinned. Then, ROUNDS times, each case runs once (in one order in odd
# rounds, the reverse in even ones), a fresh peer-client process per case:
#
#   courier-blocking  one courier Client on one thread keeping CONCURRENCY calls in flight by
#                     pipelining (Client::send CONCURRENCY times, Client::wait for each,
#                     repeat): what a blocking user does for CONCURRENCY calls on one
#                     connection. Against echo-server.
#   courier-async     courier_rpc::client::AsyncClient, CONCURRENCY tokio tasks on a
#                     current-thread runtime sharing one connection. Against echo-server.
#   tonic             the generated gRPC client on one HTTP/2 connection, CONCURRENCY tasks
#                     as above. Against the tonic server.
#   tarpc             the generated tarpc client (bincode, length-delimited TCP frames) on one
#                     connection, CONCURRENCY tasks as above. Against the tarpc server.
#
# Each case connects, makes WARMUP calls, then CALLS timed calls; every reply is checked
# against its request, and a failed call fails the run. For each case: calls per second, the
# client's CPU time per call (user + system of the client process, getrusage(RUSAGE_SELF)
# around the timed calls, in microseconds) and the server's CPU time per call (user + system
# of the server process from /proc/PID/stat before and after the case, over the warm-up and
# the timed calls, in microseconds; ticks of 10 ms, so a case should last a second or more).
# Every figure is the median over the rounds. The ratio columns divide each case's figure by
# the reference client's figure of the same round (courier-async) and show the median of
# those per-round ratios with their range: "2.10 (1.95-2.30)" in the client CPU column means
# the case spent 2.1 times the reference's client CPU per call, between 1.95 and 2.30 times
# in single rounds. Above 1 is better for calls/s, worse for CPU. The reference row reads
# 1.00.
#
# Environment (defaults in parentheses):
#   ROUNDS (5)            rounds; the table shows medians
#   CALLS (1000000)       timed calls per case (on a shared 2-core VM about 2 s for
#                         courier-blocking, 5 s for tarpc and 25 s for tonic)
#   CONCURRENCY (64)      calls in flight per case (tasks, or the blocking pipeline's depth)
#   PAYLOAD_SIZE (64)     bytes of each call's body (and of its reply)
#   WARMUP (1000)         calls made before the clock starts, not timed
#   CASE_TIMEOUT (300)    seconds after which one client run is killed (failure)
#   MARKDOWN (0)          1: print the table as Markdown (same as --markdown)
#   RAW_DIR ()            a directory to keep every raw output in (the clients' JSON lines,
#                         the servers' logs)

set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERS="$ROOT/benches/peers"

ROUNDS=${ROUNDS:-5}
CALLS=${CALLS:-1000000}
CONCURRENCY=${CONCURRENCY:-64}
PAYLOAD_SIZE=${PAYLOAD_SIZE:-64}
WARMUP=${WARMUP:-1000}
CASE_TIMEOUT=${CASE_TIMEOUT:-300}
MARKDOWN=${MARKDOWN:-0}
RAW_DIR=${RAW_DIR:-}

parse_args "${BASH_SOURCE[0]}" "$@"

require_positive_integers ROUNDS CALLS CONCURRENCY PAYLOAD_SIZE WARMUP CASE_TIMEOUT

init_run

# --- prerequisites -------------------------------------------------------------------------

CASES=(courier-blocking courier-async tonic tarpc)
REFERENCE=courier-async

log "building echo-server and the peers (benches/peers) in release mode"
(cd "$ROOT" && cargo build --release --bin echo-server) >&2
(cd "$PEERS" && cargo build --release --bins) >&2
ECHO_SERVER="$ROOT/target/release/echo-server"
PEER_SERVER="$PEERS/target/release/peer-server"
PEER_CLIENT="$PEERS/target/release/peer-client"

require_commands timeout
SERVER_PIN=()
CLIENT_PIN=()
if (($(nproc) >= 2)); then
    require_commands taskset
    SERVER_PIN=(taskset -c 0)
    CLIENT_PIN=(taskset -c 1)
    PINNING="servers on core 0, clients on core 1 (taskset)"
else
    PINNING="none (one core)"
fi
CLK_TCK=$(getconf CLK_TCK)

# --- servers -------------------------------------------------------------------------------

ECHO_PORT=$(free_port)
start echo-server "${SERVER_PIN[@]}" "$ECHO_SERVER" --addr "127.0.0.1:$ECHO_PORT" --loops 1
ECHO_PID=$LAST_PID
wait_listening "$ECHO_PID" "$ECHO_PORT" echo-server

TONIC_PORT=$(free_port)
start tonic-server "${SERVER_PIN[@]}" "$PEER_SERVER" tonic --addr "127.0.0.1:$TONIC_PORT"
TONIC_PID=$LAST_PID
wait_listening "$TONIC_PID" "$TONIC_PORT" tonic-server

TARPC_PORT=$(free_port)
start tarpc-server "${SERVER_PIN[@]}" "$PEER_SERVER" tarpc --addr "127.0.0.1:$TARPC_PORT"
TARPC_PID=$LAST_PID
wait_listening "$TARPC_PID" "$TARPC_PORT" tarpc-server

log "echo-server pid $ECHO_PID port $ECHO_PORT; tonic pid $TONIC_PID port $TONIC_PORT;" \
    "tarpc pid $TARPC_PID port $TARPC_PORT"

# --- the cases -----------------------------------------------------------------------------
# Each run appends "round case calls_per_second client_cpu_us_per_call server_cpu_us_per_call"
# to $WORK/results.

: >"$WORK/results"
: >"$WORK/commands"
WARNINGS=()

run_case() { # case
    local case=$1 port pid out before after cmd calls
    case "$case" in
    courier-blocking | courier-async) port=$ECHO_PORT pid=$ECHO_PID ;;
    tonic) port=$TONIC_PORT pid=$TONIC_PID ;;
    tarpc) port=$TARPC_PORT pid=$TARPC_PID ;;
    esac
    out="$WORK/r$ROUND-$case.json"
    cmd=("${CLIENT_PIN[@]}" "$PEER_CLIENT" --client "$case" --addr "127.0.0.1:$port"
        --calls "$CALLS" --concurrency "$CONCURRENCY" --payload-size "$PAYLOAD_SIZE"
        --warmup "$WARMUP")
    note_command "${cmd[@]}"
    before=$(cpu_ticks "$pid")
    bounded "peer-client $case" "${cmd[@]}" >"$out"
    after=$(cpu_ticks "$pid")
    calls=$(json_number "$out" calls)
    [[ "$calls" == "$CALLS" ]] || die "peer-client $case made ${calls:-no} calls, not $CALLS: $(cat "$out")"
    append_client_result "$case" "$out" "$before" "$after" "$CALLS"
    log "  $(tail -n 1 "$WORK/results" | awk '{ printf "%-16s %10.0f calls/s  client %.3f us/call  server %.3f us/call", $2, $3, $4, $5 }')"
}

alternating_rounds run_case "${CASES[@]}"

# --- the table -----------------------------------------------------------------------------

courier_rev=$(courier_revision "$ROOT")
elapsed=$((SECONDS - SCRIPT_START))

{
    echo "machine: $(machine_summary)"
    lock="$PEERS/Cargo.lock"
    echo "courier: $courier_rev; tonic $(locked_version "$lock" tonic)," \
        "tarpc $(locked_version "$lock" tarpc), tokio $(locked_version "$lock" tokio)" \
        "(benches/peers/Cargo.lock)"
    echo "settings: rounds $ROUNDS; $CALLS timed calls per case after $WARMUP warm-up calls;" \
        "$CONCURRENCY in flight on one connection; $PAYLOAD_SIZE-byte payload"
    echo "servers: echo-server --loops 1; peer-server tonic and tarpc on a tokio current-thread" \
        "runtime; clients: the async ones on a current-thread runtime; pinning: $PINNING"
    echo "reference of the ratios: $REFERENCE"
} >"$WORK/header"

awk -v markdown="$MARKDOWN" -v rounds="$ROUNDS" -v ref="$REFERENCE" -v cases="${CASES[*]}" \
    "$AWK_STATS"'
function ratio_cell(c, m,    r, a, b, list) {
    list = ""
    for (r = 1; r <= rounds; r++) {
        a = val[r, c, m]; b = val[r, ref, m]
        if (a != "" && b != "" && b + 0 > 0) list = list " " a / b
    }
    if (list == "") return "-"
    return sprintf("%.2f (%s)", median(list), span(list))
}
{
    # round case calls_per_second client_us server_us
    for (m = 3; m <= 5; m++) { all[$2, m] = all[$2, m] " " $m; val[$1, $2, m] = $m }
}
END {
    n = split(cases, names, " ")
    head[1] = "client"; head[2] = "calls/s"; head[3] = "client CPU us/call"
    head[4] = "server CPU us/call"; head[5] = "calls/s vs " ref
    head[6] = "client CPU vs " ref; head[7] = "server CPU vs " ref
    for (i = 1; i <= n; i++) {
        c = names[i]
        cell[i, 1] = c
        cell[i, 2] = group(median(all[c, 3]))
        cell[i, 3] = sprintf("%.2f", median(all[c, 4]))
        cell[i, 4] = sprintf("%.2f", median(all[c, 5]))
        cell[i, 5] = ratio_cell(c, 3)
        cell[i, 6] = ratio_cell(c, 4)
        cell[i, 7] = ratio_cell(c, 5)
    }
    for (j = 2; j <= 7; j++) right[j] = 1
    print_table(n, 7, markdown, n)
}' "$WORK/results" >"$WORK/table"

notes=(
    "Medians over $ROUNDS round(s); a ratio is the median of the per-round ratios to $REFERENCE (each round runs every case back to back, so a slow spell of the machine hits them all), with the lowest and highest in parentheses, and can differ from the quotient of the two medians."
    "Client CPU: user + system time of the whole peer-client process (all its threads) over the timed calls, from getrusage(RUSAGE_SELF). Server CPU: user + system time of the whole server process from /proc/PID/stat over the case (warm-up and timed calls, divided by both), in 1/$CLK_TCK s ticks."
    "Each case has its own server: courier's clients call echo-server, tonic and tarpc their own peer-server; a server's cost is part of what its client's protocol asks for (HTTP/2 and protobuf for tonic, bincode frames for tarpc, courier's frames with their CRC-32s)."
)
print_report "$elapsed" "ports" "" "" "${notes[@]}"
