#!/usr/bin/env bash
# courier over TLS beside Redis over TLS, in one table: kv-server against redis-server
# (courier-bench --tls against redis-benchmark --tls), an AUTH'd courier connection against an
# anonymous one, and new TLS connections per second.
#
# Run: bash benches/tls.sh [--markdown]   (from anywhere; builds the binaries in release mode,
# installs redis-server with apt-get when it is missing)
#
# Everything listens on 127.0.0.1. The run makes its own certificates with openssl in its
# scratch directory: an EC P-256 CA, and a server certificate for 127.0.0.1 (an IP SAN) that it
# signs, which every server presents and every client verifies against the CA. Three servers
# are started for the whole run (on free ports) and stopped on exit, failure or interrupt:
#
#   courier       kv-server --in-memory $COURIER_SERVER_ARGS --tls-cert --tls-key
#   courier, ACL  the same with --acl: one identity, whose token (random, made by the run) the
#                 load generator sends in COURIER_TOKEN, allowed kv.*
#   redis         redis-server --port 0 --tls-port P --tls-cert-file --tls-key-file
#                 --tls-ca-cert-file --tls-auth-clients no --save '' --appendonly no
#
# Each is first filled with every key of the keyspace (KEYSPACE keys, VALUE_SIZE-byte values),
# so every GET finds its key. Then, ROUNDS times, each case runs once on each of its two sides,
# back to back (the courier side first in odd rounds, the other first in even ones), and the
# table shows the medians over the rounds:
#
#   GET and SET over TLS, pipeline 1 and PIPELINE deep, as compare.sh runs them in plaintext:
#     courier-bench --tls --tls-ca against redis-benchmark --tls --cacert; CLIENTS connections,
#     VALUE_SIZE-byte values, keys drawn uniformly from KEYSPACE, REQUESTS requests unpipelined
#     and REQUESTS_PIPELINED pipelined, LOAD_THREADS load-generator threads on both sides.
#   GET over TLS, pipeline 1 and PIPELINE deep, AUTH'd against anonymous: courier-bench with
#     the token (admin AUTH first on every connection) against the kv-server with the ACL
#     (every request checked against it), beside courier-bench without a token against the
#     kv-server without an ACL. The same load as above.
#   New TLS connections: CONN_REQUESTS requests over CLIENTS clients, each on a new connection
#     (TCP connect, a full TLS 1.3 handshake, one request, close): courier-bench --reconnect 1
#     --workload echo (a 4-byte body; every connection builds its own TLS configuration, so no
#     session is resumed) against redis-benchmark -k 0 -t ping_mbulk (keep-alive off; the
#     RESP-array one of the two PING tests of -t ping; redis-benchmark does not resume
#     sessions either).
#
# For each case: throughput (for new connections: connections per second), p99 latency as the
# load generator reports it, and the server's CPU time (user + system, all its threads:
# /proc/PID/stat before and after the case) per million requests, or per 1,000 TLS handshakes
# for new connections, counted by each server before and after the case (courier: admin STATS
# tls_handshakes; redis: INFO stats total_connections_received), less the connection that
# reads the count. The courier/peer column is the median over the rounds of the ratio within
# each round.
#
# Targets (the "target" column checks them):
#   GET and SET over TLS: throughput >= 1.0x redis unpipelined and >= 1.2x pipelined PIPELINE
#   deep; server CPU per request <= redis's;
#   AUTH'd GET throughput >= 0.95x anonymous (the same speed, within noise).
# New connections have none: connections per second and CPU per handshake are reported.
#
# Environment (defaults in parentheses):
#   ROUNDS (3)                  rounds; the table shows medians
#   REQUESTS (200000)           requests per unpipelined GET or SET case
#   REQUESTS_PIPELINED (1000000) requests per pipelined GET or SET case
#   CONN_REQUESTS (10000)       requests (hence connections) per new-connection case
#   CLIENTS (50)                connections (clients) per case
#   PIPELINE (16)               depth of the pipelined cases
#   VALUE_SIZE (64)             bytes per value
#   KEYSPACE (100000)           distinct keys
#   LOAD_THREADS (1)            load-generator threads, both sides
#   CASE_TIMEOUT (120)          seconds after which one load-generator run is killed (failure)
#   COURIER_SERVER_ARGS (--loops N) kv-server flags; N is the cores the load generator leaves
#                               free (cores - LOAD_THREADS, at least 1), as in compare.sh: one
#                               loop on a 2-core machine, one core, as redis-server's one thread
#   MARKDOWN (0)                1: print the table as Markdown (same as --markdown)
#   RAW_DIR ()                  a directory to keep every raw tool output, server log and the
#                               run's certificates in
# COURIER_TOKEN is unset at start: only the AUTH'd cases send a token, the run's own.
#
# Needs: cargo; openssl; redis-server, redis-benchmark and redis-cli built with TLS (Redis 7;
# Debian's are; installed with apt-get, through sudo when not root, when missing); coreutils
# (timeout, sha256sum); awk. About 5 minutes at the defaults on a 2-core machine.

set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-200000}
REQUESTS_PIPELINED=${REQUESTS_PIPELINED:-1000000}
CONN_REQUESTS=${CONN_REQUESTS:-10000}
CLIENTS=${CLIENTS:-50}
PIPELINE=${PIPELINE:-16}
VALUE_SIZE=${VALUE_SIZE:-64}
KEYSPACE=${KEYSPACE:-100000}
LOAD_THREADS=${LOAD_THREADS:-1}
CASE_TIMEOUT=${CASE_TIMEOUT:-120}
# The server gets the cores the load generator does not use (see compare.sh).
FREE_CORES=$(free_cores "$LOAD_THREADS")
COURIER_SERVER_ARGS=${COURIER_SERVER_ARGS:---loops $FREE_CORES}
MARKDOWN=${MARKDOWN:-0}
RAW_DIR=${RAW_DIR:-}
# The echo body of the new-connection case: PING's four letters.
CONN_BODY=4
unset COURIER_TOKEN

parse_args "${BASH_SOURCE[0]}" "$@"

require_positive_integers ROUNDS REQUESTS REQUESTS_PIPELINED CONN_REQUESTS CLIENTS PIPELINE \
    VALUE_SIZE KEYSPACE LOAD_THREADS CASE_TIMEOUT

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
init_run

# --- prerequisites -------------------------------------------------------------------------

(cd "$ROOT" && cargo build --release --bins) >&2
KV_SERVER="$ROOT/target/release/kv-server"
KV_CLI="$ROOT/target/release/kv-cli"
BENCH="$ROOT/target/release/courier-bench"
"$BENCH" --help | grep -- '--reconnect' >/dev/null || die "courier-bench has no --reconnect"

missing=()
for tool in redis-server redis-benchmark redis-cli; do
    command -v "$tool" >/dev/null 2>&1 || missing+=(redis-server)
done
if ((${#missing[@]} > 0)); then install_packages redis-server; fi
require_commands redis-server redis-benchmark redis-cli openssl sha256sum timeout
{ redis-benchmark --help 2>&1 || true; } | grep -- '--cacert' >/dev/null ||
    die "redis-benchmark was built without TLS"

CLK_TCK=$(getconf CLK_TCK)
read -r -a COURIER_EXTRA <<<"$COURIER_SERVER_ARGS"
COURIER_EXTRA=(--in-memory "${COURIER_EXTRA[@]}")
REDIS_THREADS=()
if ((LOAD_THREADS > 1)); then REDIS_THREADS=(--threads "$LOAD_THREADS"); fi

# --- certificates and the ACL --------------------------------------------------------------

CERTS="$WORK/certs"
make_tls_certs "$CERTS"
CA="$CERTS/ca.pem"
COURIER_TLS=(--tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key")
REDIS_TLS=(--tls-cert-file "$CERTS/server.pem" --tls-key-file "$CERTS/server.key"
    --tls-ca-cert-file "$CA" --tls-auth-clients no)

TOKEN=$(openssl rand -hex 32)
cat >"$WORK/acl.toml" <<EOF
[[identity]]
name = "bench"
token_sha256 = "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)"
allow = ["kv.*"]
EOF

# Runs a command (such as `bounded ...`) with the run's token in COURIER_TOKEN, exported to
# the processes it starts: in their environment, never on a command line.
with_token() { # command...
    COURIER_TOKEN=$TOKEN "$@"
}

# --- servers -------------------------------------------------------------------------------

KV_PORT=$(free_port)
start kv-server "$KV_SERVER" --addr "127.0.0.1:$KV_PORT" "${COURIER_EXTRA[@]}" "${COURIER_TLS[@]}"
KV_PID=$LAST_PID
wait_listening "$KV_PID" "$KV_PORT" kv-server

ACL_PORT=$(free_port)
start kv-server-acl "$KV_SERVER" --addr "127.0.0.1:$ACL_PORT" "${COURIER_EXTRA[@]}" \
    "${COURIER_TLS[@]}" --acl "$WORK/acl.toml"
ACL_PID=$LAST_PID
wait_listening "$ACL_PID" "$ACL_PORT" kv-server-acl

REDIS_PORT=$(free_port)
start redis-server redis-server --port 0 --tls-port "$REDIS_PORT" --bind 127.0.0.1 \
    "${REDIS_TLS[@]}" --save '' --appendonly no --daemonize no --logfile '' --protected-mode yes
REDIS_PID=$LAST_PID
wait_listening "$REDIS_PID" "$REDIS_PORT" redis-server

log "kv-server pid $KV_PID port $KV_PORT; kv-server --acl pid $ACL_PID port $ACL_PORT;" \
    "redis-server pid $REDIS_PID TLS port $REDIS_PORT"

KV_CLI_TLS=("$KV_CLI" --tls --tls-ca "$CA")
REDIS_CLI=(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" --tls --cacert "$CA")

# --- prefill -------------------------------------------------------------------------------
# Every key of the keyspace, once, on every server (see compare.sh for the key names).

log "prefill: $KEYSPACE keys of $VALUE_SIZE bytes on each server"
prefill=(--workload get --prefill --keyspace "$KEYSPACE" --value-size "$VALUE_SIZE" --clients 1
    --threads 1 --requests 1 --json --tls --tls-ca "$CA")
bounded "courier prefill" "$BENCH" --addr "127.0.0.1:$KV_PORT" "${prefill[@]}" \
    >"$WORK/prefill-courier.json"
with_token bounded "courier ACL prefill" "$BENCH" --addr "127.0.0.1:$ACL_PORT" \
    "${prefill[@]}" >"$WORK/prefill-courier-acl.json"
prefill_redis "${REDIS_CLI[@]}"

# The ACL holds: no request without the token, and the token's identity may GET.
if "${KV_CLI_TLS[@]}" --addr "127.0.0.1:$ACL_PORT" get key:0000000000 >/dev/null 2>"$WORK/acl-anonymous.log"; then
    die "the kv-server with --acl answered a GET without AUTH"
fi
grep -q UNAUTHENTICATED "$WORK/acl-anonymous.log" ||
    die "the kv-server with --acl refused an anonymous GET, but not as UNAUTHENTICATED: $(cat "$WORK/acl-anonymous.log")"
with_token "${KV_CLI_TLS[@]}" --addr "127.0.0.1:$ACL_PORT" get key:0000000000 >/dev/null ||
    die "the kv-server with --acl refused a GET with the token"

# --- the cases -----------------------------------------------------------------------------
# Each run appends "round case side throughput p99_ms cpu_per_unit" to $WORK/results:
# GET and SET: req/s, ms, CPU s per 1M requests; new connections: connections/s, -, CPU s per
# 1,000 handshakes.

: >"$WORK/results"
: >"$WORK/commands"
WARNINGS=()

# Like note_command, for a command run with the run's token in COURIER_TOKEN (not shown).
note_command_with_token() { # command...
    if ((ROUND == 1)); then
        printf 'COURIER_TOKEN=<the token> ' >>"$WORK/commands"
        note_command "$@"
    fi
}

courier_handshakes() { # port: the server's tls_handshakes counter
    "${KV_CLI_TLS[@]}" --addr "127.0.0.1:$1" stats | awk '$1 == "tls_handshakes" { print $2; found = 1 }
        END { exit !found }' || die "cannot read tls_handshakes from the kv-server on port $1"
}

redis_connections() { # the server's total_connections_received
    "${REDIS_CLI[@]}" info stats | tr -d '\r' | awk -F: '$1 == "total_connections_received" {
        print $2; found = 1 } END { exit !found }' || die "cannot read redis's INFO stats"
}

# side: courier (token and ACL server when auth), anonymous, or courier for the kv cases.
run_courier_kv() { # case workload pipeline requests side port pid
    local out="$WORK/r$ROUND-$1-$5.json" before after cmd auth=()
    cmd=("$BENCH" --addr "127.0.0.1:$6" --workload "$2" --clients "$CLIENTS"
        --threads "$LOAD_THREADS" --pipeline "$3" --requests "$4" --value-size "$VALUE_SIZE"
        --keyspace "$KEYSPACE" --tls --tls-ca "$CA" --json)
    if [[ "$6" == "$ACL_PORT" ]]; then
        auth=(with_token)
        note_command_with_token "${cmd[@]}"
    else
        note_command "${cmd[@]}"
    fi
    before=$(cpu_ticks "$7")
    "${auth[@]}" bounded "courier-bench $1 $5" "${cmd[@]}" >"$out"
    after=$(cpu_ticks "$7")
    bench_errors "$out" "round $ROUND $1 $5"
    awk -v r="$ROUND" -v c="$1" -v s="$5" -v t="$(json_number "$out" throughput)" \
        -v p="$(json_number "$out" p99)" -v n="$(json_number "$out" requests)" \
        -v d=$((after - before)) -v hz="$CLK_TCK" \
        'BEGIN { printf "%s %s %s %s %s %.6f\n", r, c, s, t, p, d / hz / n * 1e6 }' \
        >>"$WORK/results"
    log_result 9
}

run_redis_kv() { # case test pipeline requests
    local out="$WORK/r$ROUND-$1-redis.csv" before after cmd
    cmd=(redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" --tls --cacert "$CA" -c "$CLIENTS"
        -d "$VALUE_SIZE" -r "$KEYSPACE" -n "$4" -P "$3" -t "$2" "${REDIS_THREADS[@]}" --csv
        --precision 3)
    note_command "${cmd[@]}"
    before=$(cpu_ticks "$REDIS_PID")
    bounded "redis-benchmark $1" "${cmd[@]}" >"$out"
    after=$(cpu_ticks "$REDIS_PID")
    redis_row "$out" "$1" "$2" "$4" $((after - before)) 1e6
    log_result 9
}

# Appends the results line of redis-benchmark's CSV output $1 (case $2, test $3): the
# throughput, p99 and CPU ticks $5 per $6 of $4 (requests or handshakes).
redis_row() { # csv case test count ticks per
    # Columns by header name: "test","rps",...,"p99_latency_ms",...
    awk -F, -v r="$ROUND" -v c="$2" -v test="$3" -v n="$4" -v d="$5" -v per="$6" \
        -v hz="$CLK_TCK" '
        { gsub(/"/, "") }
        NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        toupper($1) == toupper(test) && !done {
            printf "%s %s redis %s %s %.6f\n", r, c, $col["rps"], per == 1e6 ? $col["p99_latency_ms"] : "-", d / hz / n * per
            done = 1
        }
        END { if (!done || !col["rps"] || !col["p99_latency_ms"]) exit 1 }' "$1" \
        >>"$WORK/results" || die "cannot read redis-benchmark's output: $(cat "$1")"
}

run_courier_conn() {
    local out="$WORK/r$ROUND-conn-courier.json" before after cmd hs_before hs_after handshakes
    local opened
    cmd=("$BENCH" --addr "127.0.0.1:$KV_PORT" --workload echo --value-size "$CONN_BODY"
        --clients "$CLIENTS" --threads "$LOAD_THREADS" --requests "$CONN_REQUESTS"
        --reconnect 1 --tls --tls-ca "$CA" --json)
    note_command "${cmd[@]}"
    hs_before=$(courier_handshakes "$KV_PORT")
    before=$(cpu_ticks "$KV_PID")
    bounded "courier-bench --reconnect" "${cmd[@]}" >"$out"
    after=$(cpu_ticks "$KV_PID")
    hs_after=$(courier_handshakes "$KV_PORT")
    # Less the handshake of the connection that read hs_after.
    handshakes=$((hs_after - hs_before - 1))
    bench_errors "$out" "round $ROUND new connections courier"
    # The --clients connections opened before courier-bench's clock starts are not in its
    # count; the server's count has them.
    opened=$(($(json_number "$out" connections) + CLIENTS))
    check_handshakes courier "$handshakes" "$opened"
    awk -v r="$ROUND" -v t="$(json_number "$out" connections_per_second)" -v n="$handshakes" \
        -v d=$((after - before)) -v hz="$CLK_TCK" \
        'BEGIN { printf "%s conn courier %s - %.6f\n", r, t, d / hz / n * 1000 }' \
        >>"$WORK/results"
    log_result 9
}

run_redis_conn() {
    local out="$WORK/r$ROUND-conn-redis.csv" before after cmd hs_before hs_after handshakes
    cmd=(redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" --tls --cacert "$CA" -c "$CLIENTS" -k 0
        -n "$CONN_REQUESTS" -t ping_mbulk "${REDIS_THREADS[@]}" --csv --precision 3)
    note_command "${cmd[@]}"
    hs_before=$(redis_connections)
    before=$(cpu_ticks "$REDIS_PID")
    bounded "redis-benchmark -k 0" "${cmd[@]}" >"$out"
    after=$(cpu_ticks "$REDIS_PID")
    hs_after=$(redis_connections)
    handshakes=$((hs_after - hs_before - 1))
    check_handshakes redis "$handshakes" "$CONN_REQUESTS"
    redis_row "$out" conn ping_mbulk "$handshakes" $((after - before)) 1000
    log_result 9
}

# Warns when a server counted far more or fewer handshakes than the connections expected.
check_handshakes() { # side counted expected
    local diff=$(($2 - $3))
    (($2 > 0)) || die "new connections $1: the server counted $2 handshakes"
    if ((diff < -CLIENTS - 2 || diff > CLIENTS + 2)); then
        WARNINGS+=("round $ROUND new connections $1: the server counted $2 handshakes, for $3 connections")
    fi
}

for ROUND in $(seq "$ROUNDS"); do
    order=(courier peer)
    if ((ROUND % 2 == 0)); then order=(peer courier); fi
    for spec in "get_p1 get 1 $REQUESTS" "set_p1 set 1 $REQUESTS" \
        "get_pN get $PIPELINE $REQUESTS_PIPELINED" "set_pN set $PIPELINE $REQUESTS_PIPELINED"; do
        read -r name workload depth count <<<"$spec"
        log "round $ROUND/$ROUNDS: TLS ${workload^^}, pipeline $depth, $count requests"
        for side in "${order[@]}"; do
            if [[ $side == courier ]]; then
                run_courier_kv "$name" "$workload" "$depth" "$count" courier "$KV_PORT" "$KV_PID"
            else
                run_redis_kv "$name" "$workload" "$depth" "$count"
            fi
        done
    done
    for spec in "auth_p1 1 $REQUESTS" "auth_pN $PIPELINE $REQUESTS_PIPELINED"; do
        read -r name depth count <<<"$spec"
        log "round $ROUND/$ROUNDS: TLS GET, pipeline $depth, $count requests, AUTH'd and anonymous"
        for side in "${order[@]}"; do
            if [[ $side == courier ]]; then
                run_courier_kv "$name" get "$depth" "$count" courier "$ACL_PORT" "$ACL_PID"
            else
                run_courier_kv "$name" get "$depth" "$count" anonymous "$KV_PORT" "$KV_PID"
            fi
        done
    done
    log "round $ROUND/$ROUNDS: $CONN_REQUESTS new TLS connections, one request each"
    for side in "${order[@]}"; do
        if [[ $side == courier ]]; then run_courier_conn; else run_redis_conn; fi
    done
done

# --- the table -----------------------------------------------------------------------------

courier_rev=$(courier_revision "$ROOT")
elapsed=$((SECONDS - SCRIPT_START))
rustls_version=$(awk '/^name = "rustls"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' \
    "$ROOT/Cargo.lock" 2>/dev/null || true)

# What openssl s_client negotiates with a server: protocol, cipher, key exchange group.
negotiated() { # port [s_client flags]
    local port=$1
    shift
    timeout 10 openssl s_client -connect "127.0.0.1:$port" -CAfile "$CA" "$@" </dev/null 2>/dev/null |
        awk '/^New, / { sub(/,$/, "", $2); proto = $2; cipher = $NF }
            /Server Temp Key:|Negotiated TLS1.3 group:/ { sub(/^[^:]*: */, ""); sub(/,.*/, ""); group = $0 }
            /Verify return code:/ { sub(/^ *Verify return code: */, ""); verify = $0 }
            END { printf "%s %s %s, verify %s", proto, cipher, group, verify }'
}

{
    echo "machine: $(machine_summary)"
    echo "courier: $courier_rev (rustls ${rustls_version:-?}, ring); $(redis-server --version | awk '{ print $1, $2, $3 }');" \
        "$(redis-benchmark --version 2>/dev/null | head -n 1 || echo redis-benchmark);" \
        "$(openssl version | awk '{ print $1, $2 }')"
    echo "TLS (as openssl s_client negotiates it): kv-server $(negotiated "$KV_PORT" -alpn courier/1);" \
        "redis-server $(negotiated "$REDIS_PORT")"
    echo "certificates: EC P-256 CA and server certificate (IP SAN 127.0.0.1), made by the run with openssl"
    echo "settings: rounds $ROUNDS; $CLIENTS clients; $VALUE_SIZE-byte values; keyspace $KEYSPACE" \
        "(prefilled on every server); $REQUESTS requests unpipelined, $REQUESTS_PIPELINED pipelined" \
        "$PIPELINE deep; $CONN_REQUESTS new connections per new-connection case; $LOAD_THREADS" \
        "load-generator thread(s) on both sides"
    echo "server args: kv-server ${COURIER_EXTRA[*]} --tls-cert server.pem --tls-key server.key" \
        "(AUTH'd rows: also --acl, one identity allowed kv.*); redis-server --port 0 --tls-port P" \
        "--tls-cert-file server.pem --tls-key-file server.key --tls-ca-cert-file ca.pem" \
        "--tls-auth-clients no --save '' --appendonly no"
    for name in kv-server kv-server-acl; do
        said=$(grep 'listening on' "$WORK/$name.log" | tail -n 1 | sed 's/^\[[^]]*\] *//')
        echo "$name log: ${said:-(no listening line)}"
    done
} >"$WORK/header"

awk -v markdown="$MARKDOWN" -v depth="$PIPELINE" -v rounds="$ROUNDS" "$AWK_STATS"'
function fmt(x, kind) {
    if (x == "") return "-"
    if (kind == "tput") return x >= 10000 ? group(x) : sprintf("%.1f", x)
    return sprintf("%.3f", x)
}
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
    split("get_p1 set_p1 get_pN set_pN auth_p1 auth_pN conn", cases, " ")
    label["get_p1"] = "TLS GET, pipeline 1"; label["set_p1"] = "TLS SET, pipeline 1"
    label["get_pN"] = "TLS GET, pipeline " depth; label["set_pN"] = "TLS SET, pipeline " depth
    label["auth_p1"] = "TLS GET, pipeline 1, AUTH'\''d"
    label["auth_pN"] = "TLS GET, pipeline " depth ", AUTH'\''d"
    label["conn"] = "new TLS connection per request"
    head[1] = "case"; head[2] = "metric"; head[3] = "courier"; head[4] = "peer"
    head[5] = "courier/peer"; head[6] = "per round"; head[7] = "target"
    n = 0
    for (ci = 1; ci <= 7; ci++) {
        c = cases[ci]
        for (mi = 1; mi <= 3; mi++) {
            m = mi == 1 ? "tput" : mi == 2 ? "p99" : "cpu"
            if (c == "conn" && m == "p99") continue
            if (c == "conn") {
                metric = m == "tput" ? "connections/s" : "server CPU s per 1,000 handshakes"
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
            op = ""
            if (c ~ /^(get|set)_/ && m == "tput") { op = ">="; goal = c ~ /_p1$/ ? 1.0 : 1.2 }
            else if (c ~ /^(get|set)_/ && m == "cpu") { op = "<="; goal = 1.0 }
            else if (c ~ /^auth_/ && m == "tput") { op = ">="; goal = 0.95 }
            target = ""
            if (op != "" && ratio != "") {
                ok = op == ">=" ? ratio >= goal : ratio <= goal
                target = sprintf("%s %.2f: %s", op, goal, ok ? "met" : "NOT met")
            } else if (op != "") target = sprintf("%s %.2f: -", op, goal)
            n++
            cell[n, 1] = label[c] " (" (peer[c] == "anonymous" ? "courier, anonymous" : peer[c]) ")"
            cell[n, 2] = metric
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
    "The peer of the AUTH'd rows is courier itself: the same kv-server without --acl, and courier-bench without a token. AUTH'd: every connection sends admin AUTH with the token once, after the handshake and before the measured requests; the server then checks every request against the ACL."
    "Throughput and p99 are as each load generator reports them (see compare.sh): courier-bench times a request from the write of its last byte to the decode of its response; redis-benchmark, pipelined, records a batch's time to its first reply for every request of the batch."
    "New connections: courier-bench --reconnect 1 opens a new connection for every request on each of its connections, driving the connects and TLS handshakes by readiness; redis-benchmark drives all its connections' handshakes at once from one event loop. connections/s is courier-bench's count of connections opened while its clock runs over that time, and redis-benchmark's requests per second (one connection each). Both load generators time a request from after its connection is up, so their latencies leave the handshake out and are not shown."
    "Server CPU = utime + stime of the whole server process (all threads) from /proc/PID/stat over the case, per million requests, or per 1,000 handshakes as the server counted them; includes accepting the load generator's connections and their TLS handshakes."
)
print_report "$elapsed" "ports" "" "" "${notes[@]}"
