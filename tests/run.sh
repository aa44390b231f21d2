#!/usr/bin/env bash
# keytally's test command (after tests/setup.sh): the whole test suite, then the benchmarks,
# which print figures next to ykman's rather than pass or fail on them. The last line sums
# every test binary's results: "tests: N passed, M failed, K skipped".
#
# Skips: a test that cannot find a real component (pcscd, vpcd, tmux, Xvfb, gnome-keyring,
# ykman...) fails under CI=true; elsewhere it appends "SKIP  test|part|check <name>: <why>" to
# the file $KEYTALLY_SKIP_LOG names (tests/support/skip.rs). The scripts' own "SKIP  ..." lines
# (the package test, the Windows lab) are copied there too. A skipped test passed in
# cargo's count: it is counted as skipped instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export KEYTALLY_YKMAN="${KEYTALLY_YKMAN:-$PWD/.venv/bin/ykman}"
export CARGO_TERM_COLOR=never
log=$(mktemp)
KEYTALLY_SKIP_LOG=$(mktemp)
export KEYTALLY_SKIP_LOG
trap 'rm -f "$log" "$KEYTALLY_SKIP_LOG"' EXIT

# Passes a script's output on (to the terminal and $log) and copies its "SKIP  what" lines
# into the skip log.
note_skips() {
  local line
  tee -a "$log" | while IFS= read -r line; do
    printf '%s\n' "$line"
    case $line in "SKIP  "*) printf 'SKIP  check %s\n' "${line#SKIP  }" >>"$KEYTALLY_SKIP_LOG" ;; esac
  done
}

echo "== unit, property and end-to-end tests (real pcscd lab, ykman referee)"
status=0
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?

if [ "$status" -eq 0 ]; then
  echo "== the layering rules of ARCHITECTURE.md, checked from the tree"
  bash tests/layering.sh 2>&1 | tee -a "$log" || status=$?
fi

if [ "$status" -eq 0 ]; then
  echo "== the sandbox server against protocol/openapi.yaml (schemathesis)"
  bash tests/schemathesis.sh || status=$?
fi

if [ "$status" -eq 0 ]; then
  echo "== the VM lab: a real Linux USB stack in QEMU with virtual YubiKeys as USB gadgets"
  bash tests/vm/run.sh 2>&1 | tee -a "$log" || status=$?
fi

if [ "$status" -eq 0 ]; then
  # keytally.exe cross-built, its MSI, and the Windows test binaries, run under Wine 10 on
  # the real pcscd with a vpcd reader (README.md, "Windows": what Wine can and cannot show).
  echo "== the Windows lab: keytally.exe, its MSI and the Windows test binaries under Wine 10"
  bash tests/windows/run.sh 2>&1 | note_skips || status=$?
fi

if [ "$status" -eq 0 ]; then
  echo "== benchmark: keytally scan vs ykman info on the same virtual key"
  bash tests/bench/scan.sh || status=$?
  echo "== the Debian package: contents, units, and install/upgrade/purge in a clean Debian root"
  bash installer/test-deb.sh --chroot 2>&1 | note_skips || status=$?
  echo "== benchmark: keytally run while idle"
  bash tests/bench/idle.sh 60 || status=$?
  echo "== benchmark: pushing records to the sandbox"
  bash tests/bench/sync.sh || status=$?
  echo "== benchmark: kiosk taps through pcscd to the sandbox"
  cargo bench --locked -q -p keytally --bench kiosk || status=$?
fi

# What was skipped and why, then one closing line for the whole run: "tests: N passed,
# M failed, K skipped" (cargo's test binaries, the VM lab's cases and the package checks; a
# test skipped whole is taken out of cargo's passed ones; "part": the rest of that test ran).
if [ -s "$KEYTALLY_SKIP_LOG" ]; then
  echo "== skipped here, and why (tests/setup.sh installs every component; under CI=true a missing one fails)"
  sort "$KEYTALLY_SKIP_LOG"
fi
awk 'FILENAME == ARGV[1] { k++; if ($2 == "test") whole++; next }
     /^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     /^[0-9]+ passed, [0-9]+ failed$/ { p += $1; f += $3 }
     /^ok    / { p++ }
     /^FAIL  / { f++ }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p - whole, f, k }' "$KEYTALLY_SKIP_LOG" "$log"
exit "$status"
