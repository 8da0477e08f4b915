#!/usr/bin/env bash
# perf/run.sh: the one command. Builds dlsd and dls-bench, runs every
# protocol driver (perf/<proto>.sh) into perf/results/<UTC date-time>/,
# writes machine.txt, turns rows.jsonl into summary.md, summary.json and a
# PNG chart per scenario (`dls-bench report`), and copies the run to
# perf/results/latest/ (not a PERF_QUICK=1 run: that stays in its own
# <date>-quick directory).
#
# Environment (perf/README.md): PERF_ONLY="tftp dhcp" runs only those
# drivers; PERF_REPEAT (default 3), PERF_QUICK=1 (a smoke run), DLSD and
# DLS_BENCH are passed to the drivers as they are.
#
# Every listed driver must exist and succeed: a missing driver or a failed
# one makes this command exit 1 (after the others ran and the report of what
# was measured was written), and the list of what ran is printed at the end.

set -euo pipefail

PERF_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$PERF_DIR/.." && pwd)
DRIVERS=${PERF_ONLY:-"tftp iscsi dhcp storm"}
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
export PERF_REPEAT=${PERF_REPEAT:-3} PERF_QUICK=${PERF_QUICK:-0}
# A smoke run must not replace the published figures: it gets its own
# directory and leaves perf/results/latest alone.
if [ "$PERF_QUICK" = 1 ]; then STAMP="$STAMP-quick"; fi
OUT="$PERF_DIR/results/$STAMP"
export DLSD=${DLSD:-$REPO/target/release/dlsd}
export DLS_BENCH=${DLS_BENCH:-$REPO/target/release/dls-bench}

(cd "$REPO" && cargo build --release --bins)
# The charts' font.
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] && [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core >&2
fi
mkdir -p "$OUT"
: >"$OUT/rows.jsonl"

{
    echo "run: $STAMP"
    echo "git: $(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)$(
        git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "drivers: $DRIVERS"
    echo "PERF_REPEAT=$PERF_REPEAT PERF_QUICK=$PERF_QUICK"
    echo "uname: $(uname -a)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "memory: $(awk '/^MemTotal:/ { print $2 " kB" }' /proc/meminfo)"
    echo
    lscpu
} >"$OUT/machine.txt"

ran=() failed=() missing=()
for d in $DRIVERS; do
    script="$PERF_DIR/$d.sh"
    if [ ! -x "$script" ]; then
        echo "perf/run.sh: driver $d: $script is missing (PERF_ONLY chooses drivers)" >&2
        missing+=("$d")
        continue
    fi
    echo "=== $d ($(date -u +%H:%M:%S))"
    if "$script" "$OUT"; then ran+=("$d"); else failed+=("$d"); fi
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"

if [ -s "$OUT/rows.jsonl" ]; then
    # A report that fails (a malformed row) is a failure of the run, but
    # the summary of which drivers ran must still be printed.
    report_ok=1
    "$DLS_BENCH" report --input "$OUT/rows.jsonl" --out "$OUT" || report_ok=0
    [ "$report_ok" = 1 ] || failed+=(report)
    if [ "$PERF_QUICK" != 1 ] && [ "$report_ok" = 1 ]; then
        rm -rf "$PERF_DIR/results/latest"
        cp -r "$OUT" "$PERF_DIR/results/latest"
    fi
fi

echo
echo "results: $OUT$([ "$PERF_QUICK" = 1 ] || echo ' (copied to perf/results/latest)')"
echo "drivers ran and passed: ${ran[*]:-none}"
if [ ${#failed[@]} -ne 0 ]; then echo "drivers FAILED: ${failed[*]}"; fi
if [ ${#missing[@]} -ne 0 ]; then echo "drivers MISSING: ${missing[*]}"; fi
[ ${#failed[@]} -eq 0 ] && [ ${#missing[@]} -eq 0 ]
