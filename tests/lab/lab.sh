#!/usr/bin/env bash
# Netboot lab: diskless qemu VMs boot Linux over the network inside private
# network namespaces, and the lab checks what each wrote to its iSCSI disk.
#
#   tests/lab/lab.sh MODE
#
# Modes:
#   peer-bios  SeaBIOS + the NIC's iPXE ROM -> DHCP (dnsmasq) -> boot.ipxe over
#              TFTP (dnsmasq) -> sanboot iSCSI (tgt) -> grub (BIOS) -> Linux ->
#              iscsistart -b (iBFT) -> root mounted rw -> marker
#   peer-uefi  OVMF's own PXE -> DHCP -> ipxe.efi over TFTP -> DHCP again as
#              iPXE -> boot.ipxe -> sanboot -> grub (EFI) -> Linux -> marker
#   peer-kernel  SeaBIOS + iPXE ROM -> DHCP -> boot.ipxe -> vmlinuz and
#              initrd.img over TFTP (no sanboot, no iBFT) -> Linux logs in with
#              dls.target=/dls.portal= from its command line -> marker
#   dls-bios, dls-uefi, dls-kernel  the same boots with one dlsd as DHCP,
#              TFTP and iSCSI server (dnsmasq stays only to send IPv6 router
#              advertisements, which iPXE waits for); the disk is LUN 0.
#   dls-two-vm two BIOS VMs powered on together, each with a [[dhcp.host]]
#              reservation (its own address and root_path) and its own
#              target; boot.ipxe sanboots ${root-path}
#   dls-proxy  dnsmasq hands out the addresses (DHCP only: no boot file, no
#              TFTP); dlsd in proxyDHCP mode gives the boot information and
#              serves TFTP and iSCSI; BIOS sanboot as dls-bios
#
# Environment:
#   LAB_TIMEOUT  seconds to wait for the marker (default 240)
#   LAB_NET      third octet of the lab subnet 10.77.N.0/24 (default from $$)
#   LAB_KEEP=1   keep the work directory (logs, pcap, LUN) also on success
#   LAB_WORK     work directory (default: a new one under /tmp)
#   LAB_KERNEL_ARGS  extra kernel parameters (e.g. earlyprintk=serial), put
#                in the LUN copy's ESP as boot/grub/dls.cfg or on iPXE's
#                kernel line
#   DLSD         the dlsd binary (default target/release/dlsd, built if missing)
#   DLS_LAB_CACHE  image cache (see build-image.sh)
#
# Everything runs in two namespaces named dlslab-$$-srv (bridge br0, the
# servers, the capture) and dlslab-$$-vm (bridge brvm, the VMs' taps), joined
# by a veth pair. No real interface is touched. Every process the lab starts
# is stopped by its PID on exit, failure or Ctrl-C.
#
# Output: the timeline of each run, one `TIMES MODE vmN: ...` line per VM
# (seconds since power-on of the milestones), and a last line
# `PASS MODE: marker after N s ...`; exit status 0 only then.
set -euo pipefail

MODE=${1:-}
STACK=${MODE%%-*}   # peer or dls
VMS=1               # VMs powered on together
DHCP_MODE=server    # dlsd's [dhcp] mode
case "$MODE" in
    peer-bios|peer-uefi|peer-kernel|dls-bios|dls-uefi|dls-kernel) BOOT=${MODE#*-} ;;
    dls-two-vm) BOOT=bios; VMS=2 ;;
    dls-proxy) BOOT=bios; DHCP_MODE=proxy ;;
    *) echo "usage: $0 peer-bios|peer-uefi|peer-kernel|dls-bios|dls-uefi|dls-kernel|dls-two-vm|dls-proxy" >&2
       exit 2 ;;
esac

HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
REPO=$(cd "$HERE/../.." && pwd)
TIMEOUT=${LAB_TIMEOUT:-240}
NET=${LAB_NET:-$(( $$ % 200 + 20 ))}
SUBNET=10.77.$NET
SERVER_IP=$SUBNET.1
SERVER_IP6=fd77:0:0:$NET::1
NS_SRV=dlslab-$$-srv
NS_VM=dlslab-$$-vm
# Per VM: MAC, reserved address (dls-two-vm), target, LUN file, serial log,
# SMBIOS UUID (iPXE names its initiator iqn.2010-04.org.ipxe:<UUID>).
VM_MAC=() VM_IP=() VM_IQN=() VM_LUN=() VM_SERIAL=() VM_UUID=()
for (( v=0; v<VMS; v++ )); do
    VM_MAC[v]=52:54:00:77:$(printf %02x "$NET"):$(( 10 + v ))
    VM_IP[v]=$SUBNET.$(( 11 + v ))
    VM_IQN[v]=iqn.2026-12.dev.dls:lab.disk$$.vm$v
    VM_UUID[v]=6b1e0f6c-0d15-4a5b-8c1a-$(printf %08x%04x $$ "$v")
done
export PATH=$PATH:/sbin:/usr/sbin

log() { printf '%s lab: %s\n' "$(date -u +%H:%M:%S.%3N)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (namespaces, tap, tgtd)"

# --- tools -----------------------------------------------------------------
declare -A TOOL_PKG=(
    [qemu-system-x86_64]=qemu-system-x86 [dnsmasq]=dnsmasq [tgtd]=tgt [tgtadm]=tgt
    [dumpcap]=tshark [tshark]=tshark [debugfs]=e2fsprogs [ip]=iproute2
)
REQ_FILES=(/usr/lib/ipxe/ipxe.efi /usr/lib/ipxe/undionly.kpxe
    /usr/lib/ipxe/qemu/efi-virtio.rom /usr/share/OVMF/OVMF_CODE_4M.fd)
missing=()
for t in "${!TOOL_PKG[@]}"; do
    command -v "$t" >/dev/null 2>&1 || missing+=("${TOOL_PKG[$t]}")
done
[ -f /usr/lib/ipxe/ipxe.efi ] || missing+=(ipxe)
[ -f /usr/lib/ipxe/qemu/efi-virtio.rom ] || missing+=(ipxe-qemu)
[ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || missing+=(ovmf)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq >&2
    mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
    # Some machine images carry a backported qemu-utils whose Breaks: keeps
    # Debian 12's qemu-system-x86 out; take qemu-utils at the same version.
    qver=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    if [[ " ${pkgs[*]} " == *" qemu-system-x86 "* ]] \
        && dpkg-query -W -f '${Version}' qemu-utils 2>/dev/null | grep -qv "^$qver\$"; then
        pkgs+=("qemu-utils=$qver")
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --allow-downgrades \
        --no-install-recommends "${pkgs[@]}" >&2
fi
for f in "${REQ_FILES[@]}"; do [ -f "$f" ] || die "missing $f"; done

# --- teardown --------------------------------------------------------------
W=${LAB_WORK:-$(mktemp -d /tmp/dlslab.XXXXXX)}
mkdir -p "$W"
PIDS=()          # name:pid of every process we started, stopped in reverse
TGT_CTL=""
RESULT=fail

stop_pid() {  # stop_pid NAME PID: TERM, wait up to 5 s, then KILL
    local name=$1 pid=$2 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    log "teardown: $name ($pid) ignored TERM, killing"
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? i entry
    set +e
    # A second Ctrl-C must not cut the teardown short.
    trap - EXIT
    trap '' INT TERM
    if [ -n "$TGT_CTL" ]; then
        # tgtd ignores SIGTERM while targets exist.
        timeout 5 tgtadm -C "$TGT_CTL" --lld iscsi --op delete --force --mode target --tid 1 \
            >/dev/null 2>&1
        timeout 5 tgtadm -C "$TGT_CTL" --op delete --mode system >/dev/null 2>&1
    fi
    for (( i=${#PIDS[@]}-1; i>=0; i-- )); do
        entry=${PIDS[$i]}
        stop_pid "${entry%%:*}" "${entry##*:}"
    done
    # tgtd leaves its control socket behind.
    [ -n "$TGT_CTL" ] && rm -f "/var/run/tgtd/socket.$TGT_CTL" "/var/run/tgtd/socket.$TGT_CTL.lock"
    ip netns del "$NS_VM" 2>/dev/null
    ip netns del "$NS_SRV" 2>/dev/null
    if [ "$RESULT" = pass ] && [ "${LAB_KEEP:-0}" != 1 ] && [ -z "${LAB_WORK:-}" ]; then
        rm -rf "$W"
    else
        log "work directory kept: $W"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

started() { PIDS+=("$1:$2"); }

# --- image -------------------------------------------------------------------
"$HERE/build-image.sh" "$W/image"
# shellcheck source=/dev/null
. "$W/image/manifest.env"
KARGS=${LAB_KERNEL_ARGS:-}
[ -z "$KARGS" ] || printf 'set dls_args="%s"\n' "$KARGS" > "$W/dls.cfg"
for (( v=0; v<VMS; v++ )); do
    VM_LUN[v]=$W/lun.vm$v.img
    VM_SERIAL[v]=$W/serial.vm$v.log
    cp --sparse=always "$W/image/disk.img" "${VM_LUN[v]}"
    [ -z "$KARGS" ] \
        || mcopy -o -i "${VM_LUN[v]}@@$((ESP_START_SECTOR * 512))" "$W/dls.cfg" ::/boot/grub/dls.cfg
done

# --- network -----------------------------------------------------------------
log "namespaces $NS_SRV $NS_VM, subnet $SUBNET.0/24"
ip netns add "$NS_SRV"
ip netns add "$NS_VM"
ip -n "$NS_SRV" link set lo up
ip -n "$NS_VM" link set lo up
for spec in "$NS_SRV br0" "$NS_VM brvm"; do
    set -- $spec
    ip -n "$1" link add "$2" type bridge
    ip -n "$1" link set "$2" type bridge stp_state 0 forward_delay 0
done
ip link add v-srv netns "$NS_SRV" type veth peer name v-vm netns "$NS_VM"
ip -n "$NS_SRV" link set v-srv master br0 up
ip -n "$NS_VM" link set v-vm master brvm up
for (( v=0; v<VMS; v++ )); do
    ip -n "$NS_VM" tuntap add dev "tap$v" mode tap
    ip -n "$NS_VM" link set "tap$v" master brvm up
done
ip -n "$NS_VM" link set brvm up
ip netns exec "$NS_SRV" sysctl -qw net.ipv6.conf.br0.accept_dad=0
ip -n "$NS_SRV" addr add "$SERVER_IP/24" dev br0
ip -n "$NS_SRV" addr add "$SERVER_IP6/64" dev br0
ip -n "$NS_SRV" link set br0 up

# --- capture -----------------------------------------------------------------
ip netns exec "$NS_SRV" dumpcap -q -i br0 -w "$W/boot.pcap" >"$W/dumpcap.log" 2>&1 &
started dumpcap $!
for i in $(seq 1 50); do [ -s "$W/boot.pcap" ] && break; sleep 0.1; done

LUN_NR=
if [ "$STACK" = peer ]; then
# --- iSCSI target (tgt) ------------------------------------------------------
# The control port names a unix socket shared by every namespace: pick one
# that no running tgtd holds.
TGT_CTL=$(( $$ % 20000 + 10000 ))
while [ -e "/var/run/tgtd/socket.$TGT_CTL" ]; do TGT_CTL=$((TGT_CTL + 1)); done
ip netns exec "$NS_SRV" tgtd -f --iscsi "portal=$SERVER_IP:3260" -C "$TGT_CTL" \
    >"$W/tgtd.log" 2>&1 &
started tgtd $!
tgt() { tgtadm -C "$TGT_CTL" --lld iscsi "$@"; }
for i in $(seq 1 50); do tgt --op show --mode target >/dev/null 2>&1 && break; sleep 0.1; done
tgt --op new --mode target --tid 1 -T "${VM_IQN[0]}"
# tgt puts its controller at LUN 0; the disk is LUN 1.
tgt --op new --mode logicalunit --tid 1 --lun 1 -b "${VM_LUN[0]}"
tgt --op bind --mode target --tid 1 -I ALL
log "tgtd: ${VM_IQN[0]} LUN 1 on $SERVER_IP:3260 (control port $TGT_CTL)"
LUN_NR=1
fi

# --- boot files and iPXE script --------------------------------------------
mkdir -p "$W/tftp"
cp /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/ipxe.efi /usr/lib/ipxe/snponly.efi "$W/tftp/"
if [ "$BOOT" = kernel ]; then
    cp "$W/image/vmlinuz" "$W/image/initrd.img" "$W/tftp/"
    cat > "$W/tftp/boot.ipxe" <<EOF
#!ipxe
echo dls lab: kernel and initrd over TFTP, root on ${VM_IQN[0]}
kernel tftp://$SERVER_IP/vmlinuz initrd=initrd.img console=ttyS0,115200 panic=5 dls.target=${VM_IQN[0]} dls.portal=$SERVER_IP:3260 $KARGS
initrd tftp://$SERVER_IP/initrd.img
boot
EOF
elif [ "$STACK" = dls ]; then
    # dlsd generates boot.ipxe from its [[dhcp.host]] root paths
    # (generate_ipxe_script); a file of that name here would be a mistake.
    :
else
    # iscsi:<server>:<protocol>:<port>:<LUN>:<target>; LUN 1 on tgt (its
    # controller is LUN 0).
    cat > "$W/tftp/boot.ipxe" <<EOF
#!ipxe
echo dls lab: sanboot ${VM_IQN[0]} from $SERVER_IP
sanboot iscsi:$SERVER_IP:::$LUN_NR:${VM_IQN[0]}
EOF
fi

# --- DHCP + TFTP: dnsmasq (peer) or dlsd ---------------------------------------
if [ "$STACK" = peer ]; then
cat > "$W/dnsmasq.conf" <<EOF
port=0
user=root
interface=br0
bind-interfaces
no-ping
log-dhcp
log-facility=$W/dnsmasq.log
dhcp-leasefile=$W/dnsmasq.leases
dhcp-range=$SUBNET.100,$SUBNET.199,255.255.255.0,1h
dhcp-range=::,constructor:br0,ra-only
enable-ra
enable-tftp
tftp-root=$W/tftp
dhcp-userclass=set:ipxe,iPXE
dhcp-match=set:efi64,option:client-arch,7
dhcp-match=set:efi64,option:client-arch,9
# iPXE: no proxyDHCP to wait for (option 175, sub-option 176 = 1).
dhcp-option=tag:ipxe,encap:175,176,1b
dhcp-boot=tag:ipxe,boot.ipxe,,$SERVER_IP
dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi,,$SERVER_IP
dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe,,$SERVER_IP
EOF
else
# dnsmasq only sends IPv6 router advertisements (iPXE waits for one) and, for
# dls-proxy, hands out addresses (no boot file, no TFTP); the rest is dlsd's.
cat > "$W/dnsmasq.conf" <<EOF
port=0
user=root
interface=br0
bind-interfaces
log-facility=$W/dnsmasq.log
dhcp-range=::,constructor:br0,ra-only
enable-ra
EOF
if [ "$DHCP_MODE" = proxy ]; then
    cat >> "$W/dnsmasq.conf" <<EOF
no-ping
log-dhcp
dhcp-leasefile=$W/dnsmasq.leases
dhcp-range=$SUBNET.100,$SUBNET.199,255.255.255.0,1h
EOF
fi
DLSD=${DLSD:-$REPO/target/release/dlsd}
[ -x "$DLSD" ] || (cd "$REPO" && cargo build --release --bin dlsd) >&2
{
cat <<EOF
[engine]
workers = 2
shutdown_grace = "2s"
[http]
listen = "127.0.0.1:9100"
[tftp]
listen = ["$SERVER_IP:69"]
root = "$W/tftp"
[iscsi]
listen = ["$SERVER_IP:3260"]
EOF
for (( v=0; v<VMS; v++ )); do
    printf '[[iscsi.target]]\niqn = "%s"\nluns = [{ path = "%s" }]\n' "${VM_IQN[v]}" "${VM_LUN[v]}"
done
if [ "$DHCP_MODE" = proxy ]; then
    printf '[dhcp]\ninterface = "br0"\nmode = "proxy"\n'
else
    printf '[dhcp]\ninterface = "br0"\nrange = ["%s", "%s"]\nrouter = "%s"\n' \
        "$SUBNET.100" "$SUBNET.199" "$SERVER_IP"
fi
cat <<EOF
subnet = "$SUBNET.0/24"
lease_store = "$W/leases"
[dhcp.boot]
bios = "undionly.kpxe"
uefi_x64 = "ipxe.efi"
ipxe_script = "boot.ipxe"
EOF
# Sanboot modes: dlsd writes boot.ipxe itself, sanbooting each host's
# root_path (dls-two-vm also reserves each VM's address and names it).
[ "$BOOT" = kernel ] || echo "generate_ipxe_script = true"
if [ "$BOOT" != kernel ]; then
    for (( v=0; v<VMS; v++ )); do
        printf '[[dhcp.host]]\nmac = "%s"\nroot_path = "iscsi:%s::::%s"\n' \
            "${VM_MAC[v]}" "$SERVER_IP" "${VM_IQN[v]}"
        [ "$VMS" -eq 1 ] || printf 'ip = "%s"\nhostname = "vm%s"\n' "${VM_IP[v]}" "$v"
    done
fi
} > "$W/dlsd.toml"
"$DLSD" check-config "$W/dlsd.toml" >"$W/check-config.out" 2>&1 \
    || { cat "$W/check-config.out" >&2; die "dlsd check-config refused the lab's config"; }
if [ "$BOOT" != kernel ]; then
    "$DLSD" ipxe-script --config "$W/dlsd.toml" > "$W/boot.ipxe.generated"
    log "boot.ipxe, as dlsd generates it:"
    grep -E '^(iseq|sanboot)' "$W/boot.ipxe.generated" | sed 's/^/    /' >&2
fi
ip netns exec "$NS_SRV" "$DLSD" --log-level debug serve --config "$W/dlsd.toml" >"$W/dlsd.log" 2>&1 &
started dlsd $!
for i in $(seq 1 50); do grep -q "running (pid" "$W/dlsd.log" && break; sleep 0.1; done
grep -q "running (pid" "$W/dlsd.log" || { cat "$W/dlsd.log" >&2; die "dlsd did not start"; }
log "dlsd: DHCP ($DHCP_MODE), TFTP and iSCSI (${VM_IQN[*]}, LUN 0) on $SERVER_IP"
fi
ip netns exec "$NS_SRV" dnsmasq --keep-in-foreground --conf-file="$W/dnsmasq.conf" \
    --pid-file="$W/dnsmasq.pid" >"$W/dnsmasq.out" 2>&1 &
started dnsmasq $!
sleep 0.3
kill -0 "${PIDS[-1]##*:}" 2>/dev/null || { cat "$W/dnsmasq.out" >&2; die "dnsmasq did not start"; }

# --- the VMs -----------------------------------------------------------------
QEMU_PID=()
T0=$(date +%s.%N)
for (( v=0; v<VMS; v++ )); do
    # shellcheck disable=SC2054  # commas belong to qemu option values
    QEMU=(qemu-system-x86_64 -accel tcg -m 512 -display none -no-reboot -monitor none
        -uuid "${VM_UUID[v]}" -pidfile "$W/qemu.vm$v.pid"
        -chardev "file,id=ser0,path=${VM_SERIAL[v]}" -serial chardev:ser0
        -netdev "tap,id=n0,ifname=tap$v,script=no,downscript=no")
    if [ "$BOOT" != uefi ]; then
        QEMU+=(-machine pc -device "virtio-net-pci,netdev=n0,mac=${VM_MAC[v]}" -boot n)
    else
        cp /usr/share/OVMF/OVMF_VARS_4M.fd "$W/ovmf-vars.vm$v.fd"
        # shellcheck disable=SC2054
        QEMU+=(-machine q35
            -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd
            -drive "if=pflash,format=raw,file=$W/ovmf-vars.vm$v.fd"
            -device "virtio-net-pci,netdev=n0,mac=${VM_MAC[v]},romfile=,bootindex=1")
    fi
    : > "${VM_SERIAL[v]}"
    : > "$W/events.vm$v"
    ip netns exec "$NS_VM" "${QEMU[@]}" >"$W/qemu.vm$v.log" 2>&1 &
    QEMU_PID[v]=$!
    started "qemu-vm$v" "${QEMU_PID[v]}"
done
log "$VMS VM(s) powered on ($MODE), waiting up to ${TIMEOUT}s for the marker"

# Serial milestones, timestamped when first seen (0.2 s resolution).
MILESTONES=(
    "PXE over IPv4|firmware PXE start (OVMF)"
    "iPXE initialising|iPXE start"
    "dls lab: |dls: .* boots |iPXE runs boot.ipxe"
    "Welcome to GRUB|grub start"
    "grub: loading kernel|grub loads kernel"
    "grub: booting|grub boots Linux"
    "Linux version|Linux starts"
    "DLS: init start|initramfs /init"
    "DLS: dhcp ok|Linux DHCP bound"
    "DLS: iscsi logged in|Linux iSCSI login done"
    "DLS-BOOT-OK|marker"
)
declare -A SEEN=()
OUTCOME=()
deadline=$(( $(date +%s) + TIMEOUT ))
while [ "$(date +%s)" -lt "$deadline" ]; do
    now=$(date +%s.%N)
    running=0
    for (( v=0; v<VMS; v++ )); do
        [ -n "${OUTCOME[v]:-}" ] && continue
        for m in "${MILESTONES[@]}"; do
            pat=${m%|*}
            [ -n "${SEEN[$v:$pat]:-}" ] && continue
            if grep -aqE -- "$pat" "${VM_SERIAL[v]}"; then
                SEEN[$v:$pat]=1
                printf '%s vm%s: %s (serial)\n' "$now" "$v" "${m##*|}" >> "$W/events.vm$v"
            fi
        done
        # Decided from the milestones just recorded, so the marker has a time.
        if [ -n "${SEEN[$v:DLS-BOOT-OK]:-}" ]; then OUTCOME[v]=ok
        elif grep -aq 'DLS-BOOT-FAIL' "${VM_SERIAL[v]}"; then OUTCOME[v]=vmfail
        elif ! kill -0 "${QEMU_PID[v]}" 2>/dev/null; then OUTCOME[v]=exited
        else running=$((running + 1))
        fi
    done
    [ "$running" -eq 0 ] && break
    sleep 0.2
done
T_END=$(date +%s.%N)
for (( v=0; v<VMS; v++ )); do
    # A VM powers itself off right after its marker.
    for i in $(seq 1 100); do kill -0 "${QEMU_PID[v]}" 2>/dev/null || break; sleep 0.1; done
    stop_pid "qemu-vm$v" "${QEMU_PID[v]}"
done
sleep 0.5   # let dumpcap flush the last packets and dlsd log the closes

failed=0
for (( v=0; v<VMS; v++ )); do
    [ "${OUTCOME[v]:-timeout}" = ok ] && continue
    log "vm$v: no marker (${OUTCOME[v]:-timeout}) after $(awk -v a="$T0" -v b="$T_END" 'BEGIN {printf "%.1f", b - a}')s; serial log tail:"
    tr -d '\r' < "${VM_SERIAL[v]}" | grep -av '^\s*$' | tail -n 25 >&2
    failed=1
done
[ "$failed" -eq 0 ] || die "not every VM printed the marker"

# --- check what each VM wrote --------------------------------------------------
VM_GOT_IP=()
for (( v=0; v<VMS; v++ )); do
    marker=$(grep -a 'DLS-BOOT-OK' "${VM_SERIAL[v]}" | tr -d '\r' | head -n1)
    log "vm$v serial: $marker"
    dd if="${VM_LUN[v]}" of="$W/root.vm$v.part" bs=512 skip="$ROOT_START_SECTOR" \
        count="$ROOT_SECTORS" status=none
    debugfs -R 'cat /dls-proof.txt' "$W/root.vm$v.part" > "$W/dls-proof.vm$v.txt" 2>"$W/debugfs.vm$v.log"
    read_sha=$(sed -n 's/.*read=\([0-9a-f]*\).*/\1/p' <<<"$marker")
    [ "$read_sha" = "$PAYLOAD_SHA256" ] \
        || die "vm$v read sha $read_sha, image has $PAYLOAD_SHA256"
    grep -q "^read=/dls-payload.bin sha256=$PAYLOAD_SHA256\$" "$W/dls-proof.vm$v.txt" \
        || { cat "$W/debugfs.vm$v.log" "$W/dls-proof.vm$v.txt" >&2; die "/dls-proof.txt not in vm$v's LUN image"; }
    VM_GOT_IP[v]=$(sed -n 's/^ip=//p' "$W/dls-proof.vm$v.txt")
    log "vm$v's LUN image holds /dls-proof.txt:"
    sed 's/^/    /' "$W/dls-proof.vm$v.txt" >&2
done

# --- what dlsd must have seen ---------------------------------------------------
# expect_log WHAT REGEX: dlsd's log must hold a line matching REGEX.
expect_log() {
    grep -Eq -- "$2" "$W/dlsd.log" || die "dlsd's log has no $1 (/$2/)"
}
if [ "$STACK" = dls ]; then
    re() { sed 's/[.]/[.]/g' <<<"$1"; }   # dots literal in addresses and IQNs
    for (( v=0; v<VMS; v++ )); do
        mac=${VM_MAC[v]} ip=${VM_GOT_IP[v]} iqn=$(re "${VM_IQN[v]}")
        if [ "$DHCP_MODE" = proxy ]; then
            expect_log "proxyDHCP reply to $mac" "dhcp: proxy (Offer|Ack) to $mac .* boot \"boot[.]ipxe\""
            grep -q "$mac" "$W/dnsmasq.log" || die "dnsmasq did not serve $mac's address"
        else
            expect_log "DHCP ACK to $mac (iPXE)" "dhcp: ACK $(re "$ip") to $mac .* boot \"boot[.]ipxe\""
        fi
        if [ "$VMS" -gt 1 ]; then
            # The reservation, not the pool, gave the address Linux used.
            [ "$ip" = "${VM_IP[v]}" ] || die "vm$v used $ip, its reservation is ${VM_IP[v]}"
        fi
        case "$BOOT" in
            uefi) expect_log "TFTP of ipxe.efi to vm$v" "tftp: $(re "$ip"):[0-9]+: sent \"ipxe[.]efi\", 850528 bytes" ;;
            kernel) expect_log "TFTP of the kernel to vm$v" "tftp: $(re "$ip"):[0-9]+: sent \"vmlinuz\""
                    expect_log "TFTP of the initrd to vm$v" "tftp: $(re "$ip"):[0-9]+: sent \"initrd[.]img\"" ;;
        esac
        expect_log "TFTP of boot.ipxe to vm$v" "tftp: $(re "$ip"):[0-9]+: sent \"boot[.]ipxe\""
        if [ "$BOOT" != kernel ]; then
            # iPXE names itself after the DHCP hostname, else the SMBIOS UUID.
            expect_log "iPXE's login to $iqn" "iscsi: $(re "$ip"):[0-9]+: iqn[.]2010-04[.]org[.]ipxe:(vm$v|${VM_UUID[v]}) logged in \(Normal, $iqn\)"
        fi
        expect_log "a login to $iqn" "iscsi: $(re "$ip"):[0-9]+: [^ ]+ logged in \(Normal, $iqn\)"
        expect_log "a READ from $iqn by vm$v" "iscsi: $(re "$ip"):[0-9]+: [^ ]+: first READ data sent"
        expect_log "a WRITE to $iqn by vm$v" "iscsi: $(re "$ip"):[0-9]+: [^ ]+: first WRITE data received"
    done
    # The level is the second field: "[2026-12-03T17:23:50.137Z WARN  module] ...".
    ! grep -Eq '^\[[^ ]+ (ERROR|WARN) ' "$W/dlsd.log" \
        || { grep -E '^\[[^ ]+ (ERROR|WARN) ' "$W/dlsd.log" >&2; die "dlsd logged errors or warnings"; }
    log "dlsd's log has each VM's DHCP, TFTP, iSCSI login, READ and WRITE"
fi

# --- timeline ----------------------------------------------------------------
# Serial milestones from the poll loop, DHCP from the capture on br0 (every
# server's messages, with who asked), and for dlsd its own log lines; for the
# peers the capture's TFTP and iSCSI events. All as seconds since power-on.
TS=(tshark -n -r "$W/boot.pcap" -o tcp.desegment_tcp_streams:TRUE)
capture_events() {
    "${TS[@]}" -Y 'dhcp' -T fields -E separator='|' -e frame.time_epoch \
        -e dhcp.option.dhcp -e dhcp.option.vendor_class_id -e dhcp.option.type -e dhcp.hw.mac_addr 2>/dev/null \
        | awk -F'|' '
            { split("DISCOVER OFFER REQUEST DECLINE ACK NAK RELEASE INFORM", n, " ")
              sub(/,.*/, "", $5)   # chaddr, then option 61 when it holds a MAC
              who = ("," $4 "," ~ /,(77|175),/) ? "iPXE" : ($3 ~ /^PXEClient/ ? "firmware PXE" : ($3 ~ /udhcp/ ? "Linux udhcpc" : $3))
              if ($2 == 1 || $2 == 3) last[$5] = who
              if ($2 == 2 || $2 == 5) who = last[$5]
              print $1, "DHCP " n[$2] " " $5 " (" who ", capture)" }'
    [ "$STACK" = peer ] || return 0
    "${TS[@]}" -Y 'tftp.opcode == 1' -T fields -E separator='|' -e frame.time_epoch \
        -e tftp.source_file 2>/dev/null | awk -F'|' '{print $1, "TFTP RRQ " $2 " (capture)"}'
    "${TS[@]}" -Y 'iscsi.opcode == 0x03 && tcp.dstport == 3260' -T fields -E separator='|' -e frame.time_epoch \
        -e tcp.srcport 2>/dev/null | awk -F'|' '!seen[$2]++ {print $1, "iSCSI login request (port " $2 ", capture)"}'
    "${TS[@]}" -Y '(scsi_sbc.opcode == 0x28 || scsi_sbc.opcode == 0x88) && tcp.dstport == 3260' -T fields -E separator='|' \
        -e frame.time_epoch -e tcp.srcport 2>/dev/null \
        | awk -F'|' '!seen[$2]++ {print $1, "first SCSI READ (port " $2 ", capture)"}'
    "${TS[@]}" -Y '(scsi_sbc.opcode == 0x2a || scsi_sbc.opcode == 0x8a) && tcp.dstport == 3260' -T fields -E separator='|' \
        -e frame.time_epoch -e tcp.srcport 2>/dev/null \
        | awk -F'|' '!seen[$2]++ {print $1, "first SCSI WRITE (port " $2 ", capture)"}'
}
# dlsd's own lines: "[2026-12-03T17:23:50.137Z LEVEL module] message".
dlsd_events() {
    [ "$STACK" = dls ] || return 0
    grep -E '\] (dhcp: (ACK|proxy)|tftp: .*(: RRQ |: sent )|iscsi: .*(logged in|first READ|first WRITE))' "$W/dlsd.log" \
        | while IFS= read -r line; do
            stamp=${line#[}; stamp=${stamp%% *}
            msg=${line#*] }
            msg=${msg/: RRQ /: first TFTP block of }
            msg=$(sed -E 's/ (Octet|Netascii) .*//; s/ \([0-9]+ retransmitted\)$//' <<<"$msg")
            printf '%s %s (dlsd)\n' "$(date -d "$stamp" +%s.%N)" "$msg"
        done
}
{ cat "$W"/events.vm*; capture_events; dlsd_events; } | sort -n -k1,1 | awk -v t0="$T0" '
    BEGIN { printf "  %8s  %s\n", "t (s)", "event"; printf "  %8.3f  %s\n", 0, "power-on (qemu started)" }
    { ev = $0; sub(/^[^ ]+ /, "", ev); printf "  %8.3f  %s\n", $1 - t0, ev }' > "$W/timeline.txt"
echo "timeline ($MODE, image $IMAGE_KEY):"
cat "$W/timeline.txt"

# One line per VM with the milestones issue 6 names, seconds since power-on.
since() { [ -n "$1" ] && awk -v a="$T0" -v b="$1" 'BEGIN {printf "%.2f", b - a}' || echo -; }
first() { awk -v re="$1" '$0 ~ re {print $1; exit}' "$W/timeline.raw"; }
{ cat "$W"/events.vm*; capture_events; dlsd_events; } | sort -n -k1,1 > "$W/timeline.raw"
slowest=0
for (( v=0; v<VMS; v++ )); do
    mac=${VM_MAC[v]} ip=$(sed 's/[.]/[.]/g' <<<"${VM_GOT_IP[v]}")
    if [ "$STACK" = dls ]; then
        dhcp=$(first "dhcp: (ACK [^ ]+|proxy [A-Za-z]+) to $mac")
        tftp=$(first "tftp: $ip:[0-9]+: first TFTP block")
        login=$(first "iscsi: $ip:[0-9]+: .* logged in")
        read1=$(first "iscsi: $ip:[0-9]+: .* first READ")
    else
        dhcp=$(first "DHCP ACK $mac")
        tftp=$(first "TFTP RRQ")
        login=$(first "iSCSI login request")
        read1=$(first "first SCSI READ")
    fi
    mark=$(awk '/ marker \(serial\)$/ {print $1; exit}' "$W/events.vm$v")
    total=$(since "$mark")
    # The stretches the servers serve: power-on to the boot loader starting
    # Linux (DHCP, TFTP, the loader reading kernel and initramfs over
    # iSCSI), and Linux's DHCP lease to the marker (its iSCSI login, mount,
    # write). What lies between is the guest decompressing and starting
    # its kernel under TCG, which no server changes.
    loader=$(awk '/ grub boots Linux \(serial\)$/ {print $1; exit}' "$W/events.vm$v")
    bound=$(awk '/ Linux DHCP bound \(serial\)$/ {print $1; exit}' "$W/events.vm$v")
    root=$(awk -v a="$bound" -v b="$mark" 'BEGIN {printf "%.2f", b - a}')
    echo "TIMES $MODE vm$v: dhcp_ack=$(since "$dhcp") first_tftp=$(since "$tftp") iscsi_login=$(since "$login") first_read=$(since "$read1") loader=$(since "$loader") root=$root marker=$total ip=${VM_GOT_IP[v]}"
    slowest=$(awk -v a="$slowest" -v b="$total" 'BEGIN {print (b > a) ? b : a}')
done
RESULT=pass
echo "PASS $MODE: marker after ${slowest}s (power-on to marker, slowest of $VMS VM), proof read back from each LUN"
