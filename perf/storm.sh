#!/usr/bin/env bash
# Boot storm, dls against the peer stack a lab would otherwise run
# (dnsmasq for DHCP + TFTP, tgt for iSCSI), with the same client in the same
# run: `dls-bench storm`, N machines each doing DHCP (relayed), a TFTP fetch
# of undionly.kpxe and boot.ipxe, an iSCSI login and a read of K MiB.
#
#   perf/storm.sh OUTDIR       appends rows to OUTDIR/rows.jsonl
#
# Environment: PERF_REPEAT (default 3), PERF_QUICK=1 (one small run),
# DLSD, DLS_BENCH, STORM_CLIENTS (default 200), STORM_READ_MIB (default 16).
#
# Everything runs in two namespaces made here (dls-storm-$$-s with the
# servers, dls-storm-$$-c with the client), joined by a veth pair; nothing
# touches a real interface. Every process is stopped by its PID on exit.
set -euo pipefail

OUT=${1:?usage: perf/storm.sh OUTDIR}
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
REPO=$(cd "$HERE/.." && pwd)
DLSD=${DLSD:-$REPO/target/release/dlsd}
DLS_BENCH=${DLS_BENCH:-$REPO/target/release/dls-bench}
REPEAT=${PERF_REPEAT:-3}
CLIENTS=${STORM_CLIENTS:-200}
READ_MIB=${STORM_READ_MIB:-16}
if [ "${PERF_QUICK:-0}" = 1 ]; then REPEAT=1; CLIENTS=20; READ_MIB=2; fi
export PATH=$PATH:/sbin:/usr/sbin

NET=$(( $$ % 200 + 20 ))
SRV_IP=10.$NET.0.1
CLI_IP=10.$NET.0.2
NS_S=dls-storm-$$-s
NS_C=dls-storm-$$-c
IF_S=dst$$s
IF_C=dst$$c
IQN=iqn.2026-12.dev.dls:storm$$
# tgtd's control socket number: one no live tgtd holds (another run's
# tgtadm would otherwise reach, and at the end stop, the wrong daemon).
TGT_PORT=$(( 20000 + $$ % 10000 ))
while [ -S "/var/run/tgtd/socket.$TGT_PORT" ] && pgrep -f "tgtd .*-C $TGT_PORT( |\$)" >/dev/null; do
    TGT_PORT=$(( TGT_PORT + 1 ))
done
WORK=$(mktemp -d /tmp/dls-storm.XXXXXX)
PIDS=()

log() { printf '%s storm: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -f "/var/run/tgtd/socket.$TGT_PORT" "/var/run/tgtd/socket.$TGT_PORT.lock"
    ip netns del "$NS_S" 2>/dev/null || true
    ip netns del "$NS_C" 2>/dev/null || true
    if [ "${STORM_KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" -eq 0 ] || { log "must run as root (namespaces, tgtd)"; exit 1; }
need=()
command -v dnsmasq >/dev/null || need+=(dnsmasq)
command -v tgtd >/dev/null || need+=(tgt)
[ -f /usr/lib/ipxe/undionly.kpxe ] || need+=(ipxe)
command -v ping >/dev/null || need+=(iputils-ping)
command -v jq >/dev/null || need+=(jq)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
[ -x "$DLSD" ] && [ -x "$DLS_BENCH" ] || (cd "$REPO" && cargo build --release --bins >&2)

# --- the lab -----------------------------------------------------------------
# The first packets across a new veth are slow (seen: a first storm's TFTP
# phase at 2.3 s, the next at 20 ms); a ping each way before any
# measurement keeps that out of the first server's figures.
ip netns add "$NS_S"
ip netns add "$NS_C"
ip -n "$NS_S" link set lo up
ip -n "$NS_C" link set lo up
ip link add "$IF_S" netns "$NS_S" type veth peer name "$IF_C" netns "$NS_C"
ip -n "$NS_S" addr add "$SRV_IP/16" dev "$IF_S"
ip -n "$NS_C" addr add "$CLI_IP/16" dev "$IF_C"
ip -n "$NS_S" link set "$IF_S" up
ip -n "$NS_C" link set "$IF_C" up
ip netns exec "$NS_C" ping -q -c 3 -i 0.2 -W 2 "$SRV_IP" >/dev/null

ROOT=$WORK/tftp
mkdir -p "$ROOT"
chmod 755 "$WORK"   # dnsmasq's TFTP runs as nobody
cp /usr/lib/ipxe/undionly.kpxe "$ROOT/"
printf '#!ipxe\nsanboot iscsi:%s::::%s\n' "$SRV_IP" "$IQN" > "$ROOT/boot.ipxe"
DISK=$WORK/disk.img
# Data, not a hole: both targets read the same bytes from the page cache.
head -c $(( (READ_MIB + 1) << 20 )) /dev/urandom > "$DISK"

# Peak RSS (VmHWM) of a process, in MiB.
hwm() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# Waits until something listens on TCP port $1 in the server namespace.
wait_tcp() {
    for _ in $(seq 100); do
        ip netns exec "$NS_S" ss -ltn "sport = :$1" | grep -q LISTEN && return 0
        sleep 0.1
    done
    log "nothing listens on $1"; tail -5 "$WORK"/*.log >&2 || true; return 1
}

start_dls() {
    local workers=$1
    cat > "$WORK/dls.toml" <<EOF
[engine]
workers = $workers
shutdown_grace = "2s"
[http]
enabled = false
[tftp]
listen = ["$SRV_IP:69"]
root = "$ROOT"
max_transfers = 4096
[dhcp]
interface = "$IF_S"
subnet = "10.$NET.0.0/16"
range = ["10.$NET.1.0", "10.$NET.255.250"]
lease_store = "$WORK/leases"
[dhcp.boot]
bios = "undionly.kpxe"
ipxe_script = "boot.ipxe"
[iscsi]
listen = ["$SRV_IP:3260"]
[[iscsi.target]]
iqn = "$IQN"
luns = [{ path = "$DISK", read_only = true }]
EOF
    rm -f "$WORK/leases"
    ip netns exec "$NS_S" "$DLSD" --log-level "${DLS_LOG_LEVEL:-warn}" serve --config "$WORK/dls.toml" \
        2> "$WORK/dlsd.log" &
    SERVER_PIDS=($!)
    SERVER_KIND=dls
    PIDS+=($!)
    wait_tcp 3260
}

start_peer() {
    rm -f "$WORK/dnsmasq.leases"
    ip netns exec "$NS_S" dnsmasq --keep-in-foreground --user=root --port=0 --no-resolv --no-hosts \
        --interface="$IF_S" --bind-interfaces --dhcp-range="10.$NET.1.0,10.$NET.255.250,255.255.0.0,1h" \
        --dhcp-lease-max=70000 \
        --no-ping --dhcp-leasefile="$WORK/dnsmasq.leases" \
        --dhcp-boot=undionly.kpxe --enable-tftp --tftp-root="$ROOT" \
        --tftp-max=4096 --pid-file= --log-facility="$WORK/dnsmasq.log" &
    local dns=$!
    PIDS+=("$dns")
    ip netns exec "$NS_S" tgtd -f -C "$TGT_PORT" --iscsi "portal=$SRV_IP:3260" \
        > "$WORK/tgtd.log" 2>&1 &
    local tgt=$!
    PIDS+=("$tgt")
    wait_tcp 3260
    local adm=(ip netns exec "$NS_S" tgtadm -C "$TGT_PORT" --lld iscsi)
    "${adm[@]}" --op new --mode target --tid 1 -T "$IQN"
    "${adm[@]}" --op new --mode logicalunit --tid 1 --lun 1 -b "$DISK"
    "${adm[@]}" --op bind --mode target --tid 1 -I ALL
    SERVER_PIDS=("$dns" "$tgt")
    SERVER_KIND=peer
}

stop_servers() {
    local pid
    # tgtd leaves only when told to through its control socket.
    if [ "${SERVER_KIND:-}" = peer ]; then
        ip netns exec "$NS_S" tgtadm -C "$TGT_PORT" --lld iscsi --op delete --mode system 2>/dev/null || true
    fi
    for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${SERVER_PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
}

# Emits one result row.
emit() { # scenario server metric value higher_is_better repeat [workers]
    local w=""
    [ -n "${7:-}" ] && w=",\"workers\":$7"
    printf '{"scenario":"%s","server":"%s","client":"dls-bench","metric":"%s","value":%s,"higher_is_better":%s,"repeat":%s%s}\n' \
        "$1" "$2" "$3" "$4" "$5" "$6" "$w" >> "$OUT/rows.jsonl"
    printf 'storm: %-16s %-12s %-18s %s\n' "$1" "$2$([ -n "${7:-}" ] && echo " w$7")" "$3" "$4"
}

# One storm against whatever runs now; LUN $1.
storm() {
    local name=$1 lun=$2 rep=$3 workers=${4:-}
    local json=$WORK/storm-$name-$rep.json
    local rc=0
    ip netns exec "$NS_C" "$DLS_BENCH" storm --clients "$CLIENTS" \
        --dhcp-server "$SRV_IP" --relay "$CLI_IP" --tftp-server "$SRV_IP:69" \
        --binary-source "$ROOT/undionly.kpxe" --script-source "$ROOT/boot.ipxe" \
        --portal "$SRV_IP:3260" --target "$IQN" --lun "$lun" \
        --read-mib "$READ_MIB" --timeout 300s --json "$json" >&2 || rc=$?
    local rss=0 pid
    for pid in "${SERVER_PIDS[@]}"; do
        rss=$(awk -v a="$rss" -v b="$(hwm "$pid")" 'BEGIN {print a + b}')
    done
    local scen="boot-storm-$CLIENTS"
    if [ ! -s "$json" ]; then
        log "$name: dls-bench storm wrote no results (exit $rc)"
        return 1
    fi
    local failed
    failed=$(jq .failed "$json")
    emit "$scen" "$name" failed "$failed" false "$rep" "$workers"
    emit "$scen" "$name" peak_rss_MiB "$rss" false "$rep" "$workers"
    # Times of a storm in which machines failed would flatter the server
    # (a failed phase takes no time): only whole storms give time rows.
    if [ "$failed" = 0 ]; then
        emit "$scen" "$name" seconds "$(jq .seconds "$json")" false "$rep" "$workers"
        emit "$scen" "$name" slowest_machine_ms "$(jq .slowest_total_ms "$json")" false "$rep" "$workers"
        for phase in dhcp tftp_binary tftp_script iscsi_login iscsi_read; do
            emit "$scen" "$name" "${phase}_p99_ms" "$(jq ".phase_ms.$phase.p99" "$json")" false "$rep" "$workers"
        done
    fi
    if [ "$rc" -ne 0 ]; then
        log "$name: storm failed (exit $rc); failures:"
        jq -r '.failures[]' "$json" | head -20 >&2
        return 1
    fi
}

mkdir -p "$OUT"
log "$CLIENTS machines, $READ_MIB MiB each, $REPEAT repeats"
failed=0
for rep in $(seq "$REPEAT"); do
    for workers in 1 2; do
        start_dls "$workers"
        storm dls 0 "$rep" "$workers" || failed=1
        stop_servers
    done
    start_peer
    storm dnsmasq+tgt 1 "$rep" || failed=1
    stop_servers
done
exit $failed
