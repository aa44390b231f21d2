#!/usr/bin/env bash
# keytally's test command (after tests/setup.sh): the whole test suite, then the benchmarks,
# which print figures next to ykman's rather than pass or fail on them. The last line sums
# every test binary's results.
set -euo pipefail
cd "$(dirname "$0")/.."
export KEYTALLY_YKMAN="${KEYTALLY_YKMAN:-$PWD/.venv/bin/ykman}"
export CARGO_TERM_COLOR=never
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== unit, property and end-to-end tests (real pcscd lab, ykman referee)"
status=0
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?

if [ "$status" -eq 0 ]; then
  # The Windows service and keyring code only compile for Windows: check they do.
  echo "== type-check for Windows (cargo check --target x86_64-pc-windows-gnu)"
  if rustup target list --installed 2>/dev/null | grep -q x86_64-pc-windows-gnu; then
    if cargo check --locked -q -p keytally --target x86_64-pc-windows-gnu; then
      echo "ok    windows type-check" | tee -a "$log"
    else
      echo "FAIL  windows type-check" | tee -a "$log"
      status=1
    fi
  else
    echo "skip  windows type-check: the x86_64-pc-windows-gnu target is not installed"
  fi
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
  echo "== benchmark: keytally scan vs ykman info on the same virtual key"
  bash tests/bench/scan.sh || status=$?
  echo "== the Debian package: contents, units, and install/upgrade/purge in a clean Debian root"
  bash installer/test-deb.sh --chroot 2>&1 | tee -a "$log" || status=$?
  echo "== benchmark: keytally run while idle"
  bash tests/bench/idle.sh 60 || status=$?
  echo "== benchmark: pushing records to the sandbox"
  bash tests/bench/sync.sh || status=$?
  echo "== benchmark: kiosk taps through pcscd to the sandbox"
  cargo bench --locked -q -p keytally --bench kiosk || status=$?
fi

# One closing line for the whole run: "tests: N passed, M failed" (cargo's test binaries,
# the VM lab's cases and the package checks).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     /^[0-9]+ passed, [0-9]+ failed$/ { p += $1; f += $3 }
     /^ok    / { p++ }
     /^FAIL  / { f++ }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
