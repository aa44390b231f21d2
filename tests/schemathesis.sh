#!/usr/bin/env bash
# Checks the sandbox management server against protocol/openapi.yaml with schemathesis
# (property-based: generated requests, every answer checked against the schema).
#
# Usage: tests/schemathesis.sh [extra schemathesis args...]
#   KEYTALLY_VENV   the Python venv holding schemathesis (default: .venv; `pip install schemathesis`)
#   ST_MAX_TIME     time budget in seconds (default 60)
#   CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${KEYTALLY_VENV:-.venv}
ST="$VENV/bin/schemathesis"
[ -x "$ST" ] || { echo "schemathesis: not found at $ST (run: $VENV/bin/pip install schemathesis)" >&2; exit 2; }
TARGET=${CARGO_TARGET_DIR:-target}
cargo build -q -p keytally-sandbox
SANDBOX="$TARGET/debug/keytally-sandbox"
PORT=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
tmp=$(mktemp -d)
export KEYTALLY_ST_ADMIN_TOKEN=sandbox-admin-token KEYTALLY_ST_MACHINE_TOKEN=st-machine-token-0
KEYTALLY_SANDBOX_ADMIN_TOKEN=$KEYTALLY_ST_ADMIN_TOKEN KEYTALLY_SANDBOX_MACHINE_TOKEN=$KEYTALLY_ST_MACHINE_TOKEN \
  "$SANDBOX" --listen "127.0.0.1:$PORT" --db "$tmp/sandbox.sqlite" 2>"$tmp/sandbox.log" &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
# Test data: the device of Appterix's own example, so reading, listing and the links from a
# listed device have something to find from the first request on.
"$VENV/bin/python" - "http://127.0.0.1:$PORT" <<'PY'
import json, os, sys, urllib.request
device = json.load(open("protocol/tests/fixtures/appterix-devices-example.json"))[0]
url = f"{sys.argv[1]}/api/external/ybk-management/devices/{device['yubikey']['uniqueId']}"
req = urllib.request.Request(url, data=json.dumps(device).encode(), method="PUT", headers={
    "Authorization": f"Bearer {os.environ['KEYTALLY_ST_ADMIN_TOKEN']}", "Content-Type": "application/json"})
assert urllib.request.urlopen(req, timeout=5).status == 201
PY
# The fault-injection routes are excluded: a generated `{"down": true}` would turn every
# later answer into a 503 and test the fault layer instead of the API.
# The two rules OpenAPI cannot express (the body's uniqueId equals the URL's; each rotation
# presents the token the last one returned) are supplied by tests/schemathesis_hooks.py.
# tests/schemathesis.toml makes every warning fail the run: an operation schemathesis could
# not reach (only 401/403, only 404, valid data mostly refused) is a failure, not a pass.
rc=0
SCHEMATHESIS_HOOKS=tests/schemathesis_hooks.py "$ST" --config-file tests/schemathesis.toml run protocol/openapi.yaml \
  --url "http://127.0.0.1:$PORT" \
  --exclude-path-regex '^/_sandbox' \
  --checks all \
  --exclude-checks ignored_auth,object_level_authorization \
  --max-time "${ST_MAX_TIME:-60}" \
  --workers 1 \
  --request-timeout 5 \
  "$@" || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "schemathesis: the sandbox does not conform to protocol/openapi.yaml (exit $rc); sandbox log:" >&2
  tail -20 "$tmp/sandbox.log" >&2
  exit "$rc"
fi
echo "schemathesis: the sandbox conforms to protocol/openapi.yaml"
