#!/usr/bin/env bash
# The one test command of dls (README.md, "Tests"); .ci/run calls it.
#
# It installs the real clients the tests drive when they are missing
# (apt-get, as root), checks formatting and lints, then runs every unit and
# integration test in release mode. Tests talk only to loopback and to
# network namespaces they create themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

# A fresh Debian machine: Debian 12's rustc is older than the crate's
# rust-version, so take rustup's stable toolchain (with rustfmt and clippy).
if ! command -v cargo >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
  echo "tests/run.sh: installing Rust (rustup, stable)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    ca-certificates curl build-essential pkg-config >/dev/null
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --profile default --default-toolchain stable
fi

# A toolchain installed by rustup's minimal profile lacks the lints.
if command -v rustup >/dev/null 2>&1 && ! { cargo fmt --version && cargo clippy --version; } >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

# Debian packages of the real clients and peers the tests drive.
packages=(
  curl atftp tftp-hpa iproute2 prometheus        # TFTP clients, promtool
  libiscsi-bin qemu-utils qemu-block-extra       # iSCSI initiators
  udhcpc isc-dhcp-client dnsmasq python3-scapy   # DHCP clients and peer
  nftables                                       # packet loss in test namespaces
  jq iputils-ping                                # perf/storm.sh (tests/perf_storm.rs)
  # The netboot lab (tests/netboot.rs, tests/lab/): VMs, firmware, the peer
  # stack, the capture, and the tools that build the VM's disk image.
  qemu-system-x86 ipxe ipxe-qemu ovmf tgt tshark
  e2fsprogs grub-common mtools dosfstools fdisk kmod cpio binutils
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "tests/run.sh: missing packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "tests/run.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # qemu-block-extra (qemu's iSCSI driver) needs qemu-utils of its own
  # version; some machine images carry a newer, backported qemu-utils.
  if [[ " ${missing[*]} " == *" qemu-block-extra "* || " ${missing[*]} " == *" qemu-system-x86 "* ]]; then
    qver=$(apt-cache policy qemu-block-extra | awk '/Candidate:/ {print $2}')
    missing+=("qemu-utils=$qver")
  fi
  apt-get install -y -qq --allow-downgrades --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release
