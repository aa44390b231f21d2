#!/usr/bin/env bash
# Benchmark: what `keytally run` costs while nothing happens. Starts the sandbox server and
# the service against an isolated pcscd (empty reader), lets it settle, then measures the CPU
# time it uses over an idle window (default 60 s) and its RSS. Prints figures; not a test.
#
# Usage: tests/bench/idle.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
window=${1:-60}
cargo build --release -q --locked -p keytally -p keytally-sandbox -p keytally-virtual-key
BIN=$PWD/target/release
tmp=$(mktemp -d)
cleanup() { [ -n "${SB:-}" ] && kill "$SB" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN/keytally-sandbox" --listen "127.0.0.1:$port" 2>"$tmp/sandbox.log" &
SB=$!
export KEYTALLY_SERVER="http://127.0.0.1:$port/api/external/ybk-management"
export KEYTALLY_TOKEN_URL="http://127.0.0.1:$port/oauth/token"
export KEYTALLY_CLIENT_ID=keytally KEYTALLY_CLIENT_SECRET=sandbox-client-secret
export KEYTALLY_STATE_DIR="$tmp/state"
# A virtual key stays inserted in the lab's reader: the service reads and pushes it first,
# then has nothing to do.
"$BIN/keytally-vkey" --model yk5nfc --lab -- bash -c '
  "$0/keytally" run 2>"$1/run.log" &
  pid=$!
  sleep 3
  ticks=$(getconf CLK_TCK)
  cpu() { awk "{ print \$14 + \$15 }" /proc/$pid/stat; }
  c0=$(cpu); t0=$(date +%s.%N)
  sleep "$2"
  c1=$(cpu); t1=$(date +%s.%N)
  rss=$(awk "/^VmRSS/ { print \$2 }" /proc/$pid/status)
  hwm=$(awk "/^VmHWM/ { print \$2 }" /proc/$pid/status)
  kill -TERM $pid; wait $pid || true
  python3 - "$c0" "$c1" "$ticks" "$t0" "$t1" "$rss" "$hwm" <<PY
import sys
c0, c1, ticks, t0, t1, rss, hwm = map(float, sys.argv[1:])
cpu_ms = (c1 - c0) / ticks * 1000
print(f"keytally run, idle for {t1 - t0:.1f} s: CPU {cpu_ms:.0f} ms ({cpu_ms / (t1 - t0) / 10:.3f} % of one core), RSS {rss / 1024:.1f} MiB (peak {hwm / 1024:.1f} MiB)")
print("targets: no wake-ups apart from the heartbeat timer (CPU ~0 ms), RSS <= 15 MB")
PY
' "$BIN" "$tmp" "$window"
