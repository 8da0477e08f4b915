#!/usr/bin/env bash
# Netboot lab: a diskless qemu VM boots Linux over the network inside private
# network namespaces, and the lab checks what it wrote to its iSCSI disk.
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
#
# Environment:
#   LAB_TIMEOUT  seconds to wait for the marker (default 240)
#   LAB_NET      third octet of the lab subnet 10.77.N.0/24 (default from $$)
#   LAB_KEEP=1   keep the work directory (logs, pcap, LUN) also on success
#   LAB_WORK     work directory (default: a new one under /tmp)
#   LAB_KERNEL_ARGS  extra kernel parameters (e.g. earlyprintk=serial), put
#                in the LUN copy's ESP as boot/grub/dls.cfg or on iPXE's
#                kernel line
#   DLS_LAB_CACHE  image cache (see build-image.sh)
#
# Everything runs in two namespaces named dlslab-$$-srv (bridge br0, the
# servers, the capture) and dlslab-$$-vm (bridge brvm, the VM's tap), joined
# by a veth pair. No real interface is touched. Every process the lab starts
# is stopped by its PID on exit, failure or Ctrl-C.
set -euo pipefail

MODE=${1:-}
case "$MODE" in
    peer-bios|peer-uefi|peer-kernel|dls-bios|dls-uefi|dls-kernel) ;;
    *) echo "usage: $0 peer-bios|peer-uefi|peer-kernel|dls-bios|dls-uefi|dls-kernel" >&2; exit 2 ;;
esac
STACK=${MODE%%-*}   # peer or dls
BOOT=${MODE#*-}     # bios, uefi or kernel

HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
REPO=$(cd "$HERE/../.." && pwd)
TIMEOUT=${LAB_TIMEOUT:-240}
NET=${LAB_NET:-$(( $$ % 200 + 20 ))}
SUBNET=10.77.$NET
SERVER_IP=$SUBNET.1
SERVER_IP6=fd77:0:0:$NET::1
NS_SRV=dlslab-$$-srv
NS_VM=dlslab-$$-vm
IQN=iqn.2026-12.dev.dls:lab.disk$$
VM_MAC=52:54:00:77:$(printf %02x "$NET"):10
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
cp --sparse=always "$W/image/disk.img" "$W/lun.img"
KARGS=${LAB_KERNEL_ARGS:-}
if [ -n "$KARGS" ]; then
    printf 'set dls_args="%s"\n' "$KARGS" > "$W/dls.cfg"
    mcopy -o -i "$W/lun.img@@$((ESP_START_SECTOR * 512))" "$W/dls.cfg" ::/boot/grub/dls.cfg
fi

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
ip -n "$NS_VM" tuntap add dev tap0 mode tap
ip -n "$NS_VM" link set tap0 master brvm up
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
tgt --op new --mode target --tid 1 -T "$IQN"
# tgt puts its controller at LUN 0; the disk is LUN 1.
tgt --op new --mode logicalunit --tid 1 --lun 1 -b "$W/lun.img"
tgt --op bind --mode target --tid 1 -I ALL
log "tgtd: $IQN LUN 1 on $SERVER_IP:3260 (control port $TGT_CTL)"
LUN_NR=1
fi

# --- DHCP + TFTP (dnsmasq) ---------------------------------------------------
mkdir -p "$W/tftp"
cp /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/ipxe.efi /usr/lib/ipxe/snponly.efi "$W/tftp/"
if [ "$BOOT" = kernel ]; then
    cp "$W/image/vmlinuz" "$W/image/initrd.img" "$W/tftp/"
    cat > "$W/tftp/boot.ipxe" <<EOF
#!ipxe
echo dls lab: kernel and initrd over TFTP, root on $IQN
kernel tftp://$SERVER_IP/vmlinuz initrd=initrd.img console=ttyS0,115200 panic=5 dls.target=$IQN dls.portal=$SERVER_IP:3260 $KARGS
initrd tftp://$SERVER_IP/initrd.img
boot
EOF
else
    # iscsi:<server>:<protocol>:<port>:<LUN>:<target>; LUN 1 on tgt (its
    # controller is LUN 0), the default LUN 0 on dlsd.
    cat > "$W/tftp/boot.ipxe" <<EOF
#!ipxe
echo dls lab: sanboot $IQN from $SERVER_IP
sanboot iscsi:$SERVER_IP:::$LUN_NR:$IQN
EOF
fi
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
# dnsmasq only for IPv6 router advertisements; everything else is dlsd's.
cat > "$W/dnsmasq.conf" <<EOF
port=0
user=root
interface=br0
bind-interfaces
log-facility=$W/dnsmasq.log
dhcp-range=::,constructor:br0,ra-only
enable-ra
EOF
DLSD=${DLSD:-$REPO/target/release/dlsd}
[ -x "$DLSD" ] || (cd "$REPO" && cargo build --release --bin dlsd) >&2
cat > "$W/dlsd.toml" <<EOF
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
[[iscsi.target]]
iqn = "$IQN"
luns = [{ path = "$W/lun.img" }]
[dhcp]
interface = "br0"
range = ["$SUBNET.100", "$SUBNET.199"]
subnet = "$SUBNET.0/24"
router = "$SERVER_IP"
lease_store = "$W/leases"
[dhcp.boot]
bios = "undionly.kpxe"
uefi_x64 = "ipxe.efi"
ipxe_script = "boot.ipxe"
EOF
ip netns exec "$NS_SRV" "$DLSD" --log-level debug serve --config "$W/dlsd.toml" >"$W/dlsd.log" 2>&1 &
started dlsd $!
for i in $(seq 1 50); do grep -q "running (pid" "$W/dlsd.log" && break; sleep 0.1; done
grep -q "running (pid" "$W/dlsd.log" || { cat "$W/dlsd.log" >&2; die "dlsd did not start"; }
log "dlsd: DHCP, TFTP and iSCSI ($IQN LUN 0) on $SERVER_IP"
fi
ip netns exec "$NS_SRV" dnsmasq --keep-in-foreground --conf-file="$W/dnsmasq.conf" \
    --pid-file="$W/dnsmasq.pid" >"$W/dnsmasq.out" 2>&1 &
started dnsmasq $!
sleep 0.3
kill -0 "${PIDS[-1]##*:}" 2>/dev/null || { cat "$W/dnsmasq.out" >&2; die "dnsmasq did not start"; }

# --- the VM ------------------------------------------------------------------
# iPXE names its initiator iqn.2010-04.org.ipxe:<SMBIOS UUID>: give each VM its own.
VM_UUID=6b1e0f6c-0d15-4a5b-8c1a-$(printf %012x $$)
# shellcheck disable=SC2054  # commas belong to qemu option values
QEMU=(qemu-system-x86_64 -accel tcg -m 512 -display none -no-reboot -monitor none -uuid "$VM_UUID"
    -pidfile "$W/qemu.pid" -chardev "file,id=ser0,path=$W/serial.log" -serial chardev:ser0
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no)
if [ "$BOOT" != uefi ]; then
    QEMU+=(-machine pc -device "virtio-net-pci,netdev=n0,mac=$VM_MAC" -boot n)
else
    cp /usr/share/OVMF/OVMF_VARS_4M.fd "$W/ovmf-vars.fd"
    # shellcheck disable=SC2054
    QEMU+=(-machine q35
        -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd
        -drive "if=pflash,format=raw,file=$W/ovmf-vars.fd"
        -device "virtio-net-pci,netdev=n0,mac=$VM_MAC,romfile=,bootindex=1")
fi
: > "$W/serial.log"
: > "$W/events"
T0=$(date +%s.%N)
ip netns exec "$NS_VM" "${QEMU[@]}" >"$W/qemu.log" 2>&1 &
QEMU_PID=$!
started qemu $QEMU_PID
log "VM powered on ($MODE), waiting up to ${TIMEOUT}s for the marker"

# Serial milestones, timestamped when first seen (0.2 s resolution).
MILESTONES=(
    "PXE over IPv4|firmware PXE start (OVMF)"
    "iPXE initialising|iPXE start (serial)"
    "dls lab: |iPXE runs boot.ipxe (serial)"
    "Welcome to GRUB|grub start (serial)"
    "grub: loading kernel|grub loads kernel"
    "grub: booting|grub boots Linux"
    "Linux version|Linux starts"
    "DLS: init start|initramfs /init"
    "DLS: dhcp ok|Linux DHCP bound"
    "DLS: iscsi logged in|Linux iSCSI login done"
    "DLS-BOOT-OK|marker"
)
declare -A SEEN=()
deadline=$(( $(date +%s) + TIMEOUT ))
outcome=timeout
while [ "$(date +%s)" -lt "$deadline" ]; do
    now=$(date +%s.%N)
    for m in "${MILESTONES[@]}"; do
        pat=${m%%|*}
        [ -n "${SEEN[$pat]:-}" ] && continue
        if grep -aq -- "$pat" "$W/serial.log"; then
            SEEN[$pat]=1
            printf '%s %s\n' "$now" "${m#*|}" >> "$W/events"
        fi
    done
    # Decided from the milestones just recorded, so the marker always has a time.
    if [ -n "${SEEN[DLS-BOOT-OK]:-}" ]; then outcome=ok; break; fi
    if grep -aq 'DLS-BOOT-FAIL' "$W/serial.log"; then outcome=vmfail; break; fi
    kill -0 "$QEMU_PID" 2>/dev/null || { outcome=exited; break; }
    sleep 0.2
done
T_END=$(date +%s.%N)
if [ "$outcome" = ok ] || [ "$outcome" = vmfail ]; then
    # The VM powers itself off right after the marker.
    for i in $(seq 1 100); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.1; done
fi
stop_pid qemu "$QEMU_PID"
sleep 0.5   # let dumpcap flush the last packets

marker=$(grep -a 'DLS-BOOT-OK' "$W/serial.log" | tr -d '\r' | head -n1 || true)
if [ "$outcome" != ok ]; then
    log "serial log tail:"
    tr -d '\r' < "$W/serial.log" | grep -av '^\s*$' | tail -n 25 >&2
    die "no marker ($outcome) after $(awk -v a="$T0" -v b="$T_END" 'BEGIN {printf "%.1f", b - a}')s"
fi
log "serial: $marker"

# --- check what the VM wrote -------------------------------------------------
dd if="$W/lun.img" of="$W/root.part" bs=512 skip="$ROOT_START_SECTOR" \
    count="$ROOT_SECTORS" status=none
debugfs -R 'cat /dls-proof.txt' "$W/root.part" > "$W/dls-proof.txt" 2>"$W/debugfs.log"
read_sha=$(sed -n 's/.*read=\([0-9a-f]*\).*/\1/p' <<<"$marker")
[ "$read_sha" = "$PAYLOAD_SHA256" ] \
    || die "VM read sha $read_sha, image has $PAYLOAD_SHA256"
grep -q "^read=/dls-payload.bin sha256=$PAYLOAD_SHA256\$" "$W/dls-proof.txt" \
    || { cat "$W/debugfs.log" "$W/dls-proof.txt" >&2; die "/dls-proof.txt not in the LUN image"; }
log "LUN image holds /dls-proof.txt:"
sed 's/^/    /' "$W/dls-proof.txt" >&2

# --- timeline ----------------------------------------------------------------
# Network events from the capture on br0, serial milestones from the poll
# loop; all as seconds since power-on.
TS=(tshark -n -r "$W/boot.pcap" -o tcp.desegment_tcp_streams:TRUE)
{
    cat "$W/events"
    "${TS[@]}" -Y 'dhcp' -T fields -E separator='|' -e frame.time_epoch \
        -e dhcp.option.dhcp -e dhcp.option.vendor_class_id -e dhcp.option.type 2>/dev/null \
        | awk -F'|' '
            { split("DISCOVER OFFER REQUEST DECLINE ACK NAK RELEASE INFORM", n, " ")
              who = ("," $4 "," ~ /,(77|175),/) ? "iPXE" : ($3 ~ /^PXEClient/ ? "firmware PXE" : ($3 ~ /udhcp/ ? "Linux udhcpc" : $3))
              if ($2 == 1 || $2 == 3) last = who
              if ($2 == 2 || $2 == 5) who = last
              print $1, "DHCP " n[$2] " (" who ")" }'
    "${TS[@]}" -Y 'tftp.opcode == 1' -T fields -E separator='|' -e frame.time_epoch \
        -e tftp.source_file 2>/dev/null | awk -F'|' '{print $1, "TFTP RRQ " $2}'
    "${TS[@]}" -Y 'iscsi.opcode == 0x03 && tcp.dstport == 3260' -T fields -E separator='|' -e frame.time_epoch \
        -e tcp.srcport 2>/dev/null | awk -F'|' '!seen[$2]++ {print $1, "iSCSI login request (initiator port " $2 ")"}'
    "${TS[@]}" -Y '(scsi_sbc.opcode == 0x28 || scsi_sbc.opcode == 0x88) && tcp.dstport == 3260' -T fields -E separator='|' \
        -e frame.time_epoch -e tcp.srcport 2>/dev/null \
        | awk -F'|' '!seen[$2]++ {print $1, "first SCSI READ (initiator port " $2 ")"}'
    "${TS[@]}" -Y '(scsi_sbc.opcode == 0x2a || scsi_sbc.opcode == 0x8a) && tcp.dstport == 3260' -T fields -E separator='|' \
        -e frame.time_epoch -e tcp.srcport 2>/dev/null \
        | awk -F'|' '!seen[$2]++ {print $1, "first SCSI WRITE (initiator port " $2 ")"}'
} | sort -n -k1,1 | awk -v t0="$T0" '
    BEGIN { printf "  %8s  %s\n", "t (s)", "event"; printf "  %8.3f  %s\n", 0, "power-on (qemu started)" }
    { ev = $0; sub(/^[^ ]+ /, "", ev); printf "  %8.3f  %s\n", $1 - t0, ev }' > "$W/timeline.txt"
TOTAL=$(awk -v a="$T0" -v b="$(awk '/ marker$/ {print $1}' "$W/events")" 'BEGIN {printf "%.1f", b - a}')
echo "timeline ($MODE, image $IMAGE_KEY):"
cat "$W/timeline.txt"
RESULT=pass
echo "PASS $MODE: marker after ${TOTAL}s (power-on to marker), proof read back from the LUN"
