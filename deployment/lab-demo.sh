#!/usr/bin/env bash
# The main job of dls, in one command: build dlsd, start it in a private lab
# namespace, network-boot a diskless qemu VM through it (DHCP, iPXE over
# TFTP, the disk over iSCSI) into a real Linux that writes to that disk,
# and print the boot timeline and the VM's console marker.
#
#   sudo deployment/lab-demo.sh              # dls-bios: BIOS VM, sanboot from dlsd
#   sudo deployment/lab-demo.sh MODE...      # any tests/lab/lab.sh modes, in turn
#   sudo deployment/lab-demo.sh all          # the five dls scenarios
#   sudo deployment/lab-demo.sh compare      # bios, uefi and kernel through dlsd
#                                            # and through dnsmasq + tgt, with ratios
#
# Runs as root on Debian 12 (network namespaces, taps). Installs what it
# needs with apt-get (the lab's packages; a C toolchain and rustup's stable
# Rust when cargo is missing). Nothing touches a real interface; see
# tests/lab/README.md for what each mode does and checks.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '\n=== %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { echo "lab-demo: run as root (sudo $0 $*)" >&2; exit 1; }

if ! command -v cargo >/dev/null 2>&1; then
    # Debian 12's own rustc is older than the crate's rust-version.
    say "installing Rust (rustup, stable) and a C toolchain"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        ca-certificates curl build-essential pkg-config >/dev/null
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
        | sh -s -- -y --profile default --default-toolchain stable
fi

say "building dlsd (cargo build --release)"
cargo build --release --bin dlsd

modes=("$@")
[ ${#modes[@]} -gt 0 ] || modes=(dls-bios)
case "${modes[0]}" in
    all) modes=(dls-bios dls-uefi dls-kernel dls-two-vm dls-proxy) ;;
    compare) modes=(dls-bios peer-bios dls-uefi peer-uefi dls-kernel peer-kernel) ;;
esac

declare -A TOTAL=()
for mode in "${modes[@]}"; do
    say "booting: tests/lab/lab.sh $mode"
    out=$(mktemp)
    # lab.sh installs the lab's packages, builds the disk image once
    # (cached), prints the timeline, TIMES and PASS lines.
    if ! tests/lab/lab.sh "$mode" | tee "$out"; then
        rm -f "$out"
        echo "lab-demo: $mode failed (its work directory is kept, see above)" >&2
        exit 1
    fi
    TOTAL[$mode]=$(sed -n 's/^PASS [^ ]*: marker after \([0-9.]*\)s.*/\1/p' "$out")
    rm -f "$out"
done

say "power-on to marker"
for mode in "${modes[@]}"; do
    line=$(printf '%-12s %6ss' "$mode" "${TOTAL[$mode]}")
    peer=peer-${mode#dls-}
    if [[ $mode == dls-* && -n ${TOTAL[$peer]:-} ]]; then
        line+=$(awk -v d="${TOTAL[$mode]}" -v p="${TOTAL[$peer]}" \
            'BEGIN {printf "   %s %6.1fs   dls/peer %.2f", "peer", p, d / p}')
    fi
    echo "$line"
done
