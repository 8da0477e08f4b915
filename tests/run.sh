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

# Debian packages of the real clients and peers the tests drive.
packages=(
  curl atftp tftp-hpa iproute2 prometheus        # TFTP clients, promtool
  libiscsi-bin qemu-utils qemu-block-extra       # iSCSI initiators
  udhcpc isc-dhcp-client dnsmasq python3-scapy   # DHCP clients and peer
  nftables                                       # packet loss in test namespaces
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
  if [[ " ${missing[*]} " == *" qemu-block-extra "* ]]; then
    qver=$(apt-cache policy qemu-block-extra | awk '/Candidate:/ {print $2}')
    missing+=("qemu-utils=$qver")
  fi
  apt-get install -y -qq --allow-downgrades --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release
