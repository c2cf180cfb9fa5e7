#!/usr/bin/env bash
# What courier's balancing client costs the client per call: the blocking Balancer and the
# AsyncBalancer (courier_rpc::client::balance) against a single direct connection of the
# client they are built on, unary echo calls of a PAYLOAD_SIZE-byte body over loopback, on
# this machine, in the same run.
#
# Run: bash benches/balancer.sh [--markdown]   (from anywhere; builds echo-server and the
# peers crate, benches/peers, in release mode: the first build of the peers fetches and
# compiles tokio, tonic and tarpc, which the courier-rpc crate itself never builds)
#
# Everything listens on 127.0.0.1. Three echo-servers, each with one event loop (--loops 1),
# are started for the whole run (on free ports) and stopped on exit, failure or interrupt.
# With 2 cores or more, every server is pinned to core 0 and every client to core 1
# (taskset), so client and servers never share a core; on one core nothing is pinned. Then,
# ROUNDS times, each case runs once (in one order in odd rounds, the reverse in even ones),
# a fresh peer-client process per case:
#
#   call              one courier Client on one thread, Client::call one at a time, to
#                     server 1: the baseline of the blocking rows.
#   balancer-1        one blocking Balancer over server 1 alone, Balancer::call one at a time
#                     on one thread: the balancer's bookkeeping without a choice to make.
#   balancer-3        the same over the three servers: each call goes to the less loaded of
#                     two drawn at random (one call at a time, so in effect to one of the
#                     three at random), on the one pooled connection to that server.
#   async             courier_rpc::client::AsyncClient, CONCURRENCY tokio tasks on a
#                     current-thread runtime sharing one connection, to server 1: the
#                     baseline of the async rows.
#   async-balancer-1  one AsyncBalancer over server 1 alone, CONCURRENCY tasks as above; the
#                     balancer's defaults, so 2 connections to the server, taken in turn.
#   async-balancer-3  the same over the three servers: 6 connections.
#
# Each case builds its client, makes WARMUP calls (which open the balancers' connections),
# then CALLS timed calls (ASYNC_CALLS for the async rows); every reply is checked against its
# request, and a failed call fails the run. For each case: calls per second, the client's
# CPU time per call (user + system of the client process, all its threads, the balancers'
# health checks included, getrusage(RUSAGE_SELF) around the timed calls, in microseconds)
# and the servers' CPU time per call (user + system of the three echo-server processes from
# /proc/PID/stat before and after the case, over the warm-up and the timed calls, in
# microseconds; ticks of 10 ms, so a case should last a second or more). Every figure is the
# median over the rounds. The last three columns compare each case with its baseline (call
# for the blocking rows, async for the async ones) in the same round, and show the median of
# the per-round figures with their range: "1.20 (1.15-1.31)" in the client CPU column means
# the case spent 1.2 times its baseline's client CPU per call, between 1.15 and 1.31 times
# in single rounds; the extra-CPU column is the difference, in microseconds per call
# ("0.45 (0.30 to 0.61)"). Above 1 is better for calls/s, worse for CPU; the baselines read
# 1.00 and 0.00. The
# balancer cases also report how many calls each server got and how many were retried: a
# retry (or a server left without calls) is printed as a warning under the table.
#
# Environment (defaults in parentheses):
#   ROUNDS (5)             rounds; the table shows medians
#   CALLS (120000)         timed calls per blocking case (one at a time: about 11 s each on
#                          a shared 2-core VM)
#   ASYNC_CALLS (1000000)  timed calls per async case (about 3 s each)
#   CONCURRENCY (64)       tasks of the async cases
#   PAYLOAD_SIZE (64)      bytes of each call's body (and of its reply)
#   WARMUP (1000)          calls made before the clock starts, not timed
#   CASE_TIMEOUT (300)     seconds after which one client run is killed (failure)
#   MARKDOWN (0)           1: print the table as Markdown (same as --markdown)
#   RAW_DIR ()             a directory to keep every raw output in (the clients' JSON lines,
#                          the servers' logs)

set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERS="$ROOT/benches/peers"

ROUNDS=${ROUNDS:-5}
CALLS=${CALLS:-120000}
ASYNC_CALLS=${ASYNC_CALLS:-1000000}
CONCURRENCY=${CONCURRENCY:-64}
PAYLOAD_SIZE=${PAYLOAD_SIZE:-64}
WARMUP=${WARMUP:-1000}
CASE_TIMEOUT=${CASE_TIMEOUT:-300}
MARKDOWN=${MARKDOWN:-0}
RAW_DIR=${RAW_DIR:-}

parse_args "${BASH_SOURCE[0]}" "$@"

require_positive_integers ROUNDS CALLS ASYNC_CALLS CONCURRENCY PAYLOAD_SIZE WARMUP CASE_TIMEOUT

init_run

# --- prerequisites -------------------------------------------------------------------------

# Two groups of three rows; the first case of each is the baseline of its group.
CASES=(call balancer-1 balancer-3 async async-balancer-1 async-balancer-3)

baseline_of() { # case
    case "$1" in
    async*) echo async ;;
    *) echo call ;;
    esac
}

log "building echo-server and the peers (benches/peers) in release mode"
(cd "$ROOT" && cargo build --release --bin echo-server) >&2
(cd "$PEERS" && cargo build --release --bin peer-client) >&2
ECHO_SERVER="$ROOT/target/release/echo-server"
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

PORTS=()
PIDS=()
for i in 1 2 3; do
    port=$(free_port)
    start "echo-server-$i" "${SERVER_PIN[@]}" "$ECHO_SERVER" --addr "127.0.0.1:$port" --loops 1
    wait_listening "$LAST_PID" "$port" "echo-server-$i"
    PORTS+=("$port")
    PIDS+=("$LAST_PID")
done
ONE="127.0.0.1:${PORTS[0]}"
ALL="127.0.0.1:${PORTS[0]},127.0.0.1:${PORTS[1]},127.0.0.1:${PORTS[2]}"

log "echo-servers: pids ${PIDS[*]}, ports ${PORTS[*]}"

servers_ticks() { # CPU ticks of the three servers, summed
    local pid total=0
    for pid in "${PIDS[@]}"; do
        total=$((total + $(cpu_ticks "$pid")))
    done
    echo "$total"
}

# --- the cases -----------------------------------------------------------------------------
# Each run appends "round case calls_per_second client_cpu_us_per_call server_cpu_us_per_call"
# to $WORK/results.

: >"$WORK/results"
: >"$WORK/commands"
WARNINGS=()

run_case() { # case
    local case=$1 kind addr calls out before after cmd made attempts retries
    case "$case" in
    call) kind=courier-call addr=$ONE calls=$CALLS ;;
    balancer-1) kind=courier-balancer addr=$ONE calls=$CALLS ;;
    balancer-3) kind=courier-balancer addr=$ALL calls=$CALLS ;;
    async) kind=courier-async addr=$ONE calls=$ASYNC_CALLS ;;
    async-balancer-1) kind=courier-async-balancer addr=$ONE calls=$ASYNC_CALLS ;;
    async-balancer-3) kind=courier-async-balancer addr=$ALL calls=$ASYNC_CALLS ;;
    esac
    out="$WORK/r$ROUND-$case.json"
    cmd=("${CLIENT_PIN[@]}" "$PEER_CLIENT" --client "$kind" --addr "$addr"
        --calls "$calls" --concurrency "$CONCURRENCY" --payload-size "$PAYLOAD_SIZE"
        --warmup "$WARMUP")
    note_command "${cmd[@]}"
    before=$(servers_ticks)
    bounded "peer-client $case" "${cmd[@]}" >"$out"
    after=$(servers_ticks)
    made=$(json_number "$out" calls)
    [[ "$made" == "$calls" ]] || die "peer-client $case made ${made:-no} calls, not $calls: $(cat "$out")"
    if [[ "$kind" == *balancer ]]; then
        attempts=$(grep -o '"attempts_per_server":\[[0-9,]*\]' "$out" | cut -d'[' -f2 | tr -d ']')
        retries=$(json_number "$out" retries)
        if [[ "${retries:-}" != 0 || -z "$attempts" || ",$attempts," == *,0,* ]]; then
            WARNINGS+=("round $ROUND, $case: calls per server ${attempts:-unknown}, retries ${retries:-unknown}")
        fi
    fi
    append_client_result "$case" "$out" "$before" "$after" "$calls"
    log "  $(tail -n 1 "$WORK/results" | awk '{ printf "%-16s %10.0f calls/s  client %.3f us/call  servers %.3f us/call", $2, $3, $4, $5 }')${attempts:+  (calls per server: $attempts)}"
}

alternating_rounds run_case "${CASES[@]}"

# --- the table -----------------------------------------------------------------------------

courier_rev=$(courier_revision "$ROOT")
elapsed=$((SECONDS - SCRIPT_START))

{
    echo "machine: $(machine_summary)"
    echo "courier: $courier_rev"
    echo "settings: rounds $ROUNDS; $CALLS timed calls per blocking case (one at a time)," \
        "$ASYNC_CALLS per async case ($CONCURRENCY tasks), after $WARMUP warm-up calls;" \
        "$PAYLOAD_SIZE-byte payload"
    echo "servers: three echo-server --loops 1; clients: the async ones on a current-thread" \
        "runtime, the balancers with their defaults; pinning: $PINNING"
    echo "baselines: call for the blocking rows, async for the async rows"
} >"$WORK/header"

baselines=""
for case in "${CASES[@]}"; do baselines="$baselines $case=$(baseline_of "$case")"; done

awk -v markdown="$MARKDOWN" -v rounds="$ROUNDS" -v cases="${CASES[*]}" \
    -v baselines="$baselines" "$AWK_STATS"'
function per_round(c, m, how,    r, a, b, list) {
    list = ""
    for (r = 1; r <= rounds; r++) {
        a = val[r, c, m]; b = val[r, base[c], m]
        if (a == "" || b == "") continue
        if (how == "ratio" && b + 0 > 0) list = list " " a / b
        if (how == "diff") list = list " " a - b
    }
    return list
}
function cell_of(list, fmt,    n, a, i, lo, hi) {
    if (list == "") return "-"
    if (fmt == "ratio") return sprintf("%.2f (%s)", median(list), span(list))
    # A difference may be negative: its range reads "lo to hi".
    n = split(list, a, " ")
    lo = hi = a[1]
    for (i = 2; i <= n; i++) { if (a[i] < lo) lo = a[i]; if (a[i] > hi) hi = a[i] }
    return sprintf("%.2f (%.2f to %.2f)", median(list), lo, hi)
}
{
    # round case calls_per_second client_us server_us
    for (m = 3; m <= 5; m++) { all[$2, m] = all[$2, m] " " $m; val[$1, $2, m] = $m }
}
END {
    k = split(baselines, pairs, " ")
    for (i = 1; i <= k; i++) { split(pairs[i], kv, "="); base[kv[1]] = kv[2] }
    n = split(cases, names, " ")
    head[1] = "case"; head[2] = "calls/s"; head[3] = "client CPU us/call"
    head[4] = "servers CPU us/call"; head[5] = "calls/s vs baseline"
    head[6] = "client CPU vs baseline"; head[7] = "extra client CPU us/call"
    for (i = 1; i <= n; i++) {
        c = names[i]
        cell[i, 1] = c
        cell[i, 2] = group(median(all[c, 3]))
        cell[i, 3] = sprintf("%.2f", median(all[c, 4]))
        cell[i, 4] = sprintf("%.2f", median(all[c, 5]))
        cell[i, 5] = cell_of(per_round(c, 3, "ratio"), "ratio")
        cell[i, 6] = cell_of(per_round(c, 4, "ratio"), "ratio")
        cell[i, 7] = cell_of(per_round(c, 4, "diff"), "diff")
    }
    for (j = 2; j <= 7; j++) right[j] = 1
    print_table(n, 7, markdown, 3)
}' "$WORK/results" >"$WORK/table"

notes=(
    "Medians over $ROUNDS round(s); a ratio or a difference is the median of the per-round figures against the baseline of the same round (each round runs every case back to back, so a slow spell of the machine hits them all), with the lowest and highest in parentheses, and can differ from the one computed from the two medians."
    "Client CPU: user + system time of the whole peer-client process (all its threads, the balancer's health checks included: one PING per server per second) over the timed calls, from getrusage(RUSAGE_SELF). Servers CPU: user + system time of the three echo-server processes together, from /proc/PID/stat over the case (warm-up and timed calls, divided by both), in 1/$CLK_TCK s ticks."
    "Connections: call, balancer-1 and async one; balancer-3 one per server (three, one call at a time on one of them); async-balancer-1 two and async-balancer-3 six (BalancerBuilder::connections_per_server, 2), so an async balancer's $CONCURRENCY calls in flight are spread over more connections than async's, with fewer frames per read and write."
)
# printf %q (note_command) escapes the commas of the address lists; they need none.
sed -i 's/\\,/,/g' "$WORK/commands"
print_report "$elapsed" "ports" "" "" "${notes[@]}"
