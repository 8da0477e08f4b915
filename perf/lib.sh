# shellcheck shell=bash
# perf/lib.sh: shell helpers shared by the perf/ drivers. Source it:
#   . "$(dirname "$0")/lib.sh"
#
# What it gives: perf_init (environment of the contract, binaries built),
# perf_need (apt-get for missing commands), perf_start/perf_stop (servers by
# PID, stopped on exit by the trap perf_init sets), perf_netns (a private
# network namespace with its own loopback, so fixed ports like dnsmasq's 69
# never meet another job's), perf_peak_rss_mib and perf_tree_start/stop
# (memory; CPU of forked children),
# perf_cpu_ticks (CPU time), perf_row (one JSON line into rows.jsonl),
# perf_fail/perf_finish (go on, exit 1 at the end) and
# perf_now/perf_elapsed (wall clock).

set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PERF_REPO=$(cd "$PERF_DIR/.." && pwd)
PERF_PIDS=()      # servers and samplers started here, stopped by perf_cleanup
PERF_NETNS=""     # the namespace made by perf_netns, deleted by perf_cleanup
PERF_TMP=""       # scratch directory, removed by perf_cleanup
PERF_FAILED=0     # measurements that failed; drivers exit 1 when non-zero

perf_log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# perf_init OUTDIR: checks the argument, fills in the contract's variables
# (PERF_REPEAT, PERF_QUICK, DLSD, DLS_BENCH), builds missing binaries, makes
# PERF_TMP and sets the cleanup trap.
perf_init() {
    PERF_OUT=${1:?usage: $0 OUTDIR}
    mkdir -p "$PERF_OUT"
    PERF_OUT=$(cd "$PERF_OUT" && pwd)
    PERF_ROWS="$PERF_OUT/rows.jsonl"
    PERF_QUICK=${PERF_QUICK:-0}
    if [ "$PERF_QUICK" = 1 ]; then PERF_REPEAT=1; fi
    PERF_REPEAT=${PERF_REPEAT:-3}
    DLSD=${DLSD:-$PERF_REPO/target/release/dlsd}
    DLS_BENCH=${DLS_BENCH:-$PERF_REPO/target/release/dls-bench}
    if [ ! -x "$DLSD" ] || [ ! -x "$DLS_BENCH" ]; then
        perf_log "building dlsd and dls-bench"
        (cd "$PERF_REPO" && cargo build --release --bins)
    fi
    PERF_TMP=$(mktemp -d /tmp/dls-perf.XXXXXX)
    chmod 755 "$PERF_TMP"
    trap perf_cleanup EXIT
    trap 'exit 130' INT TERM
}

# Stops everything this script started, newest first, then removes the
# namespace and the scratch directory. Runs on every exit, failures too.
perf_cleanup() {
    local i
    for ((i = ${#PERF_PIDS[@]} - 1; i >= 0; i--)); do
        perf_stop "${PERF_PIDS[i]}"
    done
    if [ -n "$PERF_NETNS" ]; then ip netns del "$PERF_NETNS" 2>/dev/null || true; fi
    if [ -n "$PERF_TMP" ]; then rm -rf "$PERF_TMP"; fi
}

# perf_need CMD PACKAGE...: installs the packages when CMD is missing.
perf_need() {
    local cmd=$1
    shift
    command -v "$cmd" >/dev/null 2>&1 && return 0
    perf_log "installing $*"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    command -v "$cmd" >/dev/null 2>&1 || { perf_log "$cmd still missing after installing $*"; exit 1; }
}

# perf_netns NAME: a fresh namespace with loopback up; every later
# `perf_in CMD` runs inside it. The name carries our PID so it cannot
# collide with another run's.
perf_netns() {
    PERF_NETNS="$1-$$"
    ip netns add "$PERF_NETNS"
    ip -n "$PERF_NETNS" link set lo up
    # A veth pair inside the namespace with a private address: getaddrinfo
    # with AI_ADDRCONFIG counts no loopback address, and tftpd-hpa refuses
    # to resolve 127.0.0.1 (exit 66) when no other IPv4 address exists.
    ip -n "$PERF_NETNS" link add perf-a type veth peer name perf-b
    ip -n "$PERF_NETNS" addr add 10.254.0.1/30 dev perf-a
    ip -n "$PERF_NETNS" link set perf-a up
    ip -n "$PERF_NETNS" link set perf-b up
}

perf_in() {
    if [ -n "$PERF_NETNS" ]; then
        ip netns exec "$PERF_NETNS" "$@"
    else
        "$@"
    fi
}

# perf_start LOG CMD...: starts a server in the background (inside the
# namespace when there is one) and sets PERF_LAST_PID to its PID: `ip netns
# exec` execs the command, so the PID is the server's own. Not to be called
# in $(...): the PID must reach PERF_PIDS of this shell.
perf_start() {
    local log=$1
    shift
    if [ -n "$PERF_NETNS" ]; then
        ip netns exec "$PERF_NETNS" "$@" >"$log" 2>&1 &
    else
        "$@" >"$log" 2>&1 &
    fi
    PERF_LAST_PID=$!
    PERF_PIDS+=("$PERF_LAST_PID")
}

# perf_stop PID: SIGTERM, up to 5 s, then SIGKILL; only this PID.
perf_stop() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# perf_wait_udp PORT: waits (up to 5 s) until something in the namespace
# listens on 127.0.0.1:PORT/udp.
perf_wait_udp() {
    local port=$1 i
    for i in $(seq 50); do
        perf_in ss -Hlun "sport = :$port" | grep -q . && return 0
        sleep 0.1
    done
    perf_log "nothing listens on udp port $port"
    return 1
}

# perf_peak_rss_mib PID: the process's peak resident set (VmHWM), in MiB.
perf_peak_rss_mib() {
    awk '/^VmHWM:/ { printf "%.2f\n", $2 / 1024 }' "/proc/$1/status"
}

# A server that forks per transfer (tftpd-hpa, which also ignores SIGCHLD,
# so its children's CPU never reaches its own cutime) spreads its memory and
# CPU over children the parent's counters do not see. perf_tree_start PID
# samples, every 100 ms, the summed Pss (proportional set size: shared
# library pages divided among the processes that map them, so 200 children
# are not charged 200 libcs) of PID and its children, and the CPU ticks of
# each child last seen. perf_tree_stop prints "PEAK_PSS_MIB CHILD_TICKS".
perf_tree_start() {
    local pid=$1
    PERF_TREE_FILE="$PERF_TMP/tree.$pid"
    echo 0 >"$PERF_TREE_FILE.pss"
    : >"$PERF_TREE_FILE.cpu"
    (
        max=0
        while kill -0 "$pid" 2>/dev/null; do
            files="/proc/$pid/smaps_rollup"
            for p in $(ps -o pid= --ppid "$pid" 2>/dev/null || true); do
                files="$files /proc/$p/smaps_rollup /proc/$p/stat"
            done
            # One cat and one awk per sample, whatever the number of
            # children: the sampler must not compete with the server.
            # shellcheck disable=SC2086
            sum=$(cat $files 2>/dev/null | awk -v cpu="$PERF_TREE_FILE.cpu" '
                /^Pss:/ { s += $2 }
                /^[0-9]+ \(/ { print $1, $14 + $15 >> cpu }
                END { print s + 0 }') || true
            sum=${sum:-0}
            if [ "$sum" -gt "$max" ]; then max=$sum; echo "$max" >"$PERF_TREE_FILE.pss"; fi
            sleep 0.1
        done
    ) &
    PERF_TREE_PID=$!
    PERF_PIDS+=("$PERF_TREE_PID")
}

perf_tree_stop() {
    perf_stop "$PERF_TREE_PID"
    local pss ticks
    pss=$(awk '{ printf "%.2f", $1 / 1024 }' "$PERF_TREE_FILE.pss")
    ticks=$(awk '{ if ($2 > t[$1]) t[$1] = $2 } END { for (p in t) s += t[p]; print s + 0 }' \
        "$PERF_TREE_FILE.cpu")
    echo "$pss $ticks"
}

# perf_cpu_ticks PID: user + system CPU of the process and of its reaped
# children (fields 14-17 of /proc/PID/stat), in clock ticks.
perf_cpu_ticks() {
    # The command name (field 2) may hold spaces: cut after its ')'.
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 + $14 + $15 }'
}

perf_clk_tck() { getconf CLK_TCK; }

perf_now() { date +%s.%N; }

# perf_elapsed START: seconds since START (from perf_now).
perf_elapsed() { awk -v s="$1" -v e="$(perf_now)" 'BEGIN { printf "%.6f\n", e - s }'; }

# perf_row SCENARIO SERVER CLIENT METRIC VALUE HIGHER_IS_BETTER REPEAT
#         [WORKERS] [NOTE]: appends one row (the contract in perf/README.md)
# and prints it as one line for the log.
perf_row() {
    local scenario=$1 server=$2 client=$3 metric=$4 value=$5 hib=$6 repeat=$7
    local workers=${8:-} note=${9:-}
    jq -cn --arg scenario "$scenario" --arg server "$server" --arg client "$client" \
        --arg metric "$metric" --argjson value "$value" --argjson hib "$hib" \
        --argjson repeat "$repeat" --arg workers "$workers" --arg note "$note" \
        '{scenario: $scenario, server: $server, client: $client, metric: $metric,
          value: $value, higher_is_better: $hib, repeat: $repeat}
         + (if $workers == "" then {} else {workers: ($workers | tonumber)} end)
         + (if $note == "" then {} else {note: $note} end)' >>"$PERF_ROWS"
    printf '%-16s %-10s %-9s %-14s %12.3f  (repeat %s%s)\n' "$scenario" \
        "$server${workers:+ w$workers}" "$client" "$metric" "$value" "$repeat" \
        "${note:+; $note}"
}

# perf_fail WHAT: records a failed measurement; the driver goes on with the
# others and exits 1 at the end (perf_finish).
perf_fail() {
    PERF_FAILED=$((PERF_FAILED + 1))
    perf_log "FAILED: $*"
    echo "FAILED: $*"
}

perf_finish() {
    if [ "$PERF_FAILED" -ne 0 ]; then
        perf_log "$PERF_FAILED measurement(s) failed"
        exit 1
    fi
}
