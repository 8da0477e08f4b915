#!/usr/bin/env bash
# perf/dhcp.sh OUTDIR: DHCP exchanges per second of dlsd, dnsmasq and
# kea-dhcp4, one at a time, each driven by dls-bench dhcp and kea's
# perfdhcp acting as a relay agent. Appends rows to OUTDIR/rows.jsonl
# (contract: perf/README.md) and prints one line per measurement.
#
# Topology: two namespaces made here (names carry this script's PID), joined
# by a veth pair. The server side holds 10.201.0.1/16 and runs the server
# under test bound to its veth; the client side holds 10.201.0.2/16, the
# relay address the clients bind on port 67 and send as giaddr. The pool is
# 10.201.1.0-10.201.255.254 for every server. Everything started here is
# stopped by PID and the namespaces are deleted on any exit (trap).
#
# Fairness, stated: every server keeps its leases in the same place (a temp
# dir under PERF_DHCP_LEASE_DIR, default /var/tmp, or /dev/shm) and runs without
# per-packet logging (dlsd at warn, dnsmasq --quiet-dhcp, kea at WARN) and
# without a ping check. Durability differs and the rows say so: dlsd
# fdatasyncs its journal before each batch of ACKs; dnsmasq rewrites and
# fsyncs its whole lease file after each change; kea's memfile appends each
# lease to a CSV file without fsync (the page cache holds it: a kill -9
# loses nothing, a power cut can).
#
# Environment: PERF_REPEAT (3), PERF_QUICK=1 (smoke run), DLSD, DLS_BENCH,
# PERF_DHCP_CLIENTS (5000; QUICK 500), PERF_DHCP_SECONDS (10; QUICK 2),
# PERF_DHCP_IN_FLIGHT (256), PERF_DHCP_PERFDHCP_RATE (perfdhcp's target
# rate; default: the rate dls-bench just measured against the same server,
# so perfdhcp checks whether the server sustains it), PERF_DHCP_SERVERS
# ("dls dnsmasq kea kea-mt"; kea-mt is kea with 2 packet threads),
# PERF_DHCP_STORES ("disk tmpfs").
#
# Two scenarios: `dhcp-exchanges` keeps every server's leases on disk (the
# real setting: dlsd pays an fdatasync per batch, kea none), and
# `dhcp-exchanges-tmpfs` keeps them all on tmpfs (/dev/shm), where a flush
# costs nothing, so the figures compare the servers' packet paths alone.
# On a shared machine the disk's flush latency swings with other jobs' I/O
# and moves the first scenario's dlsd figure by 2x or more between runs.
set -euo pipefail

OUT=${1:?usage: perf/dhcp.sh OUTDIR}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ROWS=$OUT/rows.jsonl

REPEAT=${PERF_REPEAT:-3}
CLIENTS=${PERF_DHCP_CLIENTS:-5000}
SECONDS_RUN=${PERF_DHCP_SECONDS:-10}
IN_FLIGHT=${PERF_DHCP_IN_FLIGHT:-256}
PD_RATE=${PERF_DHCP_PERFDHCP_RATE:-}
LAST_RATE=1
SERVERS=${PERF_DHCP_SERVERS:-dls dnsmasq kea kea-mt}
STORES=${PERF_DHCP_STORES:-disk tmpfs}
if [[ ${PERF_QUICK:-0} == 1 ]]; then
    REPEAT=1
    CLIENTS=${PERF_DHCP_CLIENTS:-500}
    SECONDS_RUN=${PERF_DHCP_SECONDS:-2}
fi
DLSD=${DLSD:-target/release/dlsd}
DLS_BENCH=${DLS_BENCH:-target/release/dls-bench}

need() { # program package
    command -v "$1" >/dev/null 2>&1 && return
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}
need ip iproute2
need jq jq
need dnsmasq dnsmasq-base
need kea-dhcp4 kea-dhcp4-server
need perfdhcp kea-admin
if [[ ! -x $DLSD || ! -x $DLS_BENCH ]]; then
    cargo build --release --bin dlsd --bin dls-bench
fi

TAG=$$
SRV=dlsperf-$TAG-s
CLI=dlsperf-$TAG-c
SIF=dps$TAG
CIF=dpc$TAG
SERVER_IP=10.201.0.1
RELAY_IP=10.201.0.2
WORK=$(mktemp -d "${PERF_DHCP_LEASE_DIR:-/var/tmp}/dls-perf-dhcp.XXXXXX")
SHM=$(mktemp -d /dev/shm/dls-perf-dhcp.XXXXXX)
PID=

cleanup() {
    if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PID" 2>/dev/null || true
    fi
    ip netns del "$CLI" 2>/dev/null || true
    ip netns del "$SRV" 2>/dev/null || true
    rm -rf "$WORK" "$SHM"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$SRV"
ip netns add "$CLI"
ip -n "$SRV" link set lo up
ip -n "$CLI" link set lo up
ip link add "$SIF" netns "$SRV" type veth peer name "$CIF" netns "$CLI"
ip -n "$SRV" addr add $SERVER_IP/16 dev "$SIF"
ip -n "$CLI" addr add $RELAY_IP/16 dev "$CIF"
ip -n "$SRV" link set "$SIF" up
ip -n "$CLI" link set "$CIF" up
# A veth goes up at once; wait out duplicate address detection anyway.
sleep 0.5

row() { # server client metric value higher_is_better repeat [note]
    local extra=
    [[ $1 == dls ]] && extra=',"workers":1'
    [[ -n ${7:-} ]] && extra="$extra,\"note\":$(jq -Rn --arg n "$7" '$n')"
    printf '{"scenario":"%s","server":"%s","client":"%s","metric":"%s","value":%s,"higher_is_better":%s,"repeat":%s%s}\n' \
        "$SCENARIO" "$1" "$2" "$3" "$4" "$5" "$6" "$extra" >>"$ROWS"
    printf '%s %-8s %-9s %-21s %12s  (repeat %s)\n' "$SCENARIO" "$1" "$2" "$3" "$4" "$6"
}

DURABILITY_dls="lease journal fdatasync'ed before each batch of ACKs"
DURABILITY_dnsmasq="whole lease file rewritten and fsync'ed per change"
DURABILITY_kea="memfile CSV append, no fsync"
DURABILITY_kea_mt="memfile CSV append, no fsync; 2 packet threads"

start_dls() {
    cat >"$WORK/dlsd.toml" <<CONF
[engine]
workers = 1
[http]
listen = "127.0.0.1:0"
[dhcp]
interface = "$SIF"
range = ["10.201.1.0", "10.201.255.254"]
subnet = "10.201.0.0/16"
router = "$SERVER_IP"
lease_time = "12h"
lease_store = "$LEASES/dls/leases"
CONF
    mkdir -p "$LEASES/dls"
    ip netns exec "$SRV" "$DLSD" --log-level warn serve --config "$WORK/dlsd.toml" \
        2>"$WORK/dlsd.log" &
    PID=$!
}

start_dnsmasq() {
    ip netns exec "$SRV" dnsmasq -k --conf-file=/dev/null --port=0 \
        --interface="$SIF" --bind-interfaces --except-interface=lo \
        --dhcp-range=10.201.1.0,10.201.255.254,255.255.0.0,12h \
        --dhcp-lease-max=70000 --dhcp-leasefile="$LEASES/dnsmasq.leases" \
        --no-ping --quiet-dhcp --log-facility="$WORK/dnsmasq.log" \
        --pid-file="$WORK/dnsmasq.pid" &
    PID=$!
}

start_kea() { # threads (0: kea's default single-threaded mode)
    local mt='"multi-threading": { "enable-multi-threading": false },'
    if [[ $1 -gt 0 ]]; then
        mt="\"multi-threading\": { \"enable-multi-threading\": true, \"thread-pool-size\": $1, \"packet-queue-size\": 256 },"
    fi
    cat >"$WORK/kea.json" <<CONF
{ "Dhcp4": {
    "interfaces-config": { "interfaces": [ "$SIF" ], "dhcp-socket-type": "udp" },
    "lease-database": { "type": "memfile", "persist": true,
                        "name": "$LEASES/kea-leases4.csv", "lfc-interval": 0 },
    $mt
    "valid-lifetime": 43200,
    "subnet4": [ { "subnet": "10.201.0.0/16",
                   "pools": [ { "pool": "10.201.1.0 - 10.201.255.254" } ],
                   "option-data": [ { "name": "routers", "data": "$SERVER_IP" } ] } ],
    "loggers": [ { "name": "kea-dhcp4", "severity": "WARN",
                   "output_options": [ { "output": "$WORK/kea.log" } ] } ]
} }
CONF
    KEA_PIDFILE_DIR=$WORK KEA_LOCKFILE_DIR=$WORK \
        ip netns exec "$SRV" kea-dhcp4 -c "$WORK/kea.json" >"$WORK/kea.out" 2>&1 &
    PID=$!
}

stop_server() {
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=
}

# Waits until the server answers one exchange (or fails the scenario).
wait_ready() { # name
    for _ in $(seq 50); do
        if ! kill -0 "$PID" 2>/dev/null; then
            echo "dhcp.sh: $1 exited at start; its logs:" >&2
            tail -n 20 "$WORK"/*.log "$WORK"/*.out 2>/dev/null >&2 || true
            return 1
        fi
        if ip netns exec "$CLI" "$DLS_BENCH" dhcp --server $SERVER_IP --relay $RELAY_IP \
            --clients 1 --exchanges 1 --timeout 200ms --retries 0 >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    echo "dhcp.sh: $1 never answered a DHCP exchange" >&2
    return 1
}

# CPU time (user + system, clock ticks) the server under test used so far.
cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$PID/stat"
}

# Datagrams the client namespace's kernel dropped because a client socket's
# receive buffer was full (a drop the client caused, not the server).
client_rcvbuf_drops() {
    ip netns exec "$CLI" nstat -az UdpRcvbufErrors | awk '/UdpRcvbufErrors/{print $2}'
}

run_dls_bench() { # server durability repeat
    local json=$WORK/bench.json before after
    before=$(cpu_ticks)
    ip netns exec "$CLI" "$DLS_BENCH" dhcp --server $SERVER_IP --relay $RELAY_IP \
        --clients "$CLIENTS" --in-flight "$IN_FLIGHT" --duration "${SECONDS_RUN}s" \
        --timeout 1s --retries 2 --json "$json" >"$WORK/bench.txt" 2>"$WORK/bench.err" || true
    if [[ ! -s $json ]] || [[ $(jq .completed "$json") == 0 ]]; then
        echo "dhcp.sh: dls-bench against $1 completed nothing" >&2
        cat "$WORK/bench.txt" "$WORK/bench.err" >&2
        return 1
    fi
    after=$(cpu_ticks)
    LAST_RATE=$(jq '.exchanges_per_s | ceil' "$json")
    local note="flat out, $IN_FLIGHT in flight, $CLIENTS clients; $2"
    row "$1" dls-bench exchanges_per_s "$(jq .exchanges_per_s "$json")" true "$3" "$note"
    row "$1" dls-bench p99_ms "$(jq .exchange_ms.p99 "$json")" false "$3"
    row "$1" dls-bench drops "$(jq '.dropped + .naks' "$json")" false "$3"
    # Server CPU per exchange: less sensitive than the rate to the other
    # jobs on a shared machine (their load delays us but does not bill us).
    local cpu
    cpu=$(jq -n --argjson t $((after - before)) --argjson hz "$(getconf CLK_TCK)" \
        --argjson n "$(jq .completed "$json")" '$t / $hz * 1e6 / $n | . * 1000 | round / 1000')
    row "$1" dls-bench cpu_us_per_exchange "$cpu" false "$3" "server user+system CPU"
    if [[ $(jq .conflicts "$json") != 0 ]]; then
        echo "dhcp.sh: $1 gave one address to two clients" >&2
        return 1
    fi
}

run_perfdhcp() { # server durability repeat
    local txt=$WORK/perfdhcp.txt rate drops sent target=${PD_RATE:-$LAST_RATE} before
    before=$(client_rcvbuf_drops)
    # perfdhcp against a unicast address acts as a relay: it binds
    # RELAY_IP:67 and sets giaddr. A fresh MAC base per run keeps its
    # clients apart from earlier runs.
    ip netns exec "$CLI" perfdhcp -4 -l $RELAY_IP -r "$target" -R "$CLIENTS" \
        -p "$SECONDS_RUN" -W 1000000 -b "mac=02:$(printf %02x $((RANDOM % 256))):00:00:00:00" \
        $SERVER_IP >"$txt" 2>&1 || true
    rate=$(sed -n 's/^Rate: \([0-9.]*\) 4-way exchanges.*/\1/p' "$txt" | head -1)
    if [[ -z $rate ]]; then
        echo "dhcp.sh: perfdhcp against $1 gave no rate" >&2
        cat "$txt" >&2
        return 1
    fi
    drops=$(awk '/^\*\*\*Statistics for: DISCOVER-OFFER/{s=1} s && /^drops:/{print $2; s=0}' "$txt" | head -1)
    sent=$(awk '/^\*\*\*Statistics for: DISCOVER-OFFER/{s=1} s && /^sent packets:/{print $3; s=0}' "$txt" | head -1)
    local note="perfdhcp -r $target (dls-bench's rate unless set), $CLIENTS clients; $2"
    row "$1" perfdhcp exchanges_per_s "$rate" true "$3" "$note"
    row "$1" perfdhcp drops "${drops:-0}" false "$3" "DISCOVER drops of ${sent:-?} sent"
    # perfdhcp keeps the default socket buffer: a server that answers in
    # bursts (dlsd sends a batch after each journal flush) overflows it, and
    # perfdhcp counts those as the server's drops. The kernel knows better.
    row "$1" perfdhcp client_rcvbuf_drops $(($(client_rcvbuf_drops) - before)) false "$3" \
        "replies the client namespace dropped: perfdhcp's receive buffer was full"
}

for store in $STORES; do
    case $store in
        disk) LEASES=$WORK/leases SCENARIO=dhcp-exchanges ;;
        tmpfs) LEASES=$SHM SCENARIO=dhcp-exchanges-tmpfs ;;
        *) echo "dhcp.sh: unknown lease store $store" >&2; exit 1 ;;
    esac
    for server in $SERVERS; do
        rm -rf "${LEASES:?}"/dls "$LEASES"/*.leases "$LEASES"/kea-leases4.csv*
        mkdir -p "$LEASES"
        case $server in
            dls) start_dls; durability=$DURABILITY_dls ;;
            dnsmasq) start_dnsmasq; durability=$DURABILITY_dnsmasq ;;
            kea) start_kea 0; durability=$DURABILITY_kea ;;
            kea-mt) start_kea 2; durability=$DURABILITY_kea_mt ;;
            *) echo "dhcp.sh: unknown server $server" >&2; exit 1 ;;
        esac
        durability="$durability; leases on $store"
        wait_ready "$server"
        for r in $(seq "$REPEAT"); do
            run_dls_bench "$server" "$durability" "$r"
            run_perfdhcp "$server" "$durability" "$r"
        done
        rss=$(awk '/^VmHWM:/{printf "%.1f", $2 / 1024}' "/proc/$PID/status")
        row "$server" dls-bench peak_rss_MiB "$rss" false 1 "VmHWM after all runs against it"
        stop_server
    done
done
