#!/usr/bin/env bash
# perf/tftp.sh OUTDIR: dls beside tftpd-hpa, dnsmasq and atftpd, driven by
# the same clients in one run, inside a private network namespace (its own
# loopback: dnsmasq's fixed port 69 and our other ports meet nobody else's).
#
# Scenarios (perf/README.md says what each stands for):
#   tftp-1432        one transfer, blksize 1432, lock-step (iPXE); clients
#                    curl, atftp and dls-bench
#   tftp-1468-w4     one transfer, blksize 1468, windowsize 4 (UEFI);
#                    dls-bench and atftp
#   tftp-65464-w64   one transfer, blksize 65464, windowsize 64; dls-bench
#   tftp-storm-200   200 clients at once fetch a 30 MiB file, blksize 1432
#                    lock-step (iPXE fetching a kernel); dls-bench: aggregate
#                    MB/s, p99 transfer time, failures, peak RSS and CPU
#                    seconds per GiB of the server
#   tftp-storm-200-w4  the same storm at blksize 1468, windowsize 4 (UEFI
#                    firmware fetching a large EFI image)
# PERF_TFTP_PARTS chooses among "singles storm storm-w4" (default: all).
# Servers without windowsize (tftpd-hpa 5.2, dnsmasq 2.90) answer without
# it and the transfer runs lock-step: their rows say so.
#
# Every byte is checked: dls-bench compares each block with the source,
# curl's and atftp's output is compared by sha256. A single-stream failure,
# or any failed transfer of dls, fails the driver (exit 1) after the other
# measurements; a peer's failed transfers in the storm are recorded as its
# `failures` row.

# shellcheck source=perf/lib.sh
. "$(dirname "$0")/lib.sh"
perf_init "$@"

perf_need jq jq
perf_need ss iproute2
perf_need in.tftpd tftpd-hpa
perf_need dnsmasq dnsmasq-base
perf_need atftp atftp
perf_need curl curl

# atftpd conflicts with tftpd-hpa as a package: unpack it, do not install.
atftpd_unpack() {
    local dir="$PERF_TMP/atftpd"
    mkdir -p "$dir"
    if ! (cd "$dir" && apt-get download atftpd >/dev/null 2>&1); then
        apt-get update -qq >/dev/null
        (cd "$dir" && apt-get download atftpd >/dev/null 2>&1)
    fi
    dpkg -x "$dir"/atftpd_*.deb "$dir/x"
    ATFTPD="$dir/x/usr/sbin/atftpd"
}
atftpd_unpack

if [ "$PERF_QUICK" = 1 ]; then
    SINGLE_MIB=8 STORM_MIB=2 STORM_CLIENTS=20 STORM_LIMIT=30s
else
    SINGLE_MIB=64 STORM_MIB=30 STORM_CLIENTS=200 STORM_LIMIT=300s
fi
STORM=tftp-storm-200
PARTS=${PERF_TFTP_PARTS:-"singles storm storm-w4"}
SERVERS=${PERF_TFTP_SERVERS:-"dls:1 dls:2 tftpd-hpa dnsmasq atftpd"}

# One root for every server. atftpd wants a world-writable root (it never
# writes here: no client sends WRQ).
ROOT="$PERF_TMP/root"
mkdir -p "$ROOT"
chmod 777 "$ROOT"
head -c $((SINGLE_MIB << 20)) /dev/urandom >"$ROOT/single.bin"
head -c $((STORM_MIB << 20)) /dev/urandom >"$ROOT/storm.bin"
chmod 644 "$ROOT"/*.bin
SINGLE_SHA=$(sha256sum <"$ROOT/single.bin" | cut -d' ' -f1)

perf_netns perf-tftp

# start_server NAME WORKERS: sets SRV_PID and SRV_PORT.
start_server() {
    local name=$1 workers=$2 log="$PERF_TMP/$1$2.log"
    case $name in
    dls)
        SRV_PORT=6969
        cat >"$PERF_TMP/dlsd.toml" <<EOF
[engine]
workers = $workers
[http]
enabled = false
[tftp]
listen = ["127.0.0.1:$SRV_PORT"]
root = "$ROOT"
EOF
        perf_start "$log" "$DLSD" serve --config "$PERF_TMP/dlsd.toml" ;;
    tftpd-hpa)
        SRV_PORT=6970
        perf_start "$log" in.tftpd -L -4 -a "127.0.0.1:$SRV_PORT" -s "$ROOT" ;;
    dnsmasq)
        # TFTP port fixed at 69; --port=0: no DNS; no dhcp-range: no DHCP;
        # --tftp-max: the default of 50 transfers would refuse the storm.
        SRV_PORT=69
        perf_start "$log" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 \
            --listen-address=127.0.0.1 --bind-interfaces --enable-tftp \
            --tftp-root="$ROOT" --tftp-max=1024 --pid-file= --user=root \
            --log-facility=- ;;
    atftpd)
        SRV_PORT=6971
        perf_start "$log" "$ATFTPD" --daemon --no-fork --port "$SRV_PORT" \
            --bind-address 127.0.0.1 --maxthread 1024 --logfile /dev/null "$ROOT" ;;
    esac
    SRV_PID=$PERF_LAST_PID
    perf_wait_udp "$SRV_PORT" || { cat "$log" >&2; return 1; }
}

# note_for SERVER SCENARIO: what a reader must know about this row.
note_for() {
    case "$1:$2" in
    tftpd-hpa:*-w*) echo "no windowsize: lock-step" ;;
    dnsmasq:tftp-1468-w4 | dnsmasq:tftp-storm-200-w4) echo "no windowsize: lock-step" ;;
    dnsmasq:tftp-65464-w64) echo "no windowsize: lock-step; blksize capped by dnsmasq" ;;
    esac
}

# bench SCENARIO NAME WORKERS REPEAT ARGS...: one dls-bench run; sets
# BENCH_JSON; prints its summary on failure.
bench() {
    local scenario=$1 name=$2 workers=$3 repeat=$4
    shift 4
    BENCH_JSON="$PERF_TMP/bench.json"
    rm -f "$BENCH_JSON"
    if ! perf_in "$DLS_BENCH" tftp --server "127.0.0.1:$SRV_PORT" --json "$BENCH_JSON" \
        "$@" >"$PERF_TMP/bench.out" 2>&1; then
        cat "$PERF_TMP/bench.out"
        [ -s "$BENCH_JSON" ] || { perf_fail "$scenario $name$workers repeat $repeat: dls-bench"; return 1; }
        return 2
    fi
}

single_bench() {
    local scenario=$1 name=$2 workers=$3 repeat=$4
    shift 4
    if bench "$scenario" "$name" "$workers" "$repeat" --file single.bin \
        --source "$ROOT/single.bin" --tsize --duration 60s "$@"; then
        perf_row "$scenario" "$name" dls-bench MB/s "$(jq .mb_per_s "$BENCH_JSON")" true \
            "$repeat" "$workers" "$(note_for "$name" "$scenario")"
    elif [ $? -eq 2 ]; then
        perf_fail "$scenario $name$workers repeat $repeat: transfer failed"
    fi
}

# single_client SCENARIO NAME WORKERS REPEAT CLIENT CMD...: times one
# transfer by a real client into $PERF_TMP/out.bin and checks its sha256.
single_client() {
    local scenario=$1 name=$2 workers=$3 repeat=$4 client=$5
    shift 5
    local out="$PERF_TMP/out.bin" start secs
    rm -f "$out"
    start=$(perf_now)
    if ! timeout 120 ip netns exec "$PERF_NETNS" "$@" >"$PERF_TMP/client.out" 2>&1; then
        cat "$PERF_TMP/client.out"
        perf_fail "$scenario $name$workers repeat $repeat: $client exited non-zero"
        return
    fi
    secs=$(perf_elapsed "$start")
    if [ "$(sha256sum <"$out" | cut -d' ' -f1)" != "$SINGLE_SHA" ]; then
        perf_fail "$scenario $name$workers repeat $repeat: $client got different bytes"
        return
    fi
    perf_row "$scenario" "$name" "$client" MB/s \
        "$(awk -v b=$((SINGLE_MIB << 20)) -v s="$secs" 'BEGIN { printf "%.3f", b / s / 1e6 }')" \
        true "$repeat" "$workers" "$(note_for "$name" "$scenario")"
}

singles() {
    local name=$1 workers=$2 repeat=$3 out="$PERF_TMP/out.bin" url
    url="tftp://127.0.0.1:$SRV_PORT/single.bin"
    single_client tftp-1432 "$name" "$workers" "$repeat" curl \
        curl -sS -o "$out" --tftp-blksize 1432 "$url"
    single_client tftp-1432 "$name" "$workers" "$repeat" atftp \
        atftp -g -r single.bin -l "$out" --option "blksize 1432" 127.0.0.1 "$SRV_PORT"
    single_bench tftp-1432 "$name" "$workers" "$repeat" --blksize 1432
    single_client tftp-1468-w4 "$name" "$workers" "$repeat" atftp \
        atftp -g -r single.bin -l "$out" --option "blksize 1468" --option "windowsize 4" \
        127.0.0.1 "$SRV_PORT"
    single_bench tftp-1468-w4 "$name" "$workers" "$repeat" --blksize 1468 --windowsize 4
    single_bench tftp-65464-w64 "$name" "$workers" "$repeat" --blksize 65464 --windowsize 64
}

# The storm on a freshly started server, so its peak RSS is the storm's.
storm() {
    local name=$1 workers=$2 repeat=$3 ticks0 ticks1 rss tree=0 rc=0 note child_ticks
    local STORM=${4:-$STORM} blk=${5:-1432} win=${6:-0}
    ticks0=$(perf_cpu_ticks "$SRV_PID")
    # tftpd-hpa forks per transfer: its memory and CPU are its children's.
    if [ "$name" = tftpd-hpa ]; then perf_tree_start "$SRV_PID"; tree=1; fi
    bench "$STORM" "$name" "$workers" "$repeat" --file storm.bin --source "$ROOT/storm.bin" \
        --clients "$STORM_CLIENTS" --transfers "$STORM_CLIENTS" --blksize "$blk" --windowsize "$win" --tsize \
        --duration "$STORM_LIMIT" || rc=$?
    ticks1=$(perf_cpu_ticks "$SRV_PID")
    rss=$(perf_peak_rss_mib "$SRV_PID")
    if [ $tree = 1 ]; then
        read -r rss child_ticks < <(perf_tree_stop)
        ticks1=$((ticks1 + child_ticks))
        note="Pss of parent and children summed, sampled every 100 ms; CPU of children sampled"
    fi
    [ $rc -eq 1 ] && return
    local completed failed bytes
    completed=$(jq .completed "$BENCH_JSON")
    failed=$(jq .failed "$BENCH_JSON")
    bytes=$(jq .bytes "$BENCH_JSON")
    perf_row "$STORM" "$name" dls-bench MB/s "$(jq .mb_per_s "$BENCH_JSON")" true "$repeat" "$workers"
    perf_row "$STORM" "$name" dls-bench p99_transfer_s "$(jq '.transfer_ms.p99 / 1000' "$BENCH_JSON")" \
        false "$repeat" "$workers"
    perf_row "$STORM" "$name" dls-bench failures "$failed" false "$repeat" "$workers"
    perf_row "$STORM" "$name" dls-bench peak_rss_MiB "$rss" false "$repeat" "$workers" "${note:-}"
    perf_row "$STORM" "$name" dls-bench cpu_s_per_GiB \
        "$(awk -v t=$((ticks1 - ticks0)) -v hz="$(perf_clk_tck)" -v b="$bytes" \
            'BEGIN { printf "%.3f", (b > 0 ? t / hz / (b / 1073741824) : 0) }')" \
        false "$repeat" "$workers"
    if [ "$completed" -eq 0 ]; then
        perf_fail "$STORM $name$workers repeat $repeat: no transfer completed"
    elif [ "$failed" -ne 0 ] && [ "$name" = dls ]; then
        perf_fail "$STORM dls w$workers repeat $repeat: $failed transfers failed"
    elif [ "$failed" -ne 0 ]; then
        perf_log "$STORM $name repeat $repeat: $failed of $STORM_CLIENTS transfers failed"
    fi
}

perf_log "tftp: servers $SERVERS; $PERF_REPEAT repeat(s); single ${SINGLE_MIB} MiB, storm $STORM_CLIENTS x ${STORM_MIB} MiB"
# Repeats outermost, so a burst of load from elsewhere on this shared
# machine spreads over every server instead of sinking one.
for repeat in $(seq "$PERF_REPEAT"); do
    for server in $SERVERS; do
        name=${server%%:*}
        workers=""
        [ "$name" != "$server" ] && workers=${server#*:}
        # Each part on a freshly started server, so a storm's peak RSS is its own.
        for part in $PARTS; do
            start_server "$name" "$workers" || { perf_fail "$name$workers did not start"; continue; }
            case $part in
                singles) singles "$name" "$workers" "$repeat" ;;
                storm) storm "$name" "$workers" "$repeat" ;;
                storm-w4) storm "$name" "$workers" "$repeat" "$STORM-w4" 1468 4 ;;
                *) perf_fail "unknown PERF_TFTP_PARTS entry $part" ;;
            esac
            perf_stop "$SRV_PID"
        done
    done
done
perf_finish
