#!/usr/bin/env bash
# keytally.exe under the Windows lab (Wine 10 → winscard → the lab's pcscd → vpcd), against a
# virtual YubiKey 5 NFC and the sandbox, both running on the host's loopback:
#   --version; scan --json through winscard; scan --json --posture (posture and advisories);
#   sync --once with a static token; sync --once with
#   OAuth2 client credentials; `secret set` (Credential Manager) then sync --once; the tray's
#   logon launcher keytally-tray.exe (a GUI-subsystem program) starting the tray, whose icon
#   shows in Wine's notification area on an Xvfb screen, grey, then green with `keytally run`
#   serving the named pipe; a second tray in the session exits with one line, no second icon;
#   the enrollment desk (`enroll --count 1` with owner, tags, status: found, pushed, removal,
#   summary); the kiosk (a tap is a line and a push; a key in NFC restricted mode is a line
#   saying so); last, that key named by scan (stderr, table) with no record.
# Prints `ok    …` / `FAIL  …` lines (as tests/run.sh counts them); exit 1 if any failed.
#
#   tests/windows/smoke.sh [PATH/TO/keytally.exe]
# Default exe: $CARGO_TARGET_DIR (or target/windows-gnu)/x86_64-pc-windows-gnu/debug/keytally.exe.
# Host binaries: target/debug/keytally-sandbox and keytally-vkey (built here if missing).
# Needs root (see lab.sh), python3, Xvfb and ImageMagick (`import`, `convert`).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/common.sh" "$@"
work_dir smoke

VPORT="$(free_port)"
lab() { "$HERE/lab.sh" --vpcd-port "$VPORT" -- "$@"; }

# The virtual YubiKey 5 NFC, serial 12345678 (start_vkey [ARG…]: with keytally-vkey's ARGs):
# connects to the lab's vpcd (and reconnects to every new lab) until stop_vkey.
start_vkey() { "$HOSTBIN/keytally-vkey" --model yk5nfc --port "$VPORT" "$@" 2>>"$WORK/vkey.log" & VKEY_PID=$!; PIDS+=("$VKEY_PID"); }
stop_vkey() { kill "$VKEY_PID" 2>/dev/null; wait "$VKEY_PID" 2>/dev/null; }
start_vkey --count-file "$WORK/apdus"

SB_PID=""
start_sandbox() {   # $1: name
    SB_PORT="$(free_port)"
    "$HOSTBIN/keytally-sandbox" --listen "127.0.0.1:$SB_PORT" --machine-token smoke-static-token \
        2>"$WORK/sandbox-$1.log" &
    SB_PID=$!
    PIDS+=("$SB_PID")
    for _ in $(seq 50); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $SB_PORT), 0.2)" 2>/dev/null && break
        sleep 0.1
    done
    SERVER="http://127.0.0.1:$SB_PORT/api/external/ybk-management"
}
stop_sandbox() { kill "$SB_PID" 2>/dev/null; wait "$SB_PID" 2>/dev/null; }
# What the sandbox has. Without an argument, "serial firmware name" per device (what arrived);
# with a serial, that device's owner email, tags, status, and "tapped" or "-" (its tappedAt).
devices_on_server() {
    python3 - "$SERVER/devices" "$@" <<'PY'
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer sandbox-admin-token"})
body = json.load(urllib.request.urlopen(req, timeout=5))
for d in (body["items"] if isinstance(body, dict) else body):
    y = d["yubikey"]
    if len(sys.argv) < 3:
        print(y.get("serialNumber"), y.get("firmwareVersion"), y.get("name"))
    elif y.get("serialNumber") == sys.argv[2]:
        owners = [o.get("email") for o in (d.get("owners") or {}).get("items", [])]
        tags = [t.get("name") for t in d.get("tags") or []]
        status = (d.get("status") or {}).get("name")
        print(",".join(owners), ",".join(tags), status, "tapped" if (d.get("observation") or {}).get("tappedAt") else "-")
PY
}
arrived() { devices_on_server; }
EXPECT="12345678 5.4.3 YubiKey 5 NFC"

# 1. --version
t0=$SECONDS
if lab wine "$EXE" --version >"$WORK/version.out" 2>"$WORK/version.err" \
    && grep -Eq '^keytally [0-9]+\.[0-9]+' "$WORK/version.out"; then
    ok "windows: keytally.exe --version under Wine: $(head -n1 "$WORK/version.out") ($((SECONDS - t0)) s)"
else
    fail "windows: keytally.exe --version under Wine"; show "$WORK/version.out" "$WORK/version.err"
fi

# `wine keytally.exe scan --json ARGS… >OUT 2>ERR` in a new lab (sh -c "$SCAN_JSON_WHEN_CONNECTED"
# sh TRIES EXE OUT ERR ARGS…), again (up to TRIES times) until the key is in it: the virtual key
# may not have reached this lab's vpcd yet.
SCAN_JSON_WHEN_CONNECTED='tries="$1" exe="$2" out="$3" err="$4"; shift 4
    for i in $(seq "$tries"); do
        wine "$exe" scan --json "$@" >"$out" 2>"$err" && grep -q 12345678 "$out" && exit 0; sleep 1
    done; exit 1'

# 2. scan --json through winscard.
t0=$SECONDS
lab sh -c "$SCAN_JSON_WHEN_CONNECTED" sh 10 "$EXE" "$WORK/scan.json" "$WORK/scan.err"
if python3 - "$WORK/scan.json" <<'PY'
import json, sys
recs = json.load(open(sys.argv[1]))
assert isinstance(recs, list) and len(recs) == 1, f"{len(recs)} records"
y = recs[0]["yubikey"]
want = {"serialNumber": "12345678", "firmwareVersion": "5.4.3", "name": "YubiKey 5 NFC"}
for k, v in want.items():
    assert str(y.get(k)) == v, f"{k} = {y.get(k)!r}, want {v!r}"
assert y.get("uniqueId"), "no uniqueId"
tr = recs[0].get("observation", {}).get("transport")
assert tr in (None, "nfc", "pcsc", "ccid"), f"transport {tr!r}"
PY
then
    ok "windows: scan --json reads the virtual YubiKey 5 NFC through winscard (serial 12345678, fw 5.4.3; $((SECONDS - t0)) s)"
else
    fail "windows: scan --json through winscard"; show "$WORK/scan.json" "$WORK/scan.err"
fi

# 2b. scan --json --posture through winscard: the factory key's posture (PIV, FIDO2 over NFCCTAP,
# OpenPGP, OATH, OTP) and its advisories, as on Linux (tests/e2e/posture.rs, ykman the referee).
t0=$SECONDS
lab sh -c "$SCAN_JSON_WHEN_CONNECTED" sh 5 "$EXE" "$WORK/posture.json" "$WORK/posture.err" --posture
if python3 - "$WORK/posture.json" <<'PY'
import json, sys
recs = json.load(open(sys.argv[1]))
assert isinstance(recs, list) and len(recs) == 1, f"{len(recs)} records"
obs = recs[0].get("observation") or {}
p = obs.get("posture") or {}
want = {"pivPinDefault": True, "pivPukDefault": True, "pivManagementKeyDefault": True, "pivPinRetries": 3,
        "pivPukRetries": 3, "fido2PinSet": False, "fido2ForcePinChange": False, "fido2MinPinLength": 4,
        "openpgpPinRetries": [3, 0, 3], "oathPasswordSet": False, "otpSlotsConfigured": [False, False]}
for k, v in want.items():
    assert p.get(k) == v, f"posture {k} = {p.get(k)!r}, want {v!r}"
ids = {a["id"]: a["applies"] for a in obs.get("advisories") or []}
assert ids.get("YSA-2024-03") == "yes", f"advisories {ids}"
PY
then
    ok "windows: scan --json --posture reads the factory key's PIV, FIDO2, OpenPGP, OATH and OTP posture and its advisories through winscard ($((SECONDS - t0)) s)"
else
    fail "windows: scan --json --posture through winscard"; show "$WORK/posture.json" "$WORK/posture.err"
fi

# `wine keytally.exe sync --once ARGS… >OUT 2>ERR` (sh -c "$SYNC_ONCE_WHEN_CONNECTED" sh EXE OUT ERR
# ARGS…), again while it scanned no key: every `lab` is a new pcscd, and the virtual key (which
# retries every 0.5-1 s) may not have reached this one's vpcd yet. Seen in ~1 run in 10 for the
# first sync, and in CI for the sync after `secret set`, which had no retry.
SYNC_ONCE_WHEN_CONNECTED='exe="$1" out="$2" err="$3"; shift 3
    for i in 1 2 3 4 5; do
        wine "$exe" sync --once "$@" >"$out" 2>"$err" || exit $?
        grep -q "scanned 0 record" "$out" "$err" || exit 0; sleep 1
    done'

# sync --once under the lab against a fresh sandbox; $1 what, $2 name, rest: KEYTALLY_* settings
# (@SB_PORT@ in them becomes the sandbox's port).
sync_once() {
    local what="$1" name="$2"; shift 2
    start_sandbox "$name"
    set -- "${@//@SB_PORT@/$SB_PORT}"
    local t0=$SECONDS rc=0 got
    lab env KEYTALLY_SERVER="$SERVER" KEYTALLY_STATE_DIR="$(win "$WORK/state-$name")" "$@" \
        sh -c "$SYNC_ONCE_WHEN_CONNECTED" sh "$EXE" "$WORK/sync-$name.out" "$WORK/sync-$name.err" || rc=$?
    got="$(arrived 2>&1)"
    if [ "$rc" = 0 ] && [ "$got" = "$EXPECT" ]; then
        ok "windows: sync --once with $what pushed the key to the sandbox ($((SECONDS - t0)) s)"
    else
        fail "windows: sync --once with $what (exit $rc; server has: ${got:-nothing})"
        show "$WORK/sync-$name.out" "$WORK/sync-$name.err"
    fi
    stop_sandbox
}

# 3. sync --once, static token.  4. OAuth2 client credentials (the sandbox's demo client).
sync_once "a static token" token KEYTALLY_TOKEN=smoke-static-token
sync_once "OAuth2 client credentials" oauth KEYTALLY_TOKEN_URL="http://127.0.0.1:@SB_PORT@/oauth/token" \
    KEYTALLY_CLIENT_ID=keytally KEYTALLY_CLIENT_SECRET=sandbox-client-secret

# 5. secret set (Credential Manager) then sync --once reading it.
start_sandbox keyring
cat >"$WORK/keyring.toml" <<EOF
state_dir = '$(win "$WORK/state-keyring")'
[profiles.smoke]
server = "$SERVER"
token_keyring = { service = "keytally", user = "smoke" }
EOF
t0=$SECONDS
lab sh -c 'printf "smoke-static-token\n" | wine "$1" secret set --profile smoke --config "$2" >"$3" 2>&1 \
    && sh -c "$4" sh "$1" "$5" "$6" --config "$2"' \
    sh "$EXE" "$(win "$WORK/keyring.toml")" "$WORK/secret-set.out" "$SYNC_ONCE_WHEN_CONNECTED" "$WORK/sync-keyring.out" "$WORK/sync-keyring.err"
rc=$?
got="$(arrived 2>&1)"
if [ "$rc" = 0 ] && [ "$got" = "$EXPECT" ]; then
    ok "windows: secret set (Credential Manager) then sync --once pushed the key ($((SECONDS - t0)) s)"
else
    fail "windows: secret set then sync --once (exit $rc; server has: ${got:-nothing})"
    show "$WORK/secret-set.out" "$WORK/sync-keyring.out" "$WORK/sync-keyring.err" 2>/dev/null
fi
stop_sandbox

# 6. The tray icon itself: `keytally tray` in Wine's notification area (explorer /desktop=shell on
# an Xvfb screen, reached through its abstract socket: the lab shares the host's network
# namespace), started as at logon by the MSI's Run value: keytally-tray.exe, a GUI-subsystem
# launcher (no console window), which starts `keytally.exe tray` and exits at once. The icon
# appears grey (no service); a second tray (keytally.exe tray, then the launcher again) says in one
# line that one is running and exits 0, with no second icon; then `keytally run` starts in the same Wine
# machine and the icon turns green (connected over the named pipe, sync ok). Seen by counting
# the tone's pixels on screenshots against one taken before the tray started, and in explorer's
# systray trace. Then a close to its windows (taskkill without /f) ends it and it removes the
# icon (explorer's trace: Wine's notification area on Xvfb is not repainted after that).
# Not shown here: the menu's clicks (Sync now, Quit), Windows' own shell, and that no console
# window opens (Wine draws none for a console program either: the PE header is what is checked).
pe_subsystem() { x86_64-w64-mingw32-objdump -p "$1" 2>/dev/null | awk '$1 == "Subsystem" { print $2 + 0; exit }'; }
sub="$(pe_subsystem "$TRAY_EXE")" sub_main="$(pe_subsystem "$EXE")"
if [ "$sub" = 2 ] && [ "$sub_main" = 3 ]; then
    ok "windows: keytally-tray.exe is a GUI-subsystem program (PE Subsystem 2; keytally.exe: 3, console), so the logon launch opens no console window"
else
    fail "windows: keytally-tray.exe's PE subsystem is ${sub:-unknown}, keytally.exe's ${sub_main:-unknown} (want 2 and 3; x86_64-w64-mingw32-objdump -p)"
fi
gui_pixels() {   # $1 colour: how many pixels of it (10 % fuzz) the screen shows now
    import -display ":$DISP" -window root "$WORK/shot.png" 2>/dev/null \
        && convert "$WORK/shot.png" -fuzz 10% -fill black +opaque "$1" -fill white -opaque "$1" \
            -format '%[fx:round(mean*w*h)]' info: 2>/dev/null
}
wait_file() { local i=0; while [ ! -e "$1" ] && [ $i -lt $(( $2 * 10 )) ]; do sleep 0.1; i=$((i + 1)); done; [ -e "$1" ]; }
more_than() { [ -n "$1" ] && [ -n "$2" ] && [ "$1" -ge $(( $2 + 20 )) ]; }   # $1 now, $2 before
wait_pixels() {   # $1 colour, $2 its count before, $3 seconds: prints the last count
    local n="" i
    for i in $(seq $(( $3 * 2 ))); do
        n="$(gui_pixels "$1")"
        more_than "$n" "$2" && break
        sleep 0.5
    done
    echo "$n"
}
GREY="#9a9a9a" GREEN="#2ea043"   # the icon's Offline and Ok tones (agent/src/tray/icon.rs)
if ! command -v Xvfb >/dev/null || ! command -v import >/dev/null; then
    fail "windows: the tray icon under Wine needs Xvfb and ImageMagick (tests/setup.sh installs them)"
else
    DISP=""
    for n in $(seq 71 99); do [ -e "/tmp/.X11-unix/X$n" ] || [ -e "/tmp/.X$n-lock" ] || { DISP=$n; break; }; done
    Xvfb ":$DISP" -screen 0 1024x768x24 -nolisten tcp >"$WORK/xvfb.log" 2>&1 &
    PIDS+=($!)
    start_sandbox gui
    cat >"$WORK/gui.toml" <<EOF
state_dir = '$(win "$WORK/state-gui")'
[profiles.default]
server = "$SERVER"
token_file = '$(win "$WORK/gui.token")'
EOF
    printf 'smoke-static-token\n' >"$WORK/gui.token"
    # Inside the lab: explorer's desktop, then the tray, then the service, each when the host
    # says (files in $WORK); the lab's end takes them all down.
    cat >"$WORK/gui.sh" <<'EOF'
#!/bin/sh
exe="$1" cfg="$2" w="$3" launcher="$4"
wait_file() { i=0; while [ ! -e "$1" ] && [ $i -lt $(( $2 * 10 )) ]; do sleep 0.1; i=$((i + 1)); done; [ -e "$1" ]; }
# The Windows pids of the running keytally.exe processes, one a line.
keytally_pids() { WINEDEBUG=-all wine tasklist 2>/dev/null | tr -d '\r' | awk 'tolower($1) == "keytally.exe" { print $2 }'; }
WINEDEBUG=-all,+systray wine explorer /desktop=shell,1024x768 >"$w/explorer.log" 2>&1 &
sleep 5; touch "$w/desktop-up"
wait_file "$w/start-tray" 60 || exit 1
# As the Run value does at logon. The tray inherits the launcher's standard error.
t=$(date +%s%N)
wine "$launcher" -v >"$w/launcher.out" 2>"$w/tray.log"
echo "$? $(( ($(date +%s%N) - t) / 1000000 ))" >"$w/launcher.rc"
i=0; while [ -z "$(keytally_pids)" ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
keytally_pids >"$w/tray.pid"
wait_file "$w/second-tray" 60 || exit 1
WINEDEBUG=-all wine "$exe" tray >"$w/second.out" 2>"$w/second.err"; echo $? >"$w/second.rc"
WINEDEBUG=-all wine "$launcher" >"$w/second-launcher.out" 2>"$w/second-launcher.err"; echo $? >"$w/second-launcher.rc"
sleep 2; keytally_pids >"$w/after-second.pids"; touch "$w/second-done"
wait_file "$w/start-service" 60 || exit 1
wine "$exe" -v --config "$cfg" run >"$w/run.log" 2>&1 &
wait_file "$w/stop-tray" 120 || exit 1
# As the Restart Manager or a logoff would: a close to its windows (taskkill without /f).
wine taskkill /im keytally.exe >"$w/taskkill.log" 2>&1
tray=$(head -n1 "$w/tray.pid")
i=0; while keytally_pids | grep -qx "$tray" && [ $i -lt 30 ]; do sleep 0.3; i=$((i + 1)); done
[ -n "$tray" ] && ! keytally_pids | grep -qx "$tray" && touch "$w/tray-exited"
wait_file "$w/done" 60
EOF
    chmod +x "$WORK/gui.sh"
    t0=$SECONDS
    DISPLAY=":$DISP" lab "$WORK/gui.sh" "$EXE" "$(win "$WORK/gui.toml")" "$WORK" "$TRAY_EXE" >"$WORK/gui.log" 2>&1 &
    GUI=$!
    grey0="" green0="" grey="" green=""
    if wait_file "$WORK/desktop-up" 60; then
        grey0="$(gui_pixels "$GREY")" green0="$(gui_pixels "$GREEN")"
        touch "$WORK/start-tray"
        grey="$(wait_pixels "$GREY" "$grey0" 30)"
    fi
    added="$(grep -ac 'systray:add_icon' "$WORK/explorer.log" 2>/dev/null)"
    read -r launcher_rc launcher_ms <"$WORK/launcher.rc" 2>/dev/null
    if more_than "$grey" "$grey0" && [ "${added:-0}" -ge 1 ] && [ "${launcher_rc:-}" = 0 ] && [ -s "$WORK/tray.pid" ]; then
        ok "windows: keytally-tray.exe (the Run value's launcher) starts keytally.exe tray and exits 0 (${launcher_ms} ms); the tray shows its icon in Wine's notification area, grey without a service ($((grey - grey0)) more grey pixels; $((SECONDS - t0)) s)"
    else
        fail "windows: the launcher starting the tray and its icon in Wine's notification area (launcher exit ${launcher_rc:-?}, tray pid $(cat "$WORK/tray.pid" 2>/dev/null), grey pixels ${grey0:-?} -> ${grey:-?}, add_icon seen ${added:-0}x)"
        show "$WORK/tray.log" "$WORK/launcher.out" "$WORK/gui.log" 2>/dev/null
    fi
    # A second tray while the first's icon is up: keytally.exe tray, then the launcher again.
    t0=$SECONDS
    touch "$WORK/second-tray"
    wait_file "$WORK/second-done" 60
    added2="$(grep -ac 'systray:add_icon' "$WORK/explorer.log" 2>/dev/null)"
    tray_pid="$(head -n1 "$WORK/tray.pid" 2>/dev/null)"
    if [ "$(cat "$WORK/second.rc" 2>/dev/null)" = 0 ] && [ "$(wc -l <"$WORK/second.err")" = 1 ] \
        && grep -q 'a keytally tray is already running in this session' "$WORK/second.err" \
        && [ "$(cat "$WORK/second-launcher.rc" 2>/dev/null)" = 0 ] && grep -q 'already running' "$WORK/second-launcher.err" \
        && [ "${added2:-0}" = "${added:-0}" ] && [ "$(cat "$WORK/after-second.pids")" = "$tray_pid" ]; then
        ok "windows: a second tray in the session (keytally.exe tray, and the launcher again) says '$(sed 's/^keytally tray: //' "$WORK/second.err")' and exits 0; no second icon, the first still runs ($((SECONDS - t0)) s)"
    else
        fail "windows: a second tray (exit $(cat "$WORK/second.rc" 2>/dev/null), launcher exit $(cat "$WORK/second-launcher.rc" 2>/dev/null), add_icon ${added:-0} -> ${added2:-0}, keytally.exe pids $(tr '\n' ' ' <"$WORK/after-second.pids" 2>/dev/null)vs tray $tray_pid)"
        show "$WORK/second.err" "$WORK/second-launcher.err" 2>/dev/null
    fi
    t0=$SECONDS
    touch "$WORK/start-service"
    green="$(wait_pixels "$GREEN" "$green0" 60)"
    if more_than "$green" "$green0" && grep -aq 'connected to the service' "$WORK/tray.log"; then
        ok "windows: the tray icon turns green once keytally run serves the named pipe and has synced ($((green - green0)) green pixels; $((SECONDS - t0)) s)"
    else
        fail "windows: the tray icon turning green with the service (green pixels ${green0:-?} -> ${green:-?})"
        show "$WORK/tray.log" "$WORK/run.log" 2>/dev/null
    fi
    t0=$SECONDS
    hidden0="$(grep -ac 'systray:hide_icon' "$WORK/explorer.log" 2>/dev/null)"
    touch "$WORK/stop-tray"
    wait_file "$WORK/tray-exited" 15
    sleep 1
    hidden="$(grep -ac 'systray:hide_icon' "$WORK/explorer.log" 2>/dev/null)"
    # The icon's removal is read from explorer's trace (NIM_DELETE -> hide_icon): Wine's
    # notification area on Xvfb keeps the last picture of the icon on the screen afterwards.
    if [ -e "$WORK/tray-exited" ] && grep -aq 'stopping on request' "$WORK/tray.log" \
        && ! grep -aq 'Error removing system tray icon' "$WORK/tray.log" && [ "${hidden:-0}" -gt "${hidden0:-0}" ]; then
        ok "windows: the tray ends cleanly on a close to its windows (taskkill without /f, as the Restart Manager and a logoff ask) and removes its icon ($((SECONDS - t0)) s)"
    else
        fail "windows: the tray ending on a close (exited: $([ -e "$WORK/tray-exited" ] && echo yes || echo no), icon hidden ${hidden0:-0} -> ${hidden:-0})"
        show "$WORK/tray.log" "$WORK/taskkill.log" 2>/dev/null
    fi
    touch "$WORK/done"
    wait "$GUI" 2>/dev/null
    stop_sandbox
fi

# From here on the virtual key is taken away and put back (a removal, a tap) and swapped for one
# in NFC restricted mode; the APDU count above is the first key's.
apdus="$(cat "$WORK/apdus" 2>/dev/null || echo 0)"
wait_grep() {   # $1 file, $2 extended regex, $3 seconds: true once a line of the file matches
    local i=0
    until grep -Eq "$2" "$1" 2>/dev/null; do
        [ $i -ge $(( $3 * 10 )) ] && return 1
        sleep 0.1; i=$((i + 1))
    done
}
# lab_with_token NAME COMMAND…: COMMAND in a new lab, keytally.exe set to push to the running
# sandbox with the static token, its state in WORK/state-NAME.
lab_with_token() {
    local name="$1"; shift
    lab env KEYTALLY_SERVER="$SERVER" KEYTALLY_TOKEN=smoke-static-token KEYTALLY_STATE_DIR="$(win "$WORK/state-$name")" "$@"
}

# 7. The enrollment desk: `enroll --count 1` with the owner, tags and status given finds the key
# on the lab's reader, pushes it with them and asks for its removal; the key taken away, the
# desk ends with its summary, exit 0.
start_sandbox desk
t0=$SECONDS
lab_with_token desk sh -c 'wine "$1" enroll --count 1 --owner it@example.com --tags desk,windows --status Active >"$2" 2>"$3"
    echo $? >"$4"' sh "$EXE" "$WORK/desk.out" "$WORK/desk.err" "$WORK/desk.rc" &
DESK_LAB=$!
asked=0
wait_grep "$WORK/desk.out" '^Remove the key to continue' 60 && asked=1
stop_vkey
wait_grep "$WORK/desk.rc" '^[0-9]+$' 30
kill "$DESK_LAB" 2>/dev/null; wait "$DESK_LAB" 2>/dev/null
got="$(devices_on_server 12345678 2>&1)"
if [ "$asked" = 1 ] && [ "$(cat "$WORK/desk.rc" 2>/dev/null)" = 0 ] \
    && grep -q '^Enrolled YubiKey 5 NFC (12345678) to it@example.com: synced' "$WORK/desk.out" \
    && grep -q '^Enrolled 1 key(s): 1 synced' "$WORK/desk.out" && [ "$got" = "it@example.com desk,windows Active -" ]; then
    ok "windows: the enrollment desk found the key on the reader, pushed it with owner, tags and status ($got), asked for its removal and ended with its summary, exit 0 ($((SECONDS - t0)) s)"
else
    fail "windows: the enrollment desk (asked to remove: $asked, exit $(cat "$WORK/desk.rc" 2>/dev/null || echo none); server has: ${got:-nothing})"
    show "$WORK/desk.out" "$WORK/desk.err"
fi
stop_sandbox

# 8. The kiosk: a tap (the key put back on the reader) is one line with the key's serial and
# "synced", and the key on the server with its tappedAt; then a key in NFC restricted mode
# tapped is one line saying so.
start_vkey
start_sandbox kiosk
t0=$SECONDS
lab_with_token kiosk sh -c 'wine "$1" kiosk --merge-window 0s >"$2" 2>"$3" & while [ ! -e "$4" ]; do sleep 0.2; done' \
    sh "$EXE" "$WORK/kiosk.out" "$WORK/kiosk.err" "$WORK/kiosk-stop" &
KIOSK_LAB=$!
got=""
wait_grep "$WORK/kiosk.out" 'serial 12345678.*(synced|queued)' 60 && got="$(devices_on_server 12345678 2>&1)"
if grep -Eq 'YubiKey 5 NFC  serial 12345678  advisories [A-Z0-9,-]+  synced' "$WORK/kiosk.out" && [ "${got##* }" = tapped ]; then
    ok "windows: the kiosk's line for a tap names the key and says synced, and the server has it with tappedAt ($((SECONDS - t0)) s)"
else
    fail "windows: the kiosk and a tap (server has: ${got:-nothing})"; show "$WORK/kiosk.out" "$WORK/kiosk.err"
fi
# Another key tapped a moment after the first left (pcscd polls the vpcd reader every 0.4 s,
# and keytally polls Wine's winscard every 0.5 s: Wine's SCardGetStatusChange returns at once).
stop_vkey
sleep 2
start_vkey --nfc-restricted
t0=$SECONDS
msg="YubiKey in NFC restricted mode: plug it into a USB port once to enable NFC"
if wait_grep "$WORK/kiosk.out" "$msg" 30 && [ "$(grep -c 'serial 12345678' "$WORK/kiosk.out")" = 1 ]; then
    ok "windows: a key in NFC restricted mode tapped at the kiosk is one line: '$(grep -m1 -F "$msg" "$WORK/kiosk.out")' ($((SECONDS - t0)) s)"
else
    fail "windows: the kiosk and a key in NFC restricted mode"; show "$WORK/kiosk.out" "$WORK/kiosk.err"
fi
touch "$WORK/kiosk-stop"
wait "$KIOSK_LAB" 2>/dev/null
stop_sandbox

# 9. A key in NFC restricted mode (still on the reader): `scan` names it on stderr and in its
# table, and writes no record.
t0=$SECONDS
# Until the key has reached this lab's vpcd; then scan --json in the same lab (same pcscd).
lab sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do
        wine "$1" scan >"$2" 2>"$3"; grep -q "restricted" "$3" && break; sleep 1
    done; wine "$1" scan --json >"$4" 2>"$5"' \
    sh "$EXE" "$WORK/restricted.out" "$WORK/restricted.err" "$WORK/restricted.json" "$WORK/restricted-json.err"
if grep -qF "$msg" "$WORK/restricted.err" && grep -qF "$msg" "$WORK/restricted.out" && grep -qF "$msg" "$WORK/restricted-json.err" \
    && [ "$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' "$WORK/restricted.json" 2>/dev/null)" = 0 ]; then
    ok "windows: a key in NFC restricted mode is named on stderr and in scan's table ('$msg'), with no record in scan --json ($((SECONDS - t0)) s)"
else
    fail "windows: a key in NFC restricted mode through winscard"
    show "$WORK/restricted.out" "$WORK/restricted.err" "$WORK/restricted.json" "$WORK/restricted-json.err" 2>/dev/null
fi

echo "windows smoke: $PASS passed, $FAILED failed (virtual key answered $apdus APDUs)"
[ "$FAILED" = 0 ]
