#!/usr/bin/env bash
# SET throughput with durability on: kv-server's append-only log beside redis-server's AOF,
# in one table (courier-bench against redis-benchmark, the same load on both sides).
#
# Run: bash benches/durability.sh [--markdown]   (from anywhere; builds the binaries in
# release mode, installs redis-server with apt-get when it is missing)
#
# Three settings, each beside the Redis setting that matches it:
#   always    kv-server --fsync always (the log is fsynced before a write is acknowledged,
#             once per event-loop turn for all of that turn's writes: group commit) against
#             redis-server --appendonly yes --appendfsync always
#   everysec  kv-server --fsync everysec against redis-server --appendonly yes
#             --appendfsync everysec (written at once, fsynced once a second)
#   none      kv-server --in-memory (no log) against redis-server --appendonly no --save ''
#             (no persistence), for reference
# RDB snapshots are off (--save '') in every redis case, so the AOF is its only disk work.
# Log compaction (kv-server) and AOF rewrite (redis-server) keep their defaults.
#
# Each case, in each round, starts each server afresh on a free 127.0.0.1 port with a new,
# empty data directory (kv-server --data-dir, redis-server --dir) inside one temporary
# directory under ${TMPDIR:-/tmp}, and stops it and deletes that directory afterwards, so no
# log carries over from one case to the next; the output names the filesystem. Before each
# start, the dirty pages of that filesystem are written out (sync -f), so no case pays for
# the previous one's writes. The load: SET of VALUE_SIZE-byte values to keys drawn uniformly
# from KEYSPACE (not prefilled: the first SETs create the keys, on both sides), CLIENTS
# connections, a fixed number of requests, the same on both sides, at each depth of PIPELINE
# (batches of that many requests per connection: redis-benchmark -P, courier-bench
# --pipeline), LOAD_THREADS load-generator threads. ROUNDS times, each case runs against
# courier and against redis back to back (courier first in odd rounds, redis first in even
# ones). courier-bench runs with --allow-durable: writing into kv-server's log is the point
# here, and without it courier-bench refuses a server whose kv INFO says storage log.
#
# For each case: throughput, p50 and p99 latency as the load generator reports them, and the
# server's CPU time per million requests (user + system of the server process, all its
# threads and the children it has reaped, such as redis's AOF rewrite: /proc/PID/stat before
# and after the case). The table shows medians over the rounds; courier/redis is the median of
# the per-round ratios, with their range. A second table shows, for each server, the share of
# its no-log throughput it keeps with each log setting. The output also counts the log
# compactions and AOF rewrites each server finished or failed, and repeats the ERROR and WARN
# lines of kv-server's log as warnings.
#
# Environment (defaults in parentheses):
#   ROUNDS (3)                  rounds; the tables show medians
#   REQUESTS (150000)           requests per case at pipeline 1
#   REQUESTS_PIPELINED (1000000) requests per case at deeper pipelines (past 64 MiB of log on
#                               both servers at the defaults, so compaction and AOF rewrite
#                               start; 400000 stays below)
#   CLIENTS (50)                connections per case
#   PIPELINE (1 16)             pipeline depths, space-separated: one pass over the three
#                               settings each
#   VALUE_SIZE (100)            bytes per value
#   KEYSPACE (100000)           distinct keys
#   LOAD_THREADS (1)            load-generator threads, both sides
#   CASE_TIMEOUT (120)          seconds after which one load-generator run is killed (failure)
#   COURIER_SERVER_ARGS (--loops N) more kv-server flags; N is the cores the load generator
#                               leaves free (cores - LOAD_THREADS, at least 1), as in
#                               compare.sh: one loop on a 2-core machine
#   REDIS_SERVER_ARGS ()        more redis-server flags
#   MARKDOWN (0)                1: print the tables as Markdown (same as --markdown)
#   RAW_DIR ()                  a directory to keep every raw tool output and server log in
#
# Needs: cargo; redis-server and redis-benchmark (Redis 7; installed with apt-get, through
# sudo when not root, when missing); coreutils (timeout, sync -f, df); awk; a few hundred MB
# free under ${TMPDIR:-/tmp} at the defaults (one case's log at a time). Two to three
# minutes at the defaults on a 2-core machine.

set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-150000}
REQUESTS_PIPELINED=${REQUESTS_PIPELINED:-1000000}
CLIENTS=${CLIENTS:-50}
PIPELINE=${PIPELINE:-1 16}
VALUE_SIZE=${VALUE_SIZE:-100}
KEYSPACE=${KEYSPACE:-100000}
LOAD_THREADS=${LOAD_THREADS:-1}
CASE_TIMEOUT=${CASE_TIMEOUT:-120}
# The server gets the cores the load generator does not use (see compare.sh).
FREE_CORES=$(free_cores "$LOAD_THREADS")
COURIER_SERVER_ARGS=${COURIER_SERVER_ARGS:---loops $FREE_CORES}
REDIS_SERVER_ARGS=${REDIS_SERVER_ARGS:-}
MARKDOWN=${MARKDOWN:-0}
RAW_DIR=${RAW_DIR:-}
MODES=(always everysec none)

parse_args "${BASH_SOURCE[0]}" "$@"

require_positive_integers ROUNDS REQUESTS REQUESTS_PIPELINED CLIENTS VALUE_SIZE KEYSPACE \
    LOAD_THREADS CASE_TIMEOUT
read -r -a DEPTHS <<<"$PIPELINE"
if ((${#DEPTHS[@]} == 0)); then
    printf 'PIPELINE must list at least one depth\n' >&2
    exit 2
fi
for depth in "${DEPTHS[@]}"; do
    if ! [[ $depth =~ ^[1-9][0-9]*$ ]]; then
        printf 'PIPELINE must be positive integers, not "%s"\n' "$PIPELINE" >&2
        exit 2
    fi
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
init_run

# --- prerequisites -------------------------------------------------------------------------

(cd "$ROOT" && cargo build --release --bins) >&2
KV_SERVER="$ROOT/target/release/kv-server"
BENCH="$ROOT/target/release/courier-bench"

for tool in redis-server redis-benchmark; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        install_packages redis-server
        break
    fi
done
require_commands redis-server redis-benchmark timeout sync df
"$KV_SERVER" --help 2>/dev/null | grep -q -- '--fsync' || die "this kv-server has no --fsync flag"

CLK_TCK=$(getconf CLK_TCK)
read -r -a COURIER_EXTRA <<<"$COURIER_SERVER_ARGS"
read -r -a REDIS_EXTRA <<<"$REDIS_SERVER_ARGS"
# redis-benchmark is single-threaded by default; its --threads switches to another code path.
REDIS_THREADS=()
if ((LOAD_THREADS > 1)); then REDIS_THREADS=(--threads "$LOAD_THREADS"); fi

# Every server's data directory goes in here, one at a time.
DATA="$WORK/data"
mkdir -p "$DATA"
read -r FS_SOURCE FS_TYPE FS_TARGET < <(df --output=source,fstype,target "$DATA" | tail -n 1)
FS_OPTIONS=$(findmnt -n -o OPTIONS -T "$DATA" 2>/dev/null || true)

# --- the cases -----------------------------------------------------------------------------
# Each run appends "round case side throughput p50_ms p99_ms cpu_s_per_1M log_bytes" to
# $WORK/results; case is p<depth>_<mode>; log_bytes is the size of the data directory when
# the load ends.

: >"$WORK/results"
: >"$WORK/commands"
: >"$WORK/maintenance"
WARNINGS=()

requests_for() { # depth
    if (($1 == 1)); then echo "$REQUESTS"; else echo "$REQUESTS_PIPELINED"; fi
}

server_command() { # side mode port dir: sets SERVER_CMD
    if [[ $1 == courier ]]; then
        SERVER_CMD=("$KV_SERVER" --addr "127.0.0.1:$3")
        case $2 in
        none) SERVER_CMD+=(--in-memory) ;;
        *) SERVER_CMD+=(--data-dir "$4" --fsync "$2") ;;
        esac
        SERVER_CMD+=("${COURIER_EXTRA[@]}")
    else
        SERVER_CMD=(redis-server --port "$3" --bind 127.0.0.1 --dir "$4" --save ''
            --daemonize no --logfile '' --protected-mode yes)
        case $2 in
        none) SERVER_CMD+=(--appendonly no) ;;
        *) SERVER_CMD+=(--appendonly yes --appendfsync "$2") ;;
        esac
        SERVER_CMD+=("${REDIS_EXTRA[@]}")
    fi
}

load_command() { # side port depth requests: sets LOAD_CMD
    if [[ $1 == courier ]]; then
        LOAD_CMD=("$BENCH" --addr "127.0.0.1:$2" --workload set --clients "$CLIENTS"
            --threads "$LOAD_THREADS" --pipeline "$3" --requests "$4" --value-size "$VALUE_SIZE"
            --keyspace "$KEYSPACE" --json --allow-durable)
    else
        LOAD_CMD=(redis-benchmark -h 127.0.0.1 -p "$2" -c "$CLIENTS" -d "$VALUE_SIZE"
            -r "$KEYSPACE" -n "$4" -P "$3" -t set "${REDIS_THREADS[@]}" --csv --precision 3)
    fi
}

# One case on one side: a fresh server with an empty data directory, the load, the server
# stopped and its directory deleted.
run_case() { # depth mode side
    local depth=$1 mode=$2 side=$3 name port dir pid out requests before after ticks bytes
    name="r$ROUND-p$depth-$mode-$side"
    dir="$DATA/$name"
    requests=$(requests_for "$depth")
    mkdir "$dir"
    sync -f "$DATA"
    port=$(free_port)
    server_command "$side" "$mode" "$port" "$dir"
    load_command "$side" "$port" "$depth" "$requests"
    note_command "${SERVER_CMD[@]}"
    note_command "${LOAD_CMD[@]}"
    start "$name" "${SERVER_CMD[@]}"
    pid=$LAST_PID
    wait_listening "$pid" "$port" "$name"

    if [[ $side == courier ]]; then out="$WORK/$name.json"; else out="$WORK/$name.csv"; fi
    before=$(cpu_ticks_with_children "$pid")
    bounded "$side $mode pipeline $depth" "${LOAD_CMD[@]}" >"$out"
    after=$(cpu_ticks_with_children "$pid")
    ticks=$((after - before))
    bytes=$(du -sb "$dir" | cut -f 1)
    stop "$pid"
    if ((STOP_STATUS != 0)); then
        WARNINGS+=("$name: the server exited with status $STOP_STATUS (log: $WORK/$name.log)")
    fi
    rm -rf "$dir"
    if [[ $mode != none ]] && ((bytes < VALUE_SIZE * (requests < KEYSPACE ? requests : KEYSPACE) / 2)); then
        WARNINGS+=("$name: only $bytes bytes in the data directory after $requests SETs")
    fi
    note_maintenance "$name" "p${depth}_$mode" "$side"

    if [[ $side == courier ]]; then
        bench_errors "$out" "$name"
        awk -v r="$ROUND" -v c="p${depth}_$mode" -v t="$(json_number "$out" throughput)" \
            -v p50="$(json_number "$out" p50)" -v p99="$(json_number "$out" p99)" \
            -v n="$(json_number "$out" requests)" -v d="$ticks" -v hz="$CLK_TCK" -v b="$bytes" \
            'BEGIN {
                if (t == "" || p50 == "" || p99 == "" || !n) exit 1
                printf "%s %s courier %s %s %s %.6f %s\n", r, c, t, p50, p99, d / hz / n * 1e6, b
            }' >>"$WORK/results" || die "cannot read courier-bench's output: $(head -c 600 "$out")"
    else
        # Columns by header name: "test","rps",...,"p50_latency_ms",...,"p99_latency_ms",...
        awk -F, -v r="$ROUND" -v c="p${depth}_$mode" -v n="$requests" -v d="$ticks" \
            -v hz="$CLK_TCK" -v b="$bytes" '
            { gsub(/"/, "") }
            NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
            toupper($1) == "SET" && !done {
                printf "%s %s redis %s %s %s %.6f %s\n", r, c, $col["rps"], $col["p50_latency_ms"],
                    $col["p99_latency_ms"], d / hz / n * 1e6, b
                done = 1
            }
            END { if (!done || !col["rps"] || !col["p50_latency_ms"] || !col["p99_latency_ms"]) exit 1 }' \
            "$out" >>"$WORK/results" || die "cannot read redis-benchmark's output: $(cat "$out")"
    fi
    log "  $(tail -n 1 "$WORK/results" | awk '{
        printf "%-7s %10.0f req/s  p50 %s ms  p99 %s ms  cpu %.3f s/1M  data dir %.1f MB", $3, $4, $5, $6, $7, $8 / 1e6
    }')"
}

# Counts the log compactions (kv-server) or AOF rewrites (redis-server) a case's server
# finished and failed, from its log, into $WORK/maintenance ("case side done failed"), and
# turns kv-server's ERROR and WARN lines into a warning.
note_maintenance() { # name case side
    local file="$WORK/$1.log" finished failed problems first
    if [[ $3 == courier ]]; then
        finished=$(grep -c 'kv::log::compact\] compacted ' "$file" || true)
        failed=$(grep -c 'compaction failed' "$file" || true)
        problems=$(grep -cE '^\[[^]]* (ERROR|WARN) ' "$file" || true)
        if ((problems > 0)); then
            first=$(grep -m 1 -E '^\[[^]]* (ERROR|WARN) ' "$file" | sed 's/^\[[^]]*\] *//')
            WARNINGS+=("$1: $problems ERROR/WARN line(s) in kv-server's log, the first: $first")
        fi
    else
        finished=$(grep -c 'Background AOF rewrite finished successfully' "$file" || true)
        failed=$(grep -c 'Background AOF rewrite terminated \(with error\|by signal\)' "$file" || true)
    fi
    echo "$2 $3 $finished $failed" >>"$WORK/maintenance"
}

CASES=()
for depth in "${DEPTHS[@]}"; do
    for mode in "${MODES[@]}"; do CASES+=("p${depth}_$mode"); done
done

for ROUND in $(seq "$ROUNDS"); do
    order=(courier redis)
    if ((ROUND % 2 == 0)); then order=(redis courier); fi
    for depth in "${DEPTHS[@]}"; do
        for mode in "${MODES[@]}"; do
            log "round $ROUND/$ROUNDS: SET, pipeline $depth, $mode, $(requests_for "$depth") requests"
            for side in "${order[@]}"; do
                run_case "$depth" "$mode" "$side"
            done
        done
    done
done

# --- the tables ----------------------------------------------------------------------------

elapsed=$((SECONDS - SCRIPT_START))
mount="$FS_SOURCE on $FS_TARGET"
if [[ -n "$FS_OPTIONS" ]]; then mount="$mount, $FS_OPTIONS"; fi

{
    echo "machine: $(machine_summary); data directories on $FS_TYPE ($mount)"
    echo "courier: $(courier_revision "$ROOT"); $(redis-server --version | awk '{ print $1, $2, $3 }');" \
        "$(redis-benchmark --version 2>/dev/null | head -n 1 || echo redis-benchmark)"
    echo "settings: rounds $ROUNDS; SET; $CLIENTS clients; $VALUE_SIZE-byte values; keyspace" \
        "$KEYSPACE (not prefilled); pipeline ${DEPTHS[*]}; requests per case: $REQUESTS at" \
        "pipeline 1, $REQUESTS_PIPELINED deeper; $LOAD_THREADS load-generator" \
        "thread(s) on both sides; every server fresh, with an empty data directory, per case and round"
    echo "always:   kv-server --fsync always   | redis-server --appendonly yes --appendfsync always"
    echo "everysec: kv-server --fsync everysec | redis-server --appendonly yes --appendfsync everysec"
    echo "none:     kv-server --in-memory      | redis-server --appendonly no"
    echo "server args, every case: kv-server ${COURIER_EXTRA[*]:-(none)}; redis-server" \
        "--save ''${REDIS_EXTRA[*]:+ ${REDIS_EXTRA[*]}}"
    said=$(grep -h 'listening on' "$WORK/r1-p${DEPTHS[0]}-always-courier.log" 2>/dev/null |
        tail -n 1 | sed 's/^\[[^]]*\] *//')
    echo "kv-server log: ${said:-(no listening line)}"
} >"$WORK/header"

# The per-case table: courier, redis, ratio and its range, for each metric.
awk -v markdown="$MARKDOWN" -v rounds="$ROUNDS" -v cases="${CASES[*]}" "$AWK_STATS"'
function fmt(x, kind) {
    if (x == "") return "-"
    if (kind == "tput") return x >= 10000 ? group(x) : sprintf("%.1f", x)
    return sprintf("%.3f", x)
}
{
    # round case side throughput p50 p99 cpu bytes
    for (m = 1; m <= 4; m++) {
        v[m, $2, $3] = v[m, $2, $3] " " $(m + 3)
        val[$1, $2, $3, m] = $(m + 3)
    }
}
END {
    split("tput p50 p99 cpu", kind, " ")
    metric[1] = "throughput, req/s"; metric[2] = "p50 latency, ms"; metric[3] = "p99 latency, ms"
    metric[4] = "server CPU s per 1M req"
    head[1] = "case"; head[2] = "metric"; head[3] = "courier"; head[4] = "redis"
    head[5] = "courier/redis"; head[6] = "per round"
    nc = split(cases, cs, " ")
    n = 0
    for (ci = 1; ci <= nc; ci++) {
        c = cs[ci]
        split(c, parts, "_")
        label = "SET, pipeline " substr(parts[1], 2) ", " parts[2]
        for (m = 1; m <= 4; m++) {
            ratios = ""
            for (r = 1; r <= rounds; r++) {
                a = val[r, c, "courier", m]; b = val[r, c, "redis", m]
                if (a != "" && b != "" && b + 0 > 0) ratios = ratios " " a / b
            }
            ratio = median(ratios)
            n++
            cell[n, 1] = label; cell[n, 2] = metric[m]
            cell[n, 3] = fmt(median(v[m, c, "courier"]), kind[m])
            cell[n, 4] = fmt(median(v[m, c, "redis"]), kind[m])
            cell[n, 5] = ratio == "" ? "-" : sprintf("%.2f", ratio)
            cell[n, 6] = ratios == "" ? "-" : span(ratios)
        }
    }
    for (j = 3; j <= 6; j++) right[j] = 1
    print_table(n, 6, markdown, 4)
}' "$WORK/results" >"$WORK/table"

# The cost of the log on each server: throughput with it over throughput without it, per round.
awk -v markdown="$MARKDOWN" -v rounds="$ROUNDS" -v depths="${DEPTHS[*]}" "$AWK_STATS"'
{ t[$1, $2, $3] = $4 }
END {
    split("courier redis", side, " "); split("always everysec", mode, " ")
    head[1] = "pipeline"
    k = 1
    for (s = 1; s <= 2; s++) for (m = 1; m <= 2; m++) head[++k] = side[s] " " mode[m] " / none"
    nd = split(depths, ds, " ")
    for (i = 1; i <= nd; i++) {
        cell[i, 1] = ds[i]
        k = 1
        for (s = 1; s <= 2; s++) for (m = 1; m <= 2; m++) {
            ratios = ""
            for (r = 1; r <= rounds; r++) {
                a = t[r, "p" ds[i] "_" mode[m], side[s]]; b = t[r, "p" ds[i] "_none", side[s]]
                if (a != "" && b != "" && b + 0 > 0) ratios = ratios " " a / b
            }
            cell[i, ++k] = ratios == "" ? "-" : sprintf("%.2f (%s)", median(ratios), span(ratios))
        }
    }
    for (j = 1; j <= 5; j++) right[j] = 1
    print_table(nd, 5, markdown, nd)
}' "$WORK/results" >"$WORK/kept"

# Compactions and AOF rewrites, summed over the rounds, for the cases that had any.
maintenance=$(awk -v cases="${CASES[*]}" '
    { done[$1, $2] += $3; failed[$1, $2] += $4 }
    END {
        n = split(cases, cs, " ")
        for (i = 1; i <= n; i++) {
            c = cs[i]; split(c, parts, "_")
            if (done[c, "courier"] + failed[c, "courier"] + done[c, "redis"] + failed[c, "redis"] == 0) continue
            printf "%spipeline %s, %s: kv-server %d compaction(s) done, %d failed; redis %d AOF rewrite(s) done, %d failed", \
                out++ ? "; " : "", substr(parts[1], 2), parts[2], done[c, "courier"], failed[c, "courier"], \
                done[c, "redis"], failed[c, "redis"]
        }
        if (!out) printf "none"
    }' "$WORK/maintenance")

notes=(
    "Medians over $ROUNDS round(s). courier/redis is the median of the per-round ratios (a round runs both sides back to back, so a slow spell of the machine hits both), and can differ from the quotient of the two medians; \"per round\" is the lowest and highest per-round ratio."
    "Throughput and latency are as each load generator reports them: courier-bench times a request from its write to the decode of its own response; redis-benchmark times a batch of pipelined requests from its write to the first read of its replies and records that figure for every request of the batch, so pipelined, its percentiles leave out the wait for the later replies of a batch that courier-bench counts."
    "Server CPU = utime + stime of the server process (all threads) and of the children it reaped during the case (redis's AOF rewrite runs in a forked child; kv-server compacts on a thread), from /proc/PID/stat, per million requests. Time spent waiting for the disk in fsync is not CPU time."
    "Log maintenance while the servers ran, summed over the rounds (kv-server compacts past --compact-min-size, 64 MiB by default, and twice the live records; redis rewrites its AOF past auto-aof-rewrite-min-size, 64 MB, and double its size after the last rewrite): $maintenance."
    "The \"kept\" table: for each server and pipeline depth, throughput with the log setting over throughput with no log (none), the median of the per-round quotients, and their range."
)
print_report "$elapsed" "ports and directories" \
    "Throughput kept with the log, against none" "$WORK/kept" "${notes[@]}"
