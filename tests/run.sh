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

# command -> Debian package that provides it
declare -A need=(
  [curl]=curl [atftp]=atftp [tftp]=tftp-hpa [ip]=iproute2 [tc]=iproute2
  [promtool]=prometheus
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "tests/run.sh: missing packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "tests/run.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release
