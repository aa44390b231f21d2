#!/usr/bin/env bash
# Benchmark: `keytally scan --json` against the floor and against `ykman info`, on the same
# virtual key, in the same run, through a real (isolated) pcscd. For each model it prints the
# median wall time, median CPU time, peak RSS and APDUs per read of:
#   keytally    `keytally scan --json` (every reader, and the USB listing, as a person runs it)
#   --reader    `keytally scan --json --reader R` (that reader only, as ykman is pointed at it)
#   floor       tests/bench/floor (`keytally-scan-floor R`): a process that only establishes a
#               PC/SC context, connects and sends the APDUs keytally sends (SELECT management,
#               READ CONFIG per page); what any PC/SC program started as a process must pay
#   ykman       `ykman --reader R info`
# and the ratios. Figures, not a pass/fail test: the machines are shared and noisy.
#
# Usage: tests/bench/scan.sh [MODEL...]   (default: every preset; KEYTALLY_YKMAN=path/to/ykman,
#        KT_RUNS (default 40) runs of keytally and the floor, YK_RUNS (default 5) of ykman,
#        KT_BUILD=0 to skip the release build)
set -euo pipefail
cd "$(dirname "$0")/../.."
YKMAN=${KEYTALLY_YKMAN:-.venv/bin/ykman}
[ -x "$YKMAN" ] || { echo "bench: ykman not found at $YKMAN (run tests/setup.sh or set KEYTALLY_YKMAN)" >&2; exit 2; }
KT_RUNS=${KT_RUNS:-40}
YK_RUNS=${YK_RUNS:-5}
# KT_BUILD=0: use the release binaries as they are (e.g. right after another build).
[ "${KT_BUILD:-1}" = 0 ] || cargo build --release -q -p keytally -p keytally-virtual-key -p keytally-scan-floor
KT=target/release/keytally
VKEY=target/release/keytally-vkey
FLOOR=target/release/keytally-scan-floor
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(yk5nfc yk5cnfc yk5nano bio skynfc yk4 neo)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export KEYTALLY_STATE_DIR="$tmp/state"

printf '%-8s | %-33s | %-33s | %-33s | %-33s | %s\n' model "keytally: wall, CPU, RSS, APDUs" "--reader: wall, CPU, RSS, APDUs" \
  "floor: wall, CPU, RSS, APDUs" "ykman: wall, CPU, RSS, APDUs" "keytally / floor (--reader / floor), ykman / keytally"
for m in "${models[@]}"; do
  count="$tmp/$m.count"
  # One lab per model: the key stays inserted while the tools take turns reading it.
  "$VKEY" --model "$m" --count-file "$count" --lab -- python3 tests/bench/scan_measure.py --count-file "$count" \
    --tool "keytally:$KT_RUNS" "$KT scan --json" \
    --tool "reader:$KT_RUNS" "$KT scan --json --reader '{reader}'" \
    --tool "floor:$KT_RUNS" "$FLOOR '{reader}'" \
    --tool "ykman:$YK_RUNS" "$YKMAN --reader '{reader}' info" >"$tmp/$m.json"
  python3 - "$m" "$tmp/$m.json" <<'PY'
import json, sys
model, path = sys.argv[1], sys.argv[2]
rows = {r["label"]: r for r in map(json.loads, open(path))}
k, r, f, y = rows["keytally"], rows["reader"], rows["floor"], rows["ykman"]
fmt = lambda r: f'{r["median_s"]*1000:7.2f} ms {r["cpu_s"]*1000:5.2f} ms {r["peak_rss_mib"]:5.1f} MiB {r["apdus"]:3.0f}'
print(f'{model:<8} | {fmt(k):<33} | {fmt(r):<33} | {fmt(f):<33} | {fmt(y):<33} | '
      f'{k["median_s"]/f["median_s"]:4.2f}x ({r["median_s"]/f["median_s"]:4.2f}x), {y["median_s"]/k["median_s"]:5.0f}x')
PY
done
echo "targets: keytally within 1.5x of the floor's wall time, >= 100x faster than ykman, peak RSS <= 10 MiB,"
echo "         APDUs <= ykman's (2 for a single-page 5.x key; the floor sends keytally's 5.x APDUs, so it reads older keys differently)"
