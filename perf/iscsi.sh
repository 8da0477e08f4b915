#!/usr/bin/env bash
# perf/iscsi.sh OUTDIR: dlsd (1 and 2 workers) and tgt side by side on
# loopback, each serving the same LUN file, loaded by dls-bench iscsi and
# libiscsi's iscsi-perf. Appends rows to OUTDIR/rows.jsonl (perf/README.md).
#
# Page cache: the LUN file is read once before the runs and stays cached,
# so this measures the targets' CPU and syscall cost per command and per
# byte, not a disk. Target and client are pinned to different cores when
# the machine has two (dls with 2 workers is left unpinned: it needs both).
#
# Environment: PERF_REPEAT (default 3), PERF_QUICK=1 (64 MiB LUN, 1 s runs,
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
if [ "${PERF_QUICK:-0}" = 1 ]; then REPEAT=1; SECONDS_PER_RUN=1; LUN_MIB=64; fi
DLSD=${DLSD:-$ROOT/target/release/dlsd}
DLS_BENCH=${DLS_BENCH:-$ROOT/target/release/dls-bench}
IQN=iqn.2026-12.org.dls:perf
CLK_TCK=$(getconf CLK_TCK)

if [ ! -x "$DLSD" ] || [ ! -x "$DLS_BENCH" ]; then
    (cd "$ROOT" && cargo build --release --bin dlsd --bin dls-bench)
fi
if ! command -v tgtd >/dev/null || ! command -v iscsi-perf >/dev/null; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends tgt libiscsi-bin
fi

WORK=$(mktemp -d /tmp/perf-iscsi.$$.XXXX)
SERVER_PID=
TGT_CTL=$((1000 + $$ % 30000))
cleanup() {
    stop_server || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# Pin only on a machine with at least two cores.
if [ "$(nproc)" -ge 2 ]; then CLIENT=(taskset -c 1); else CLIENT=(); fi

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

start_dls() { # workers
    PORT=$(free_port)
    LUN_NO=0
    cat >"$WORK/dls.toml" <<TOML
[engine]
workers = $1
[http]
enabled = false
[iscsi]
listen = ["127.0.0.1:$PORT"]
[[iscsi.target]]
iqn = "$IQN"
luns = [{ path = "$WORK/lun.img", read_only = true }]
TOML
    "$DLSD" serve --config "$WORK/dls.toml" --log-level warn >"$WORK/dlsd.log" 2>&1 &
    SERVER_PID=$!
    SERVER_KIND=dls
    wait_port "$PORT"
    if [ "$1" = 1 ] && [ ${#CLIENT[@]} -gt 0 ]; then taskset -a -p 0x1 "$SERVER_PID" >/dev/null; fi
}

start_tgt() {
    PORT=$(free_port)
    LUN_NO=1 # tgt puts its controller at LUN 0
    tgtd -f --iscsi "portal=127.0.0.1:$PORT" -C "$TGT_CTL" >"$WORK/tgtd.log" 2>&1 &
    SERVER_PID=$!
    SERVER_KIND=tgt
    wait_port "$PORT"
    local t=(tgtadm -C "$TGT_CTL" --lld iscsi)
    "${t[@]}" --op new --mode target --tid 1 -T "$IQN"
    "${t[@]}" --op new --mode logicalunit --tid 1 --lun 1 -b "$WORK/lun.img"
    "${t[@]}" --op bind --mode target --tid 1 -I ALL
    if [ ${#CLIENT[@]} -gt 0 ]; then taskset -a -p 0x1 "$SERVER_PID" >/dev/null; fi
}

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    if [ "$SERVER_KIND" = tgt ]; then
        # tgtd ignores SIGTERM while targets exist.
        tgtadm -C "$TGT_CTL" --lld iscsi --op delete --force --mode target --tid 1 2>/dev/null || true
        tgtadm -C "$TGT_CTL" --op delete --mode system 2>/dev/null || true
    else
        kill -TERM "$SERVER_PID" 2>/dev/null || true
    fi
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

FAILED=0

# One measurement: scenario, client, sessions, qd, block size (bytes), pattern.
measure() {
    local scenario=$1 client=$2 sessions=$3 qd=$4 bs=$5 pattern=$6
    local name=$SERVER_KIND workers=$WORKERS
    echo 5 >"/proc/$SERVER_PID/clear_refs" # resets VmHWM for this scenario
    local before after bytes iops mbs
    before=$(cpu_ticks "$SERVER_PID")
    if [ "$client" = dls-bench ]; then
        if ! "${CLIENT[@]}" "$DLS_BENCH" iscsi --portal "127.0.0.1:$PORT" --target "$IQN" \
            --lun "$LUN_NO" --sessions "$sessions" --queue-depth "$qd" --block-size "$bs" \
            --pattern "$pattern" --duration "${SECONDS_PER_RUN}s" --json "$WORK/r.json" \
            >"$WORK/client.log" 2>&1; then
            echo "FAILED: $scenario $name dls-bench" >&2; cat "$WORK/client.log" >&2
            FAILED=1; return 0
        fi
        read -r iops mbs p99 bytes < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))
print(r["iops"], r["mb_per_s"], r["latency_us"]["p99"], r["bytes"])' "$WORK/r.json")
    else
        local url="iscsi://127.0.0.1:$PORT/$IQN/$LUN_NO" rnd=() pids=() i
        [ "$pattern" = rand ] && rnd=(-r)
        for i in $(seq "$sessions"); do
            "${CLIENT[@]}" timeout $((SECONDS_PER_RUN + 30)) iscsi-perf -t "$SECONDS_PER_RUN" \
                -b $((bs / 512)) -m "$qd" "${rnd[@]}" "$url" >"$WORK/perf.$i.log" 2>&1 &
            pids+=($!)
        done
        local ok=1
        for i in "${pids[@]}"; do wait "$i" || ok=0; done
        iops=0
        for i in $(seq "$sessions"); do
            local one
            one=$(tr '\r' '\n' <"$WORK/perf.$i.log" | grep -o 'iops average [0-9]*' | tail -1 | awk '{print $3}')
            if [ $ok = 0 ] || [ -z "$one" ]; then
                echo "FAILED: $scenario $name iscsi-perf" >&2; cat "$WORK/perf.$i.log" >&2
                FAILED=1; return 0
            fi
            iops=$((iops + one))
        done
        bytes=$((iops * bs * SECONDS_PER_RUN))
        mbs=$(awk -v i="$iops" -v b="$bs" 'BEGIN {printf "%.1f", i * b / 1e6}')
        p99=
    fi
    after=$(cpu_ticks "$SERVER_PID")
    local note="page cache: CPU and syscall cost, not disk"
    row "$scenario" "$name" "$client" IOPS "$iops" true "$REP" "$workers" "$note"
    row "$scenario" "$name" "$client" MB/s "$mbs" true "$REP" "$workers" "$note"
    [ -n "$p99" ] && row "$scenario" "$name" "$client" p99_latency_us "$p99" false "$REP" "$workers" "$note"
    row "$scenario" "$name" "$client" peak_rss_MiB "$(vm_hwm_mib "$SERVER_PID")" false "$REP" "$workers" "$note"
    local cpu
    cpu=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v b="$bytes" \
        'BEGIN {printf "%.3f", (b > 0 ? (t / hz) / (b / 1073741824) : 0)}')
    row "$scenario" "$name" "$client" cpu_s_per_GiB "$cpu" false "$REP" "$workers" "$note"
}

run_scenarios() {
    local client
    for client in dls-bench iscsi-perf; do
        measure iscsi-4k-randread-qd32 "$client" 1 32 4096 rand
        measure iscsi-128k-seqread "$client" 1 4 131072 seq
        measure iscsi-1m-seqread "$client" 1 4 1048576 seq
        measure iscsi-16sessions "$client" 16 8 4096 rand
    done
}

# The same bytes for every target; read once so the page cache holds them.
head -c $((LUN_MIB << 20)) /dev/urandom >"$WORK/lun.img"
sync
cat "$WORK/lun.img" >/dev/null

for REP in $(seq "$REPEAT"); do
    for WORKERS in 1 2; do
        start_dls "$WORKERS"
        run_scenarios
        stop_server
    done
    WORKERS=
    start_tgt
    run_scenarios
    stop_server
done

if [ $FAILED != 0 ]; then
    echo "perf/iscsi.sh: some scenarios failed (see above)" >&2
    exit 1
fi
