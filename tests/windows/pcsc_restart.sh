#!/usr/bin/env bash
# keytally waiting for the PC/SC service under the Windows lab (Wine 10 → winscard → the lab's
# pcscd → vpcd), against the sandbox on the host's loopback and virtual keys in the lab:
#   1. `keytally.exe -v run` in a console: pcscd is stopped inside the lab, keytally says once
#      that PC/SC is not available and waits without spinning (its CPU time is measured), pcscd
#      is started again, a new key is tapped and reaches the sandbox; Ctrl-C (SIGINT) ends it.
#   2. keytally as a Windows service (`sc create` of `keytally.exe --config … service`, as the
#      MSI registers it): the same restart and tap, then pcscd is stopped again and `sc stop`
#      must end the service within 5 s while it waits for PC/SC.
# It also says what Wine shows: the error winscard passes on with pcscd gone, and whether
# SCardAccessStartedEvent tells anything (Wine's winscard creates the event set when it loads
# and never resets it, so keytally finds it contradicted by PC/SC and polls every 2 s, said once).
# Prints `ok    …` / `FAIL  …` lines (as tests/run.sh counts them); exit 1 if any failed.
#
#   tests/windows/pcsc_restart.sh [PATH/TO/keytally.exe]     (default: the debug build, as smoke.sh)
# Needs root (see lab.sh), python3, target/debug/keytally-sandbox and keytally-vkey (built here
# if missing; the virtual keys run inside the lab, the sandbox on the host).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/common.sh" "$@"
work_dir pcsc-restart

VPORT="$(free_port)" SB_PORT="$(free_port)"
"$HOSTBIN/keytally-sandbox" --listen "127.0.0.1:$SB_PORT" --machine-token restart-static-token 2>"$WORK/sandbox.log" &
PIDS+=($!)
SERVER="http://127.0.0.1:$SB_PORT/api/external/ybk-management"
# The service's config (part 2), as the lab will see it.
write_token_config "$WORK/svc" "$SERVER" restart-static-token "$(win "$WORK/svc/state")" "$(win "$WORK/svc/secret")" || exit 2

# Everything inside one lab session; results go to $WORK/results as key=value lines. The lab's
# pcscd was started by lab.sh (its pid in /run/pcscd/pcscd.pid); a new one is started here with
# the lab's reader.conf, and goes with the lab's namespace.
cat >"$WORK/inside.sh" <<'EOF'
#!/bin/bash
exe="$1" w="$2" server="$3" sb_port="$4" vkey="$5"
say() { printf '%s=%s\n' "$1" "$2" >>"$w/results"; }
# Whether the sandbox has a device with this serial (HTTP/1.0 over bash's /dev/tcp: the lab's
# root has no HTTP client).
on_server() {
    local body
    exec 3<>"/dev/tcp/127.0.0.1/$sb_port" || return 1
    printf 'GET /api/external/ybk-management/devices HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer sandbox-admin-token\r\n\r\n' >&3
    body="$(timeout 5 cat <&3)"
    exec 3<&-
    [[ "$body" == *"\"serialNumber\":\"$1\""* ]]
}
wait_for() {   # SECONDS COMMAND…: true once COMMAND is, polled every 0.2 s
    local end=$((SECONDS + $1)); shift
    until "$@"; do [ "$SECONDS" -ge "$end" ] && return 1; sleep 0.2; done
}
gone() { [ ! -d "/proc/$1" ]; }
pcscd_stop() {
    kill "$(cat /run/pcscd/pcscd.pid)" && wait_for 10 test ! -S /run/pcscd/pcscd.comm
}
N=0
pcscd_start() {
    N=$((N + 1))
    /usr/sbin/pcscd -f --disable-polkit -c /tmp/reader.conf >"$w/pcscd-$N.log" 2>&1 &
    wait_for 10 test -S /run/pcscd/pcscd.comm
}
VKEY=""
tap() {   # SERIAL: a virtual YubiKey 5 NFC on the lab's reader (reconnects to every new pcscd)
    "$vkey" --model yk5nfc --serial "$1" --port "$KEYTALLY_LAB_VPCD_PORT" 2>"$w/vkey-$1.log" &
    VKEY=$!
}
untap() { kill "$VKEY"; wait "$VKEY" 2>/dev/null; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
win() { echo "Z:$1"; }

# ---- 1. keytally.exe run in a console.
tap 61000001
KEYTALLY_SERVER="$server" KEYTALLY_TOKEN=restart-static-token KEYTALLY_STATE_DIR="$(win "$w/state-run")" \
    wine "$exe" -v run >"$w/run.out" 2>"$w/run.err" &
run=$!
wait_for 60 on_server 61000001 && say run_first_key yes
untap
pcscd_stop && say run_pcscd_stopped yes
wait_for 15 grep -q 'waiting for' "$w/run.err" && say run_told_down "$(grep -m1 'waiting for' "$w/run.err")"
# With pcscd down: keytally's CPU time over 6 s (clock ticks of 10 ms).
sleep 1; t0="$(ticks "$run")"; sleep 6; say run_cpu_down_ms "$(( ($(ticks "$run") - t0) * 10 ))"
pcscd_start && say run_pcscd_started yes
t=$SECONDS
tap 61000002
wait_for 30 on_server 61000002 && say run_key_after_restart_s "$((SECONDS - t))"
say run_back "$(grep -c 'PC/SC is back' "$w/run.err")"
say run_told_count "$(grep -c 'waiting for' "$w/run.err")"
say run_event_distrusted "$(grep -c 'says it has started, but PC/SC still answers' "$w/run.err")"
say run_no_event "$(grep -c 'cannot wait for the Smart Card service to start' "$w/run.err")"
untap
t=$SECONDS; kill -INT "$run"; wait_for 10 gone "$run" && say run_sigint_exit_s "$((SECONDS - t))"
gone "$run" || kill -KILL "$run"

# ---- 2. The Windows service (`keytally service`, the command line the MSI registers), on the
# config the host wrote into $w/svc.
state() { wine sc query keytally 2>/dev/null | tr -d '\r' | awk '/STATE/ { print $4; exit }'; }
is_state() { [ "$(state)" = "$1" ]; }
wine sc create keytally binPath= "\"$(win "$exe")\" --config $(win "$w/svc/config.toml") service" start= demand >"$w/sc-create.out" 2>&1
say svc_created $?
tap 61000003
wine sc start keytally >/dev/null 2>&1
wait_for 30 is_state RUNNING && say svc_running yes
wait_for 60 on_server 61000003 && say svc_first_key yes
untap
pcscd_stop && sleep 3 && pcscd_start && say svc_pcscd_restarted yes
t=$SECONDS
tap 61000004
wait_for 30 on_server 61000004 && say svc_key_after_restart_s "$((SECONDS - t))"
untap
# Stop while it waits for PC/SC.
pcscd_stop && sleep 3 && say svc_pcscd_stopped_again yes
t="$(date +%s%N)"
wine sc stop keytally >/dev/null 2>&1
wait_for 15 is_state STOPPED && say svc_stop_while_down_ms "$(( ($(date +%s%N) - t) / 1000000 ))"
say svc_state_after_stop "$(state)"
wine sc delete keytally >/dev/null 2>&1
true
EOF

t0=$SECONDS
"$HERE/lab.sh" --vpcd-port "$VPORT" -- bash "$WORK/inside.sh" "$EXE" "$WORK" "$SERVER" "$SB_PORT" "$HOSTBIN/keytally-vkey" \
    >"$WORK/lab.out" 2>&1
rc=$?
took=$((SECONDS - t0))
touch "$WORK/results"
r() { awk -F= -v k="$1" '$1 == k { sub(/^[^=]*=/, ""); print; exit }' "$WORK/results"; }
[ "$rc" = 0 ] || { fail "windows: the pcscd-restart lab session (exit $rc)"; show "$WORK/lab.out"; }

# 1. keytally.exe run.
if [ "$(r run_first_key)" = yes ] && [ "$(r run_pcscd_stopped)" = yes ]; then
    ok "windows: keytally.exe run pushed a key, then pcscd was stopped inside the lab"
else
    fail "windows: keytally.exe run before the restart (first key: $(r run_first_key), pcscd stopped: $(r run_pcscd_stopped))"
    show "$WORK/run.err"
fi
told="$(r run_told_down)"
if [[ "$told" == *"not running"* ]] && [ "$(r run_told_count)" = 1 ]; then
    ok "windows: with pcscd gone, Wine's winscard answers SCARD_E_NO_SERVICE and keytally says so once: ${told#keytally: }"
else
    fail "windows: keytally did not say once that PC/SC is down (${told:-nothing}; said $(r run_told_count) time(s))"; show "$WORK/run.err"
fi
cpu="$(r run_cpu_down_ms)"
if [ -n "$cpu" ] && [ "$cpu" -lt 1000 ]; then
    ok "windows: waiting for PC/SC without spinning: ${cpu} ms of CPU in 6 s with pcscd down"
else
    fail "windows: keytally's CPU while pcscd was down: ${cpu:-unknown} ms in 6 s"
fi
distrusted="$(r run_event_distrusted)" no_event="$(r run_no_event)"
if [ "$distrusted" = 1 ] && [ "$no_event" = 0 ]; then
    ok "windows: Wine's SCardAccessStartedEvent stays set while pcscd is down: keytally saw PC/SC contradict it and polls every 2 s (said once)"
elif [ "$distrusted" = 0 ] && [ "$no_event" = 0 ]; then
    ok "windows: the started event was believed (this Wine resets it while pcscd is down)"
else
    fail "windows: the started event: contradicted $distrusted time(s) said, unavailable $no_event time(s) said (once at most)"
    show "$WORK/run.err"
fi
after="$(r run_key_after_restart_s)"
if [ -n "$after" ] && [ "$(r run_back)" = 1 ]; then
    ok "windows: pcscd started again, a key tapped afterwards reached the sandbox in ${after} s ('PC/SC is back' said once)"
else
    fail "windows: after pcscd came back (key: ${after:-not on the server}, 'PC/SC is back' said $(r run_back) time(s))"
    show "$WORK/run.err"
fi
sig="$(r run_sigint_exit_s)"
if [ -n "$sig" ] && [ "$sig" -le 5 ]; then
    ok "windows: keytally.exe run ended within ${sig} s of Ctrl-C"
else
    fail "windows: keytally.exe run did not end within 10 s of Ctrl-C"
fi

# 2. The service.
if [ "$(r svc_created)" = 0 ] && [ "$(r svc_running)" = yes ] && [ "$(r svc_first_key)" = yes ]; then
    ok "windows: keytally as a Windows service (sc create … service) runs and pushed a key"
else
    fail "windows: the service (created: $(r svc_created), running: $(r svc_running), first key: $(r svc_first_key))"
    show "$WORK/sc-create.out"
fi
after="$(r svc_key_after_restart_s)"
if [ "$(r svc_pcscd_restarted)" = yes ] && [ -n "$after" ]; then
    ok "windows: the service: pcscd stopped and started again, a key tapped afterwards reached the sandbox in ${after} s"
else
    fail "windows: the service after a pcscd restart (restarted: $(r svc_pcscd_restarted), key: ${after:-not on the server})"
fi
stop="$(r svc_stop_while_down_ms)"
if [ "$(r svc_pcscd_stopped_again)" = yes ] && [ -n "$stop" ] && [ "$stop" -le 5000 ]; then
    ok "windows: sc stop ended the service within ${stop} ms while it waited for PC/SC (pcscd down)"
else
    fail "windows: sc stop while pcscd was down: ${stop:-not STOPPED within 15 s} ms (state: $(r svc_state_after_stop))"
fi

echo "windows pcsc-restart: $PASS passed, $FAILED failed ($took s in the lab)"
[ "$FAILED" = 0 ]
