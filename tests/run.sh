#!/usr/bin/env bash
# keytally's test command (after tests/setup.sh): the whole test suite, then the benchmarks,
# which print figures next to ykman's rather than pass or fail on them.
set -euo pipefail
cd "$(dirname "$0")/.."
export KEYTALLY_YKMAN="${KEYTALLY_YKMAN:-$PWD/.venv/bin/ykman}"
export CARGO_TERM_COLOR=never

echo "== unit, property and end-to-end tests (real pcscd lab, ykman referee)"
cargo test --workspace --locked

echo "== benchmark: keytally scan vs ykman info on the same virtual key"
bash tests/bench/scan.sh
