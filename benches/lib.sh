# shellcheck shell=bash
# Shell functions shared by the benchmark scripts in this folder (compare.sh, durability.sh,
# tls.sh; idle_memory.sh takes make_tls_certs only).
# Sourced, not run: source "$(dirname "${BASH_SOURCE[0]}")/lib.sh", after `set -euo pipefail`.
#
# init_run sets WORK (a scratch directory, removed on exit), STARTED_PIDS, RUNNING_PID and
# SCRIPT_START, and installs the traps: on exit, failure or interrupt, the load generator
# running under `bounded` and every server started with `start` (and not yet stopped with
# `stop`) are stopped, and WORK is copied to RAW_DIR when that is set, then removed. The
# caller sets CASE_TIMEOUT (for `bounded`), ROUND (for `note_command`) and RAW_DIR.

# --- messages and arguments ----------------------------------------------------------------

log() { printf '%s\n' "$*" >&2; }
die() {
    log "${0##*/}: $*"
    exit 1
}

# Prints the script's header comment (from line 2 to the first empty line) as its help.
print_help() { # script
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$1"
}

parse_args() { # script args...: --markdown sets MARKDOWN=1; -h/--help prints the script's header
    local script=$1 arg
    shift
    for arg in "$@"; do
        case "$arg" in
        --markdown) MARKDOWN=1 ;;
        -h | --help)
            print_help "$script"
            exit 0
            ;;
        *)
            printf 'unknown argument: %s (try --help)\n' "$arg" >&2
            exit 2
            ;;
        esac
    done
}

log_result() { # side-column width: logs the line just added to $WORK/results
    log "  $(tail -n 1 "$WORK/results" | awk -v w="$1" '{ printf "%-*s throughput %s  p99 %s ms  cpu %s", w, $3, $4, $5, $6 }')"
}

bench_errors() { # report what: warns (WARNINGS) of errors and misses in a courier-bench JSON report
    local errors misses
    errors=$(grep -o '"errors":{[^}]*}' "$1" | cut -d: -f2-)
    misses=$(json_number "$1" misses)
    if [[ "$errors" != "{}" || "${misses:-0}" != 0 ]]; then
        WARNINGS+=("$2: errors $errors, misses ${misses:-0}")
    fi
}

prefill_redis() { # redis-cli command...: SETs every key of KEYSPACE, as redis-benchmark -r names
    # them (key:NNNNNNNNNNNN), VALUE_SIZE bytes of 'x' each, through --pipe; checks DBSIZE.
    local keys
    awk -v n="$KEYSPACE" -v size="$VALUE_SIZE" 'BEGIN {
        v = ""; for (i = 0; i < size; i++) v = v "x"
        for (i = 0; i < n; i++) {
            k = sprintf("key:%012d", i)
            printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, size, v
        }
    }' >"$WORK/prefill-redis.resp"
    bounded "redis prefill" "$@" --pipe <"$WORK/prefill-redis.resp" >"$WORK/prefill-redis.log"
    keys=$("$@" dbsize)
    [[ "$keys" == "$KEYSPACE" ]] || die "redis holds $keys keys after the prefill, not $KEYSPACE"
}

require_positive_integers() { # variable names
    local knob
    for knob in "$@"; do
        if ! [[ ${!knob} =~ ^[1-9][0-9]*$ ]]; then
            printf '%s must be a positive integer, not "%s"\n' "$knob" "${!knob}" >&2
            exit 2
        fi
    done
}

# The cores the load generator leaves the server: cores - load-generator threads, at least 1.
free_cores() { # load_threads
    local n=$(($(nproc) - $1))
    ((n >= 1)) || n=1
    echo "$n"
}

# --- scratch directory, cleanup --------------------------------------------------------------

# shellcheck disable=SC2034 # WORK, STARTED_PIDS, SCRIPT_START: for the caller
init_run() {
    WORK=$(mktemp -d)
    STARTED_PIDS=()
    RUNNING_PID=""
    SCRIPT_START=$SECONDS
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

cleanup() {
    local pid
    if [[ -n "$RUNNING_PID" ]]; then
        kill "$RUNNING_PID" 2>/dev/null || true
        wait "$RUNNING_PID" 2>/dev/null || true
    fi
    for pid in "${STARTED_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${STARTED_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n "${RAW_DIR:-}" ]]; then
        { mkdir -p "$RAW_DIR" && cp -r "$WORK"/. "$RAW_DIR"/; } || true
    fi
    rm -rf "$WORK"
}

# --- prerequisites ---------------------------------------------------------------------------

# Installs Debian packages with apt-get (through sudo when not root).
install_packages() { # package...
    local as_root=()
    log "installing $*"
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 || die "need root or sudo to install $*"
        as_root=(sudo)
    fi
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update >&2
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >&2
}

require_commands() { # command...
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
    done
}

# --- servers ---------------------------------------------------------------------------------

# Whether anything on 127.0.0.1 / 0.0.0.0 uses TCP port $1 (any state), from /proc/net/tcp.
port_in_use() {
    awk -v port="$(printf '%04X' "$1")" \
        'NR > 1 { split($2, a, ":"); if (a[2] == port) found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6
}

# Whether something listens on TCP port $1.
listening() {
    awk -v port="$(printf '%04X' "$1")" \
        'NR > 1 && $4 == "0A" { split($2, a, ":"); if (a[2] == port) found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6
}

free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 40000))
        if ! port_in_use "$port"; then
            echo "$port"
            return 0
        fi
    done
    die "no free port found"
}

wait_listening() { # pid port name
    for _ in $(seq 100); do
        kill -0 "$1" 2>/dev/null || die "$3 exited at start (log: $(tail -n 3 "$WORK/$3.log"))"
        if listening "$2"; then return 0; fi
        sleep 0.1
    done
    die "$3 did not start listening on port $2"
}

# CPU seconds (user + system, all threads) the process $1 has used so far, in clock ticks.
# Field 2 of /proc/PID/stat is the command name in parentheses and may hold spaces: the
# fields are counted after the last ')'. utime and stime are fields 14 and 15.
cpu_ticks() {
    local stat rest
    stat=$(<"/proc/$1/stat") || die "process $1 is gone"
    rest=${stat##*) }
    read -r -a f <<<"$rest"
    echo $((f[11] + f[12]))
}

# The same, plus the CPU time of the children the process has waited for (fields 16 and 17,
# cutime and cstime): a forked helper's, such as redis-server's AOF rewrite, once reaped.
cpu_ticks_with_children() {
    local stat rest
    stat=$(<"/proc/$1/stat") || die "process $1 is gone"
    rest=${stat##*) }
    read -r -a f <<<"$rest"
    echo $((f[11] + f[12] + f[13] + f[14]))
}

start() { # name command... ; sets LAST_PID; output goes to $WORK/name.log
    local name=$1
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    STARTED_PIDS+=("$LAST_PID")
}

# Stops a process started with `start`: SIGTERM, up to 15 s to exit, then SIGKILL. Sets
# STOP_STATUS to its exit status (143 when SIGTERM's default action ended it).
# shellcheck disable=SC2034 # STOP_STATUS: for the caller
stop() { # pid
    local pid=$1 p kept=()
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    STOP_STATUS=0
    wait "$pid" 2>/dev/null || STOP_STATUS=$?
    for p in "${STARTED_PIDS[@]}"; do
        if [[ "$p" != "$pid" ]]; then kept+=("$p"); fi
    done
    STARTED_PIDS=("${kept[@]}")
}

# Runs a command with a time limit. It runs in the background and is waited for, so that an
# interrupt stops the script (and the command, in cleanup) at once.
bounded() { # name command...
    local name=$1 rc=0
    shift
    timeout --kill-after=5 "$CASE_TIMEOUT" "$@" <&0 &
    RUNNING_PID=$!
    wait "$RUNNING_PID" || rc=$?
    RUNNING_PID=""
    if ((rc == 124 || rc == 137)); then die "$name took longer than CASE_TIMEOUT=${CASE_TIMEOUT}s"; fi
    if ((rc != 0)); then die "$name failed (exit $rc)"; fi
}

# --- results ---------------------------------------------------------------------------------

note_command() { # command...: keeps the first round's command lines for the table's footer
    if ((ROUND == 1)); then
        printf '%q ' "$@" | sed 's/ $//' >>"$WORK/commands"
        echo >>"$WORK/commands"
    fi
}

json_number() { # file field
    grep -o "\"$2\":[0-9.]*" "$1" | head -n 1 | cut -d: -f2
}

locked_version() { # lockfile crate: the crate's version in a Cargo.lock
    awk -v name="$2" '$0 == "name = \"" name "\"" { getline; gsub(/[^0-9.]/, ""); print; exit }' \
        "$1"
}

alternating_rounds() { # function case...: ROUNDS rounds, each calling function with every
    # case in turn (sets ROUND), in the given order in odd rounds and reversed in even ones
    local run=$1 i case
    shift
    local cases=("$@") order
    for ROUND in $(seq "${ROUNDS:?}"); do
        order=("${cases[@]}")
        if ((ROUND % 2 == 0)); then
            order=()
            for ((i = ${#cases[@]} - 1; i >= 0; i--)); do order+=("${cases[i]}"); done
        fi
        log "round $ROUND/$ROUNDS: ${order[*]}"
        for case in "${order[@]}"; do
            "$run" "$case"
        done
    done
}

append_client_result() { # case peer-client-json ticks-before ticks-after calls: appends
    # "round case calls_per_second client_cpu_us_per_call server_cpu_us_per_call" to
    # $WORK/results, the servers' ticks over the case divided by its calls and WARMUP
    awk -v r="$ROUND" -v c="$1" -v tput="$(json_number "$2" calls_per_second)" \
        -v client="$(json_number "$2" client_cpu_us_per_call)" -v d=$(($4 - $3)) \
        -v hz="$(getconf CLK_TCK)" -v n=$(($5 + WARMUP)) \
        'BEGIN { printf "%s %s %s %s %.6f\n", r, c, tput, client, d / hz / n * 1e6 }' \
        >>"$WORK/results"
}

machine_summary() { # "N cores, CPU model, Linux release"
    local cpu_model
    cpu_model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    echo "$(nproc) cores, ${cpu_model:-unknown CPU}, Linux $(uname -r)"
}

courier_revision() { # the checkout's short commit, and whether it has uncommitted changes
    local rev
    rev=$(git -C "$1" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n "$(git -C "$1" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
        rev="$rev (with uncommitted changes)"
    fi
    echo "$rev"
}

# awk functions for the tables, to prepend to an awk program: median(list) and span(list) of
# a space-separated list of numbers (the middle value, or the mean of the middle two; "lo-hi"
# with two decimals; "" when the list is empty), group(x) (x rounded to an integer, with
# thousands separators), and print_table (below).
# shellcheck disable=SC2016,SC2034 # awk source, for the scripts that source this file
AWK_STATS='
function median(list,    n, a, i, j, t) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    if (n == 0) return ""
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function group(x,    s, neg) {
    neg = x < 0; if (neg) x = -x
    s = sprintf("%.0f", x)
    while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]($|,)/, ",&", s)
    return (neg ? "-" : "") s
}
function span(list,    n, a, i, lo, hi) {
    n = split(list, a, " ")
    if (n == 0) return ""
    lo = hi = a[1]
    for (i = 2; i <= n; i++) { if (a[i] < lo) lo = a[i]; if (a[i] > hi) hi = a[i] }
    return sprintf("%.2f-%.2f", lo, hi)
}
# Prints head[1..ncols] over cell[1..nrows, 1..ncols]: as a Markdown table when markdown is
# set, else as text with a rule under the head and after every `every` rows, each column as
# wide as its widest cell (the last one unpadded unless right-aligned). Columns j with
# right[j] set are right-aligned.
function print_table(nrows, ncols, markdown, every,    i, j, k, w, f, s, line, sep) {
    for (j = 1; j <= ncols; j++) {
        w[j] = length(head[j])
        for (i = 1; i <= nrows; i++) if (length(cell[i, j]) > w[j]) w[j] = length(cell[i, j])
    }
    if (markdown) {
        line = "|"; sep = "|"
        for (j = 1; j <= ncols; j++) {
            line = line " " head[j] " |"
            sep = sep (right[j] ? "---:|" : "---|")
        }
        print line; print sep
        for (i = 1; i <= nrows; i++) {
            line = "|"
            for (j = 1; j <= ncols; j++) line = line " " cell[i, j] " |"
            print line
        }
        return
    }
    line = ""; sep = ""
    for (j = 1; j <= ncols; j++) {
        f = right[j] ? "%" w[j] "s" : j == ncols ? "%s" : "%-" w[j] "s"
        line = line (j > 1 ? " | " : "") sprintf(f, head[j])
        s = ""; for (k = 0; k < w[j]; k++) s = s "-"
        sep = sep (j > 1 ? "-+-" : "") s
    }
    print line; print sep
    for (i = 1; i <= nrows; i++) {
        line = ""
        for (j = 1; j <= ncols; j++) {
            f = right[j] ? "%" w[j] "s" : j == ncols ? "%s" : "%-" w[j] "s"
            line = line (j > 1 ? " | " : "") sprintf(f, cell[i, j])
        }
        print line
        if (i % every == 0 && i < nrows) print sep
    }
}
'

# Prints the report to stdout, as text or (MARKDOWN=1) Markdown: $WORK/header, $WORK/table,
# an optional titled extra table ("" "" for none), the notes, the WARNINGS, the first round's
# commands and the run time.
print_report() { # seconds, what the run chose (e.g. "ports"), extra title, extra file, note...
    local elapsed=$1 chosen=$2 title=$3 extra=$4
    shift 4
    local notes=("$@")
    if [[ "$MARKDOWN" == 1 ]]; then
        sed 's/^/- /' "$WORK/header"
        echo
        cat "$WORK/table"
        echo
        if [[ -n "$title" ]]; then
            echo "$title:"
            echo
            cat "$extra"
            echo
        fi
        for n in "${notes[@]}"; do echo "- $n"; done
        for w in "${WARNINGS[@]}"; do echo "- warning: $w"; done
        echo
        echo "Commands (first round; $chosen chosen at run time):"
        echo
        echo '```'
        cat "$WORK/commands"
        echo '```'
    else
        cat "$WORK/header"
        echo
        cat "$WORK/table"
        echo
        if [[ -n "$title" ]]; then
            echo "${title,}:"
            cat "$extra"
            echo
        fi
        for n in "${notes[@]}"; do echo "note: $n"; done
        for w in "${WARNINGS[@]}"; do echo "warning: $w"; done
        echo
        echo "commands (first round; $chosen chosen at run time):"
        sed 's/^/  /' "$WORK/commands"
    fi
    echo
    echo "took ${elapsed}s"
}

# --- TLS -------------------------------------------------------------------------------------

# Writes, with openssl, an EC P-256 CA (ca.pem, ca.key) and a server certificate it signs for
# 127.0.0.1 (server.pem: subject CN 127.0.0.1, an IP SAN 127.0.0.1, serverAuth; server.key)
# into the directory $1, valid for two days: made afresh by every run, never kept as secrets.
# openssl's messages go to $1/openssl.log.
make_tls_certs() { # dir
    local dir=$1
    mkdir -p "$dir"
    printf '%s\n' 'subjectAltName = IP:127.0.0.1' 'basicConstraints = critical, CA:FALSE' \
        'keyUsage = critical, digitalSignature' 'extendedKeyUsage = serverAuth' \
        >"$dir/server.ext"
    {
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/ca.key" &&
            openssl req -x509 -new -key "$dir/ca.key" -sha256 -days 2 \
                -subj '/CN=courier benchmark CA' \
                -addext 'basicConstraints = critical, CA:TRUE' \
                -addext 'keyUsage = critical, keyCertSign, cRLSign' -out "$dir/ca.pem" &&
            openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/server.key" &&
            openssl req -new -key "$dir/server.key" -subj '/CN=127.0.0.1' -out "$dir/server.csr" &&
            openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
                -set_serial 2 -days 2 -sha256 -extfile "$dir/server.ext" -out "$dir/server.pem" &&
            openssl verify -CAfile "$dir/ca.pem" "$dir/server.pem"
    } >"$dir/openssl.log" 2>&1 || die "cannot make the TLS certificates (log: $(tail -n 3 "$dir/openssl.log"))"
}
