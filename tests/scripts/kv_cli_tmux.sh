#!/usr/bin/env bash
# kv-cli's prompt in a real terminal: a kv-server (in memory, 127.0.0.1, a free port), kv-cli
# in a detached tmux session of 120x30, keys typed with `tmux send-keys`, the screen read with
# `tmux capture-pane`. Checks the prompt, the answers, history recall (Up), line editing
# (Ctrl-A, Ctrl-E, Left), a binary value shown quoted, (nil), (error), the history file, and
# that Ctrl-D exits 0; then `kv-cli --latency` in a second session: one line updated in place,
# and Ctrl-C stops it with exit code 0. Prints both screens; exits non-zero at the first
# mismatch.
#
# Usage: tests/scripts/kv_cli_tmux.sh [KV_CLI [KV_SERVER]]   (default: target/debug/...)
# Needs tmux. Every wait is bounded (WAIT_SECONDS, default 10).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
kv_cli=${1:-$root/target/debug/kv-cli}
kv_server=${2:-$root/target/debug/kv-server}
wait_seconds=${WAIT_SECONDS:-10}

work=$(mktemp -d)
socket=$work/tmux.sock
server_pid=
cleanup() {
    tmux -S "$socket" kill-server 2>/dev/null || true
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

target=kvcli
screen() { tmux -S "$socket" capture-pane -p -t "$target" 2>/dev/null || true; }
keys() { tmux -S "$socket" send-keys -t "$target" "$@"; }

fail() {
    echo "kv_cli_tmux: FAIL: $*" >&2
    echo "--- screen ---" >&2
    screen >&2
    echo "--- kv-server ---" >&2
    cat "$work/server.out" >&2 || true
    exit 1
}

# Polls the screen until it has at least COUNT lines equal to LINE (trailing blanks ignored).
wait_for_line() {
    local line=$1 count=${2:-1} tries=$((wait_seconds * 20))
    for ((i = 0; i < tries; i++)); do
        if (($(screen | sed 's/[[:space:]]*$//' | grep -cxF -- "$line" || true) >= count)); then
            return 0
        fi
        sleep 0.05
    done
    fail "no ${count}x line: $line"
}

type_line() {
    keys -l -- "$1"
    keys Enter
}

# The server, on a free port; its first line says where it listens. The file is made first:
# the background job opens it only when it gets to run, maybe after the first look below.
: >"$work/server.out"
"$kv_server" --in-memory --addr 127.0.0.1:0 >"$work/server.out" 2>&1 &
server_pid=$!
addr=
for ((i = 0; i < wait_seconds * 20; i++)); do
    addr=$(sed -n 's/^kv-server listening on //p' "$work/server.out")
    [[ -n $addr ]] && break
    sleep 0.05
done
[[ -n $addr ]] || fail "kv-server did not say where it listens"
prompt="$addr>"

# kv-cli with its own history file; the exit code lands in a file when it ends.
tmux -S "$socket" new-session -d -x 120 -y 30 -s kvcli \
    "KV_CLI_HISTFILE='$work/history' '$kv_cli' --addr '$addr'; echo \$? >'$work/exit'; sleep 60"

wait_for_line "$prompt"

type_line 'set greeting "hello world"'
wait_for_line "OK"
type_line 'GET greeting'
wait_for_line "hello world"

# History: Up recalls "GET greeting".
keys Up
wait_for_line "$prompt GET greeting" 2
keys Enter
wait_for_line "hello world" 2

# Line editing: "et k2 value", Ctrl-A, "s", Ctrl-E, "X" is "set k2 valueX".
keys -l 'et k2 value'
keys C-a
keys -l 's'
keys C-e
keys -l 'X'
keys Enter
wait_for_line "$prompt set k2 valueX"
wait_for_line "OK" 2
# "gt k2", four times Left, "e" is "get k2".
keys -l 'gt k2'
keys Left Left Left Left
keys -l 'e'
keys Enter
wait_for_line "$prompt get k2"
wait_for_line "valueX"

# Bytes typed with escapes come back quoted on a terminal.
type_line 'set bin "\x00\xff a\n"'
wait_for_line "OK" 3
type_line 'get bin'
wait_for_line '"\x00\xff a\n"'

type_line 'get missing'
wait_for_line "(nil)"
type_line 'set onlykey'
wait_for_line "(error) wrong number of arguments: set KEY VALUE"

# Ctrl-D leaves with exit code 0.
keys C-d
for ((i = 0; i < wait_seconds * 20; i++)); do
    [[ -s $work/exit ]] && break
    sleep 0.05
done
[[ -s $work/exit ]] || fail "kv-cli did not exit on Ctrl-D"
[[ $(cat "$work/exit") == 0 ]] || fail "kv-cli exited $(cat "$work/exit") on Ctrl-D"

# The history file has what was typed, in order.
grep -qxF 'set greeting "hello world"' "$work/history" || fail "history file lacks the set line"
grep -qxF 'set k2 valueX' "$work/history" || fail "history file lacks the edited line"

prompt_screen=$(screen | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}')

# --latency on a terminal: one line, rewritten after every PING, until Ctrl-C.
target=latency
tmux -S "$socket" new-session -d -x 120 -y 30 -s latency \
    "'$kv_cli' --addr '$addr' --latency --interval 5; echo \$? >'$work/latency-exit'; sleep 60"
wait_for_samples() {
    for ((i = 0; i < wait_seconds * 20; i++)); do
        local samples
        samples=$(screen | sed -n 's/^min: .*, max: .*, avg: .* (\([0-9]*\) samples)$/\1/p')
        if [[ -n $samples ]] && ((samples >= $1)); then
            return 0
        fi
        sleep 0.05
    done
    fail "no latency line with $1 samples or more"
}
wait_for_samples 20
keys C-c
for ((i = 0; i < wait_seconds * 20; i++)); do
    [[ -s $work/latency-exit ]] && break
    sleep 0.05
done
[[ -s $work/latency-exit ]] || fail "kv-cli --latency did not stop on Ctrl-C"
[[ $(cat "$work/latency-exit") == 0 ]] || fail "kv-cli --latency exited $(cat "$work/latency-exit") on Ctrl-C"
lines=$(screen | grep -c '^min: ' || true)
[[ $lines == 1 ]] || fail "the latency figures took $lines lines, not one updated in place"

echo "--- screen ---"
echo "$prompt_screen"
echo "--- screen of --latency, after Ctrl-C ---"
screen | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}'
echo "kv_cli_tmux: ok"
