#!/usr/bin/env bash
# Benchmark: `keytally scan --json` against `ykman info` on the same virtual key, in the same
# run, through a real (isolated) pcscd. Prints median wall time, peak RSS and APDUs per read
# for both, and the ratios. Figures, not a pass/fail test: the machines are shared and noisy.
#
# Usage: tests/bench/scan.sh [MODEL...]   (default: every preset; KEYTALLY_YKMAN=path/to/ykman)
set -euo pipefail
cd "$(dirname "$0")/../.."
YKMAN=${KEYTALLY_YKMAN:-.venv/bin/ykman}
[ -x "$YKMAN" ] || { echo "bench: ykman not found at $YKMAN (run tests/setup.sh or set KEYTALLY_YKMAN)" >&2; exit 2; }
KT_RUNS=${KT_RUNS:-20}
YK_RUNS=${YK_RUNS:-5}
cargo build --release -q -p keytally -p keytally-virtual-key
KT=target/release/keytally
VKEY=target/release/keytally-vkey
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(yk5nfc yk5cnfc yk5nano bio skynfc yk4 neo)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export KEYTALLY_STATE_DIR="$tmp/state"

printf '%-8s | %-27s | %-27s | %s\n' model "keytally: median, RSS, APDUs" "ykman: median, RSS, APDUs" "speed-up, RSS ratio"
for m in "${models[@]}"; do
  count="$tmp/$m.count"
  # One lab per model: the key stays inserted while both tools read it in turn.
  "$VKEY" --model "$m" --count-file "$count" --lab -- bash -c '
    python3 tests/bench/scan_measure.py --count-file "$0" --runs "$1" --label keytally -- "$2" scan --json --reader "$KEYTALLY_VKEY_READER"
    python3 tests/bench/scan_measure.py --count-file "$0" --runs "$3" --label ykman -- "$4" --reader "$KEYTALLY_VKEY_READER" info
  ' "$count" "$KT_RUNS" "$KT" "$YK_RUNS" "$YKMAN" >"$tmp/$m.json"
  python3 - "$m" "$tmp/$m.json" <<'PY'
import json, sys
model, path = sys.argv[1], sys.argv[2]
rows = {r["label"]: r for r in map(json.loads, open(path))}
k, y = rows["keytally"], rows["ykman"]
fmt = lambda r: f'{r["median_s"]*1000:7.1f} ms {r["peak_rss_mib"]:5.1f} MiB {r["apdus"]:4.0f}'
print(f'{model:<8} | {fmt(k):<27} | {fmt(y):<27} | {y["median_s"]/k["median_s"]:5.1f}x faster, {y["peak_rss_mib"]/k["peak_rss_mib"]:4.1f}x less RSS')
PY
done
echo "targets: >= 30x faster than ykman, keytally peak RSS <= 10 MiB, APDUs <= ykman's (2 for a single-page 5.x key)"
