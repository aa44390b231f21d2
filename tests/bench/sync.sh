#!/usr/bin/env bash
# Benchmark for sync (issue 4 §7): prints figures, asserts nothing (shared machines are noisy).
#   1. records/s pushed to the sandbox on loopback over one kept-alive connection, and bytes
#      on the wire per record (the devices client through a byte-counting relay);
#   2. outbox write latency: `keytally sync --once --records` queueing N records while the
#      server is unreachable (one SQLite transaction with fsync per record);
#   3. the agent's peak RSS and records/s while it drains those N records to the sandbox.
#
# Usage: tests/bench/sync.sh [N]   (default 10000; CARGO_TARGET_DIR is honoured)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-10000}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p keytally -p keytally-sandbox
cargo build --release -q -p keytally-protocol --example push_bench
KT="$TARGET/release/keytally"
SANDBOX="$TARGET/release/keytally-sandbox"

echo "== 1. devices client -> sandbox, one kept-alive connection"
"$TARGET/release/examples/push_bench" "$N"

tmp=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$SANDBOX" --listen "127.0.0.1:$PORT" 2>"$tmp/sandbox.log" &
spid=$!
cleanup() { kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

python3 - "$N" "$tmp/records.json" <<'PY'
import json, sys
n, path = int(sys.argv[1]), sys.argv[2]
rec = lambda i: {"yubikey": {"uniqueId": str(40_000_000 + i), "serialNumber": 40_000_000 + i, "firmwareVersion": "5.7.2",
                             "deviceType": "YubiKey 5 NFC", "formFactor": "USB-A keychain",
                             "enabledApplications": {"usb": ["OTP", "U2F", "FIDO2", "OATH", "PIV", "OpenPGP"]}},
                 "observation": {"host": "bench-host", "transport": "pcsc", "observedAt": "2026-11-24T05:00:00Z"}}
json.dump([rec(i) for i in range(n)], open(path, "w"))
PY
echo '[]' >"$tmp/none.json"
printf 'sandbox-admin-token' >"$tmp/token"; chmod 600 "$tmp/token"
cat >"$tmp/config.toml" <<TOML
state_dir = "$tmp/state"
[sync]
drain_rate = 1000
max_pending = $((N * 2))
[profiles.default]
server = "http://127.0.0.1:$PORT/api/external/ybk-management"
token_file = "$tmp/token"
TOML
unset KEYTALLY_SERVER KEYTALLY_TOKEN KEYTALLY_TOKEN_FILE KEYTALLY_STATE_DIR
# Server unreachable for the queueing run: every request fails with a 503.
curl -sf -X POST "http://127.0.0.1:$PORT/_sandbox/faults" -d '{"down": true}' >/dev/null 2>&1 \
  || python3 -c "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:$PORT/_sandbox/faults', data=b'{\"down\": true}', method='POST'))"

python3 - "$N" "$KT" "$tmp" "$PORT" <<'PY'
import subprocess, sys, time, urllib.request
n, kt, tmp, port = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def run(records):
    t = time.monotonic()
    p = subprocess.Popen([kt, "--config", f"{tmp}/config.toml", "sync", "--once", "--records", records],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while p.poll() is None:
        try:
            for line in open(f"/proc/{p.pid}/status"):
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.02)
    return time.monotonic() - t, peak / 1024, p.returncode
el, rss, rc = run(f"{tmp}/records.json")
print(f"== 2. outbox: queued {n} records in {el:.2f} s (exit {rc}): {el / n * 1e3:.3f} ms per write "
      f"(WAL, synchronous=FULL, one transaction each), peak RSS {rss:.1f} MiB")
urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/_sandbox/faults", data=b"{}", method="POST"))
time.sleep(3)  # let the backoff after the failed push run out
el, rss, rc = run(f"{tmp}/none.json")
stats = urllib.request.urlopen(f"http://127.0.0.1:{port}/_sandbox/stats").read().decode()
print(f"== 3. agent drain: {n} records in {el:.2f} s = {n / el:.0f} records/s (drain_rate 1000/s, ack fsync per record), "
      f"exit {rc}, peak RSS {rss:.1f} MiB; sandbox: {stats}")
PY
