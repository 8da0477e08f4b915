#!/usr/bin/env bash
# perf/iscsi.sh OUTDIR: dlsd (1 and 2 workers) and tgt side by side on
# loopback, each serving the same LUN file, loaded by dls-bench iscsi and
# libiscsi's iscsi-perf. Appends rows to OUTDIR/rows.jsonl (perf/README.md).
#
# Page cache: the LUN file is read once before the runs and stays cached,
# so this measures the targets' CPU and syscall cost per command and per
# byte, not a disk. With PERF_ISCSI_PIN=1, dls with 1 worker and tgt are
# pinned to core 0 and the clients to core 1 (dls with 2 workers is left
# unpinned: it needs both cores).
#
# All three targets run for the whole script and every measurement is made
# on each of them back to back (dls 1 worker, dls 2 workers, tgt), so the
# load of a shared machine falls on all of them alike.
#
# Environment: PERF_REPEAT (default 3), PERF_QUICK=1 (64 MiB LUN, 2 s runs,
# one repeat), PERF_ISCSI_SECONDS (default 5), PERF_ISCSI_LUN_MIB (default
# 1024), DLSD, DLS_BENCH.
set -euo pipefail

OUT=${1:?usage: perf/iscsi.sh OUTDIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ROWS=$OUT/rows.jsonl
REPEAT=${PERF_REPEAT:-3}
SECONDS_PER_RUN=${PERF_ISCSI_SECONDS:-5}
LUN_MIB=${PERF_ISCSI_LUN_MIB:-1024}
# 2 s, not 1: iscsi-perf prints its first average after a second.
if [ "${PERF_QUICK:-0}" = 1 ]; then REPEAT=1; SECONDS_PER_RUN=2; LUN_MIB=64; fi
DLSD=${DLSD:-$ROOT/target/release/dlsd}
DLS_BENCH=${DLS_BENCH:-$ROOT/target/release/dls-bench}
IQN=iqn.2026-12.org.dls:perf
CLK_TCK=$(getconf CLK_TCK)

if [ ! -x "$DLSD" ] || [ ! -x "$DLS_BENCH" ]; then
    (cd "$ROOT" && cargo build --release --bin dlsd --bin dls-bench)
fi
if ! command -v tgtd >/dev/null || ! command -v iscsi-perf >/dev/null || ! command -v python3 >/dev/null; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends tgt libiscsi-bin python3
fi

WORK=$(mktemp -d /tmp/perf-iscsi.$$.XXXX)
# tgtd's control socket number: one no live tgtd holds (another run's
# tgtadm would otherwise reach, and at the end stop, the wrong daemon).
TGT_CTL=$((1000 + $$ % 30000))
while [ -S "/var/run/tgtd/socket.$TGT_CTL" ] && pgrep -f "tgtd .*-C $TGT_CTL( |\$)" >/dev/null; do
    TGT_CTL=$((TGT_CTL + 1))
done
declare -A PID PORT LUN_NO WORKERS_OF
CLIENT_PIDS=()
cleanup() {
    local p
    for p in "${CLIENT_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for s in "${!PID[@]}"; do stop_server "$s" || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# Pinning (PERF_ISCSI_PIN=1, two cores or more): targets on core 0, clients
# on core 1. Off by default: on a machine shared with other jobs core 0 is
# often the busiest, and a pinned target then measures the neighbours.
PIN=0
if [ "${PERF_ISCSI_PIN:-0}" = 1 ] && [ "$(nproc)" -ge 2 ]; then PIN=1; fi
if [ $PIN = 1 ]; then CLIENT=(taskset -c 1); else CLIENT=(); fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

cpu_ticks() { # utime + stime of the whole process (every thread)
    awk '{print $14 + $15}' "/proc/$1/stat"
}

vm_hwm_mib() {
    awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"
}

row() { # scenario server client metric value higher_is_better repeat workers note
    local workers=""
    [ -n "$8" ] && workers=",\"workers\":$8"
    printf '{"scenario":"%s","server":"%s","client":"%s","metric":"%s","value":%s,"higher_is_better":%s,"repeat":%s%s,"note":"%s"}\n' \
        "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$workers" "$9" >>"$ROWS"
    echo "$1 $2${8:+ ($8 workers)} $3: $4 = $5"
}

wait_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}

start_dls() { # name workers
    local port
    port=$(free_port)
    cat >"$WORK/$1.toml" <<TOML
[engine]
workers = $2
pin_workers = $([ $PIN = 1 ] && echo true || echo false)
[http]
enabled = false
[iscsi]
listen = ["127.0.0.1:$port"]
[[iscsi.target]]
iqn = "$IQN"
luns = [{ path = "$WORK/lun.img", read_only = true }]
TOML
    "$DLSD" serve --config "$WORK/$1.toml" --log-level warn >"$WORK/$1.log" 2>&1 &
    PID[$1]=$!
    PORT[$1]=$port
    LUN_NO[$1]=0
    WORKERS_OF[$1]=$2
    wait_port "$port"
    if [ "$2" = 1 ] && [ $PIN = 1 ]; then taskset -a -p 0x1 "${PID[$1]}" >/dev/null; fi
}

start_tgt() {
    local port
    port=$(free_port)
    tgtd -f --iscsi "portal=127.0.0.1:$port" -C "$TGT_CTL" >"$WORK/tgtd.log" 2>&1 &
    PID[tgt]=$!
    PORT[tgt]=$port
    LUN_NO[tgt]=1 # tgt puts its controller at LUN 0
    WORKERS_OF[tgt]=
    wait_port "$port"
    local t=(tgtadm -C "$TGT_CTL" --lld iscsi)
    "${t[@]}" --op new --mode target --tid 1 -T "$IQN"
    "${t[@]}" --op new --mode logicalunit --tid 1 --lun 1 -b "$WORK/lun.img"
    "${t[@]}" --op bind --mode target --tid 1 -I ALL
    if [ $PIN = 1 ]; then taskset -a -p 0x1 "${PID[tgt]}" >/dev/null; fi
}

stop_server() { # name
    local pid=${PID[$1]:-}
    [ -n "$pid" ] || return 0
    if [ "$1" = tgt ]; then
        # tgtd ignores SIGTERM while targets exist.
        tgtadm -C "$TGT_CTL" --lld iscsi --op delete --force --mode target --tid 1 2>/dev/null || true
        tgtadm -C "$TGT_CTL" --op delete --mode system 2>/dev/null || true
    else
        kill -TERM "$pid" 2>/dev/null || true
    fi
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "PID[$1]"
}

FAILED=0

# One measurement: scenario, client, sessions, qd, block size (bytes), pattern.
measure() {
    local server=$1 scenario=$2 client=$3 sessions=$4 qd=$5 bs=$6 pattern=$7
    local pid=${PID[$server]} port=${PORT[$server]} lun=${LUN_NO[$server]}
    local workers=${WORKERS_OF[$server]} name=${server%%[0-9]*}
    echo 5 >"/proc/$pid/clear_refs" # resets VmHWM for this scenario
    local before after bytes iops mbs
    before=$(cpu_ticks "$pid")
    if [ "$client" = dls-bench ]; then
        if ! "${CLIENT[@]}" "$DLS_BENCH" iscsi --portal "127.0.0.1:$port" --target "$IQN" \
            --lun "$lun" --sessions "$sessions" --queue-depth "$qd" --block-size "$bs" \
            --pattern "$pattern" --duration "${SECONDS_PER_RUN}s" --json "$WORK/r.json" \
            >"$WORK/client.log" 2>&1; then
            echo "FAILED: $scenario $name dls-bench" >&2; cat "$WORK/client.log" >&2
            FAILED=1; return 0
        fi
        read -r iops mbs p99 bytes < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))
print(r["iops"], r["mb_per_s"], r["latency_us"]["p99"], r["bytes"])' "$WORK/r.json")
    else
        local url="iscsi://127.0.0.1:$port/$IQN/$lun" rnd=() i
        [ "$pattern" = rand ] && rnd=(-r)
        # No -t: iscsi-perf's own timer never stops when a loaded machine
        # skips a second of progress, so it runs until SIGINT, which it
        # handles by draining and printing its average.
        CLIENT_PIDS=()
        for i in $(seq "$sessions"); do
            "${CLIENT[@]}" timeout --preserve-status -s INT -k 20 "$SECONDS_PER_RUN" \
                iscsi-perf -b $((bs / 512)) -m "$qd" "${rnd[@]}" "$url" >"$WORK/perf.$i.log" 2>&1 &
            CLIENT_PIDS+=($!)
        done
        # Its exit status after SIGINT varies ("ABORTED!" when commands
        # were still in flight); a run fails when it printed no average or
        # reported a failed command or connection.
        for i in "${CLIENT_PIDS[@]}"; do wait "$i" || true; done
        CLIENT_PIDS=()
        iops=0
        for i in $(seq "$sessions"); do
            local one log="$WORK/perf.$i.log"
            one=$(tr '\r' '\n' <"$log" | grep -o 'iops average [0-9]*' | tail -1 | awk '{print $3}' || true)
            if [ -z "$one" ] || grep -qiE 'failed|error' "$log"; then
                echo "FAILED: $scenario $name iscsi-perf" >&2; tr '\r' '\n' <"$log" >&2
                FAILED=1; return 0
            fi
            iops=$((iops + one))
        done
        bytes=$((iops * bs * SECONDS_PER_RUN))
        mbs=$(awk -v i="$iops" -v b="$bs" 'BEGIN {printf "%.1f", i * b / 1e6}')
        p99=
    fi
    after=$(cpu_ticks "$pid")
    local note="page cache: CPU and syscall cost, not disk"
    row "$scenario" "$name" "$client" IOPS "$iops" true "$REP" "$workers" "$note"
    row "$scenario" "$name" "$client" MB/s "$mbs" true "$REP" "$workers" "$note"
    [ -n "$p99" ] && row "$scenario" "$name" "$client" p99_latency_us "$p99" false "$REP" "$workers" "$note"
    row "$scenario" "$name" "$client" peak_rss_MiB "$(vm_hwm_mib "$pid")" false "$REP" "$workers" "$note"
    local cpu
    cpu=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v b="$bytes" \
        'BEGIN {printf "%.3f", (b > 0 ? (t / hz) / (b / 1073741824) : 0)}')
    row "$scenario" "$name" "$client" cpu_s_per_GiB "$cpu" false "$REP" "$workers" "$note"
}

# Every measurement on each target back to back.
run_scenarios() {
    local client server
    for client in dls-bench iscsi-perf; do
        for server in dls1 dls2 tgt; do measure $server iscsi-4k-randread-qd32 "$client" 1 32 4096 rand; done
        for server in dls1 dls2 tgt; do measure $server iscsi-128k-seqread "$client" 1 4 131072 seq; done
        for server in dls1 dls2 tgt; do measure $server iscsi-1m-seqread "$client" 1 4 1048576 seq; done
        for server in dls1 dls2 tgt; do measure $server iscsi-16sessions "$client" 16 8 4096 rand; done
    done
}

# The same bytes for every target; read once so the page cache holds them.
head -c $((LUN_MIB << 20)) /dev/urandom >"$WORK/lun.img"
sync
cat "$WORK/lun.img" >/dev/null

start_dls dls1 1
start_dls dls2 2
start_tgt
for REP in $(seq "$REPEAT"); do
    run_scenarios
done

if [ $FAILED != 0 ]; then
    echo "perf/iscsi.sh: some scenarios failed (see above)" >&2
    exit 1
fi
