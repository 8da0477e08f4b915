#!/usr/bin/env bash
# Build the disk image a diskless lab VM boots, from Debian packages only and
# without mounting anything.
#
#   tests/lab/build-image.sh OUTDIR
#
# OUTDIR receives:
#   disk.img      GPT raw disk: p1 BIOS boot (grub core.img), p2 EFI system
#                 partition (FAT32: EFI/BOOT/BOOTX64.EFI, boot/vmlinuz,
#                 boot/initrd.img, boot/grub/grub.cfg), p3 root (ext4, label
#                 dlsroot). Boots under SeaBIOS and OVMF through iPXE sanboot.
#   vmlinuz, initrd.img
#                 the same kernel and initramfs, for "kernel and initrd over
#                 TFTP" (pass dls.target=IQN dls.portal=IP:PORT [dls.initiator=IQN]).
#   manifest.env  shell-sourceable facts the lab checks against (partition
#                 offsets, the sha256 the VM must report as read=).
#
# The result is content-addressed: the key is the hash of this script and of
# the exact versions of every package used. It lives in
# ${DLS_LAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dls-lab}/image-KEY and a
# second run only copies it out. Build tools missing on the host are installed
# with apt-get (root only).
set -euo pipefail

OUTDIR=${1:?usage: build-image.sh OUTDIR}
SELF=$(readlink -f "${BASH_SOURCE[0]}")
CACHE=${DLS_LAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dls-lab}

log() { printf 'build-image: %s\n' "$*" >&2; }
die() { printf 'build-image: error: %s\n' "$*" >&2; exit 1; }

# Host tools, and the Debian package that provides each.
declare -A TOOL_PKG=(
    [grub-mkimage]=grub-common [mformat]=mtools [mcopy]=mtools
    [mkfs.fat]=dosfstools [mke2fs]=e2fsprogs [debugfs]=e2fsprogs
    [sfdisk]=fdisk [depmod]=kmod [modprobe]=kmod [cpio]=cpio
    [readelf]=binutils [gzip]=gzip [dpkg-deb]=dpkg
)

ensure_tools() {
    local missing=() t
    for t in "${!TOOL_PKG[@]}"; do
        command -v "$t" >/dev/null 2>&1 || PATH=$PATH:/sbin:/usr/sbin command -v "$t" \
            >/dev/null 2>&1 || missing+=("${TOOL_PKG[$t]}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing tools (packages: ${missing[*]}); run as root or install them"
    log "installing ${missing[*]}"
    apt-get update -qq >&2
    local pkgs
    mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" >&2
}

# Packages whose files go into the image. The kernel is whatever
# linux-image-amd64 depends on today; iscsistart's libraries are listed
# explicitly so that their versions are part of the cache key.
kernel_package() {
    apt-cache depends linux-image-amd64 2>/dev/null \
        | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}
image_packages() {
    local kpkg
    kpkg=$(kernel_package)
    if [ -z "$kpkg" ] && [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq >&2
        kpkg=$(kernel_package)
    fi
    [ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 (run apt-get update)"
    echo "$kpkg" busybox-static open-iscsi libopeniscsiusr libssl3 libkmod2 \
        libzstd1 liblzma5 libc6 grub-pc-bin grub-efi-amd64-bin
}

# One apt-cache call for all packages: each call costs seconds on a busy host.
declare -A CANDIDATE=()
load_candidates() {
    local pkg ver
    while read -r pkg ver; do CANDIDATE[$pkg]=$ver; done < <(apt-cache policy "$@" \
        | awk '/^[^ ].*:$/ {sub(/:$/, ""); p = $0} /Candidate:/ {print p, $2}')
}
candidate_version() { echo "${CANDIDATE[$1]:-}"; }

export PATH=$PATH:/sbin:/usr/sbin
ensure_tools

PKGS=$(image_packages)
load_candidates $PKGS
VERSIONS=""
for p in $PKGS; do
    v=$(candidate_version "$p")
    [ -n "$v" ] && [ "$v" != "(none)" ] || die "no candidate version for $p (apt-get update?)"
    VERSIONS+="$p=$v"$'\n'
done
KEY=$( { printf '%s' "$VERSIONS"; sha256sum < "$SELF"; } | sha256sum | cut -c1-16)
DEST=$CACHE/image-$KEY

publish() {
    mkdir -p "$OUTDIR"
    local f
    for f in disk.img vmlinuz initrd.img manifest.env; do
        cp --sparse=always --reflink=auto "$DEST/$f" "$OUTDIR/$f"
    done
    log "image $KEY -> $OUTDIR"
}

if [ -f "$DEST/manifest.env" ]; then
    log "cache hit: $DEST"
    publish
    exit 0
fi

log "building image $KEY"
# Fixed timestamps: the initramfs comes out byte-for-byte the same from the
# same inputs; disk.img still differs in a few creation times that mtools
# 4.0.32 and mke2fs -d take from the clock.
export SOURCE_DATE_EPOCH=1700000000 E2FSPROGS_FAKE_TIME=1700000000
mkdir -p "$CACHE/debs"
WORK=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- fetch and unpack ------------------------------------------------------
(
    cd "$CACHE/debs"
    need=()
    for p in $PKGS; do
        v=$(candidate_version "$p")
        ls "${p}_${v//:/%3a}_"*.deb >/dev/null 2>&1 || need+=("$p=$v")
    done
    [ ${#need[@]} -eq 0 ] || apt-get -o APT::Sandbox::User=root download "${need[@]}" >&2
)
SYS=$WORK/sys
mkdir -p "$SYS"
for p in $PKGS; do
    v=$(candidate_version "$p")
    deb=$(ls "$CACHE/debs/${p}_${v//:/%3a}_"*.deb | head -n1)
    dpkg-deb -x "$deb" "$SYS"
done
# usrmerge-style lookups: packages put libraries in /lib and /usr/lib.
KVER=$(ls "$SYS/lib/modules" | head -n1)
[ -f "$SYS/boot/vmlinuz-$KVER" ] || die "kernel not found in $SYS/boot"
depmod -b "$SYS" "$KVER"

# --- initramfs -------------------------------------------------------------
INITRD=$WORK/initramfs
mkdir -p "$INITRD"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,mnt,etc/iscsi,var/lock}
mkdir -p "$INITRD/lib/modules/$KVER" "$INITRD/usr/share/udhcpc"
cp "$SYS/bin/busybox" "$INITRD/bin/busybox"
ln -s busybox "$INITRD/bin/sh"

# Modules: the closure of what the VM needs to reach its root over iSCSI.
MODULES="virtio_pci virtio_net iscsi_tcp sd_mod ext4 crc32c_generic iscsi_ibft"
for m in $MODULES; do
    modprobe -d "$SYS" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | sort -u | while read -r ko; do
    rel=${ko#"$SYS"/}
    mkdir -p "$INITRD/$(dirname "$rel")"
    cp "$ko" "$INITRD/$rel"
done
cp "$SYS/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$INITRD/lib/modules/$KVER/"
depmod -b "$INITRD" "$KVER"
echo "$MODULES" > "$INITRD/etc/dls-modules"

# iscsistart and the libraries it needs, resolved inside the unpacked tree.
copy_with_libs() {
    local bin=$1 lib path
    local -a queue=("$bin") seen=()
    while [ ${#queue[@]} -gt 0 ]; do
        path=${queue[0]}; queue=("${queue[@]:1}")
        for lib in $(readelf -d "$path" | awk -F'[][]' '/NEEDED/ {print $2}'); do
            [[ " ${seen[*]-} " == *" $lib "* ]] && continue
            seen+=("$lib")
            local found
            found=$(find "$SYS/lib" "$SYS/usr/lib" -name "$lib" \( -type f -o -type l \) \
                2>/dev/null | head -n1)
            [ -n "$found" ] || die "library $lib (needed by $path) not in the unpacked packages"
            mkdir -p "$INITRD/lib/x86_64-linux-gnu"
            cp -L "$found" "$INITRD/lib/x86_64-linux-gnu/$lib"
            queue+=("$found")
        done
    done
}
cp "$SYS/sbin/iscsistart" "$INITRD/sbin/iscsistart"
copy_with_libs "$SYS/sbin/iscsistart"
mkdir -p "$INITRD/lib64"
cp -L "$SYS/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" "$INITRD/lib64/ld-linux-x86-64.so.2"

cat > "$INITRD/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
# udhcpc hook: configure the address and default route, remember the lease.
case "$1" in
bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    { echo "ip=$ip"; echo "mask=$mask"; echo "router=$router"; echo "serverid=$serverid"
      echo "rootpath=$rootpath"; } > /run/dhcp.env
    ;;
deconfig)
    ip addr flush dev "$interface"; ip link set "$interface" up ;;
esac
exit 0
EOF
chmod +x "$INITRD/usr/share/udhcpc/default.script"

cat > "$INITRD/init" <<'EOF'
#!/bin/sh
# dls lab initramfs: DHCP, iSCSI login (iBFT or kernel command line), mount
# the root partition read-write, leave proof, print the marker, power off.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "DLS: $*"; }
fail() { echo "DLS-BOOT-FAIL $*"; sleep 1; poweroff -f; }

arg() {  # arg NAME -> value of NAME= on the kernel command line
    for w in $(cat /proc/cmdline); do
        case "$w" in "$1"=*) echo "${w#*=}"; return;; esac
    done
}

say "init start uptime=$(cut -d' ' -f1 /proc/uptime)"
for m in $(cat /etc/dls-modules); do modprobe "$m" || say "modprobe $m failed"; done

# The first ethernet interface is the one the firmware booted from.
nic=""
for i in 1 2 3 4 5 6 7 8 9 10; do
    for d in /sys/class/net/*; do
        n=${d##*/}; [ "$n" = lo ] && continue; nic=$n; break
    done
    [ -n "$nic" ] && break; sleep 0.5
done
[ -n "$nic" ] || fail "no network interface"
ip link set lo up; ip link set "$nic" up
say "dhcp on $nic"
udhcpc -i "$nic" -f -q -n -t 5 -T 2 -O rootpath -s /usr/share/udhcpc/default.script || fail "dhcp on $nic"
. /run/dhcp.env
say "dhcp ok ip=$ip server=$serverid uptime=$(cut -d' ' -f1 /proc/uptime)"

target=$(arg dls.target); portal=$(arg dls.portal)
if [ -n "$target" ]; then
    initiator=$(arg dls.initiator)
    [ -n "$initiator" ] || initiator="iqn.2026-12.dls.lab:$(cat /sys/class/net/$nic/address | tr -d :)"
    host=${portal%:*}; port=${portal##*:}; [ "$port" = "$portal" ] && port=3260
    say "iscsi login $target at $host:$port as $initiator (command line)"
    iscsistart -i "$initiator" -t "$target" -g 1 -a "$host" -p "$port" \
        || fail "iscsistart $target"
else
    [ -d /sys/firmware/ibft ] || fail "no iBFT and no dls.target= on the command line"
    say "iscsi login from iBFT: $(cat /sys/firmware/ibft/target0/target-name 2>/dev/null)"
    iscsistart -b || fail "iscsistart -b"
fi
say "iscsi logged in uptime=$(cut -d' ' -f1 /proc/uptime)"

# Wait for the root partition (label dlsroot) on the iSCSI disk.
root=""
for i in $(seq 1 60); do
    root=$(findfs LABEL=dlsroot 2>/dev/null) && [ -b "$root" ] && break
    root=""; sleep 0.25
done
[ -n "$root" ] || fail "root partition LABEL=dlsroot did not appear ($(ls /dev | grep sd | tr '\n' ' '))"
mount -t ext4 -o rw "$root" /mnt || fail "mount $root"

read_sha=$(sha256sum /mnt/dls-payload.bin | cut -d' ' -f1)
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
{
    echo "dls-lab proof"
    echo "written=$now"
    echo "uptime=$(cut -d' ' -f1 /proc/uptime)"
    echo "kernel=$(uname -r)"
    echo "root=$root"
    echo "ip=$ip"
    echo "target=${target:-ibft}"
    echo "read=/dls-payload.bin sha256=$read_sha"
} > /mnt/dls-proof.txt
sync
# Unmount so the journal is checkpointed: the lab reads the file back with
# debugfs, which does not replay a journal.
umount /mnt || fail "umount $root"
sync
echo "DLS-BOOT-OK read=$read_sha wrote=/dls-proof.txt uptime=$(cut -d' ' -f1 /proc/uptime)"
sleep 0.2
poweroff -f
EOF
chmod +x "$INITRD/init"

find "$INITRD" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$INITRD" && find . -print0 | LC_ALL=C sort -z \
    | cpio --null --create --format=newc --reproducible --owner=0:0 --quiet) \
    | gzip -n -6 > "$WORK/initrd.img"
cp "$SYS/boot/vmlinuz-$KVER" "$WORK/vmlinuz"

# --- grub ------------------------------------------------------------------
# The same grub.cfg serves both platforms. dls_args may be set by an optional
# /boot/grub/dls.cfg (the lab can mcopy one in to pass dls.target=...).
cat > "$WORK/grub.cfg" <<'EOF'
set timeout=0
set default=0
if [ "$grub_platform" = "pc" ]; then
    serial --unit=0 --speed=115200
    terminal_output --append serial
fi
set dls_args=""
if [ -f /boot/grub/dls.cfg ]; then source /boot/grub/dls.cfg; fi
menuentry "dls lab linux" {
    echo "grub: loading kernel ($grub_platform)"
    linux /boot/vmlinuz console=ttyS0,115200 panic=5 $dls_args
    echo "grub: loading initramfs"
    initrd /boot/initrd.img
    echo "grub: booting"
}
EOF
# The first-stage config finds the ESP by a marker file whatever the disk is
# called (hd0 under int13 with BIOS, an EFI block device under UEFI).
cat > "$WORK/early.cfg" <<'EOF'
search --no-floppy --set=root --file /boot/grub/dls-lab.id
set prefix=($root)/boot/grub
EOF
GRUB_MODS="part_gpt part_msdos fat ext2 normal linux search search_fs_file configfile
    echo test serial terminal sleep boot halt reboot"
GRUB_DIR=$SYS/usr/lib/grub
grub-mkimage -O i386-pc -d "$GRUB_DIR/i386-pc" -o "$WORK/core.img" -c "$WORK/early.cfg" \
    -p /boot/grub biosdisk $GRUB_MODS
grub-mkimage -O x86_64-efi -d "$GRUB_DIR/x86_64-efi" -o "$WORK/BOOTX64.EFI" \
    -c "$WORK/early.cfg" -p /boot/grub $GRUB_MODS efi_gop efi_uga

# --- partitions --------------------------------------------------------------
# Sectors of 512 bytes. p1 BIOS boot 1 MiB at 1 MiB; p2 ESP 64 MiB; p3 root.
BIOS_START=2048; BIOS_SIZE=2048
ESP_START=4096;  ESP_SIZE=$((64 * 2048))
ROOT_START=$((ESP_START + ESP_SIZE)); ROOT_SIZE=$((32 * 2048))
TOTAL=$((ROOT_START + ROOT_SIZE + 2048))

core_sectors=$(( ($(stat -c %s "$WORK/core.img") + 511) / 512 ))
[ "$core_sectors" -le "$BIOS_SIZE" ] || die "core.img ($core_sectors sectors) exceeds the BIOS boot partition"

# ESP (FAT32), filled with mtools.
ESP=$WORK/esp.img
truncate -s $((ESP_SIZE * 512)) "$ESP"
mkfs.fat -F 32 -n DLSESP -i 0d15e5b0 "$ESP" >/dev/null
mmd -i "$ESP" ::/EFI ::/EFI/BOOT ::/boot ::/boot/grub
mcopy -i "$ESP" "$WORK/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$ESP" "$WORK/vmlinuz" ::/boot/vmlinuz
mcopy -i "$ESP" "$WORK/initrd.img" ::/boot/initrd.img
mcopy -i "$ESP" "$WORK/grub.cfg" ::/boot/grub/grub.cfg
echo "dls-lab $KEY" > "$WORK/dls-lab.id"
mcopy -i "$ESP" "$WORK/dls-lab.id" ::/boot/grub/dls-lab.id

# Root (ext4), populated with mke2fs -d.
ROOTDIR=$WORK/rootfs
mkdir -p "$ROOTDIR/etc"
# A payload the VM must read back through its own iSCSI session: 1 MiB of
# the kernel image, so its hash is fixed by the package version.
head -c 1048576 "$WORK/vmlinuz" > "$ROOTDIR/dls-payload.bin"
printf 'dls lab root filesystem, image %s\n' "$KEY" > "$ROOTDIR/etc/dls-lab-release"
PAYLOAD_SHA=$(sha256sum "$ROOTDIR/dls-payload.bin" | cut -d' ' -f1)
find "$ROOTDIR" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
ROOTFS=$WORK/root.img
truncate -s $((ROOT_SIZE * 512)) "$ROOTFS"
mke2fs -q -t ext4 -L dlsroot -U 6b1e0f6c-0d15-4a5b-8c1a-000000000003 \
    -E root_owner=0:0,hash_seed=6b1e0f6c-0d15-4a5b-8c1a-000000000004 \
    -d "$ROOTDIR" "$ROOTFS"

# Assemble the disk.
DISK=$WORK/disk.img
truncate -s $((TOTAL * 512)) "$DISK"
sfdisk --quiet "$DISK" <<EOF
label: gpt
label-id: 6B1E0F6C-0D15-4A5B-8C1A-000000000000
start=$BIOS_START, size=$BIOS_SIZE, type=21686148-6449-6E6F-744E-656564454649, name="bios-boot", uuid=6B1E0F6C-0D15-4A5B-8C1A-000000000001
start=$ESP_START, size=$ESP_SIZE, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="esp", uuid=6B1E0F6C-0D15-4A5B-8C1A-000000000002
start=$ROOT_START, size=$ROOT_SIZE, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="dlsroot", uuid=6B1E0F6C-0D15-4A5B-8C1A-000000000003
EOF
dd if="$ESP" of="$DISK" bs=512 seek=$ESP_START conv=notrunc,sparse status=none
dd if="$ROOTFS" of="$DISK" bs=512 seek=$ROOT_START conv=notrunc,sparse status=none

# BIOS: boot.img's code (not its partition table) into the MBR, pointed at
# core.img in p1; core.img's first sector (diskboot) lists the rest of it.
#   boot.img 0x5c: LBA of core.img's first sector (GRUB_BOOT_MACHINE_KERNEL_SECTOR)
#   core.img 500:  blocklist {u64 start; u16 len; u16 segment}; len is set by
#                  grub-mkimage, start defaults to 2 (core.img right after the MBR)
le64() { local v=$1 i; for i in 0 1 2 3 4 5 6 7; do printf "\\x$(printf %02x $(( (v >> (8*i)) & 255 )))"; done; }
dd if="$GRUB_DIR/i386-pc/boot.img" of="$DISK" bs=440 count=1 conv=notrunc status=none
le64 $BIOS_START | dd of="$DISK" bs=1 seek=$((0x5c)) conv=notrunc status=none
cp "$WORK/core.img" "$WORK/core.patched"
le64 $((BIOS_START + 1)) | dd of="$WORK/core.patched" bs=1 seek=500 conv=notrunc status=none
dd if="$WORK/core.patched" of="$DISK" bs=512 seek=$BIOS_START conv=notrunc status=none

# --- publish ---------------------------------------------------------------
STAGE=$CACHE/stage-$KEY.$$
rm -rf "$STAGE"; mkdir -p "$STAGE"
mv "$DISK" "$STAGE/disk.img"
cp "$WORK/vmlinuz" "$WORK/initrd.img" "$STAGE/"
cat > "$STAGE/manifest.env" <<EOF
# dls lab image $KEY
IMAGE_KEY=$KEY
KERNEL_VERSION=$KVER
ESP_START_SECTOR=$ESP_START
ESP_SECTORS=$ESP_SIZE
ROOT_START_SECTOR=$ROOT_START
ROOT_SECTORS=$ROOT_SIZE
ROOT_LABEL=dlsroot
PAYLOAD_SHA256=$PAYLOAD_SHA
EOF
printf '%s' "$VERSIONS" | sed 's/^/# /' >> "$STAGE/manifest.env"
rm -rf "$DEST"
mv "$STAGE" "$DEST"
publish
