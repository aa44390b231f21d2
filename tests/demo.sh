#!/usr/bin/env bash
# keytally's main job against its embedded default: start the sandbox management server on
# loopback, read the attached YubiKeys (or a virtual YubiKey 5 NFC on an isolated pcscd when
# none is attached), push the records with OAuth2 client credentials, and show what arrived.
# Installs only what this needs first (tests/setup.sh --demo); one line per phase, with the
# seconds since the start.
set -euo pipefail
cd "$(dirname "$0")/.."
phase() { printf '[%4d s] %s\n' "$SECONDS" "$*"; }

phase "installing packages (tests/setup.sh --demo: build tools, pcscd, the vpcd virtual reader)..."
bash tests/setup.sh --demo >&2
export PATH="$HOME/.cargo/bin:$PATH"   # where setup.sh puts rustup's cargo when it had to
phase "building keytally, the sandbox server and the virtual key (release: the longest step, about 5 min on an idle 2-core machine)..."
cargo build --release -q --locked -p keytally -p keytally-sandbox -p keytally-virtual-key
BIN=target/release

tmp=$(mktemp -d)
cleanup() { [ -n "${SB:-}" ] && kill "$SB" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

phase "starting the sandbox management server on loopback..."
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN/keytally-sandbox" --listen "127.0.0.1:$port" --db "$tmp/server.db" 2>"$tmp/sandbox.log" &
SB=$!
for _ in $(seq 50); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
  sleep 0.1
done

export KEYTALLY_SERVER="http://127.0.0.1:$port/api/external/ybk-management"
export KEYTALLY_TOKEN_URL="http://127.0.0.1:$port/oauth/token"
export KEYTALLY_CLIENT_ID=keytally
export KEYTALLY_CLIENT_SECRET=sandbox-client-secret   # the sandbox's built-in demo client
export KEYTALLY_STATE_DIR="$tmp/state"

if "$BIN/keytally" scan --json 2>/dev/null | grep -q '"uniqueId"'; then
  phase "reading the attached YubiKeys and pushing them..."
  echo "== keytally sync --once  (server: $KEYTALLY_SERVER)"
  "$BIN/keytally" sync --once
else
  phase "no YubiKey attached: tapping a virtual YubiKey 5 NFC on an isolated pcscd..."
  echo "== keytally sync --once  (server: $KEYTALLY_SERVER)"
  "$BIN/keytally-vkey" --model yk5nfc --lab -- "$BIN/keytally" sync --once
fi
echo
echo "== keytally status"
"$BIN/keytally" status
echo
echo "== what arrived at the server (GET /devices)"
python3 - "$KEYTALLY_SERVER/devices" <<'PY'
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer sandbox-admin-token"})
body = json.load(urllib.request.urlopen(req, timeout=5))
items = body["items"] if isinstance(body, dict) else body
for d in items:
    y = d["yubikey"]
    print(f'{y["name"]:<28} serial {y["serialNumber"] or "-":<10} firmware {y["firmwareVersion"]:<7} '
          f'uniqueId {y["uniqueId"]}  via {d.get("observation", {}).get("transport", "?")}')
print(f"{len(items)} device(s) on the server")
PY
phase "done"
