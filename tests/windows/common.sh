# shellcheck shell=bash
# What smoke.sh, msi.sh and pcsc_restart.sh share; sourced with the script's own arguments, after
# it has set HERE (its folder):   . "$HERE/common.sh" "$@"
# Sets REPO (and cds there), EXE (the keytally.exe to test: $1, else the debug build in
# $CARGO_TARGET_DIR or target/windows-gnu; it must be inside the repository, which is all the lab
# sees), TRAY_EXE (keytally-tray.exe, the tray's logon launcher, built next to it) and HOSTBIN
# (target/debug, with keytally-sandbox and keytally-vkey, built here if missing); the result
# counters and helpers ok/fail (PASS, FAILED), show, free_port, win, write_token_config; and
# work_dir NAME, which makes WORK under tests/windows/.cache (the lab sees it) and removes it at
# exit, after killing PIDS.
REPO="$(cd "$HERE/../.." && pwd)"
cd "$REPO" || exit 2
ME="$(basename "$0")"
EXE="${1:-${CARGO_TARGET_DIR:-$REPO/target/windows-gnu}/x86_64-pc-windows-gnu/debug/keytally.exe}"
[ -f "$EXE" ] || { echo "$ME: no $EXE (build it: cargo build --target x86_64-pc-windows-gnu -p keytally)" >&2; exit 2; }
EXE="$(realpath "$EXE")"
case "$EXE" in "$REPO"/*) ;; *) echo "$ME: $EXE must be inside $REPO (the lab sees only the repository)" >&2; exit 2 ;; esac
TRAY_EXE="$(dirname "$EXE")/keytally-tray.exe"
HOSTBIN="$REPO/target/debug"
if [ ! -x "$HOSTBIN/keytally-sandbox" ] || [ ! -x "$HOSTBIN/keytally-vkey" ]; then
    (unset CARGO_TARGET_DIR; cargo build -q --locked -p keytally-sandbox -p keytally-virtual-key) || exit 2
fi

PASS=0 FAILED=0
ok() { echo "ok    $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL  $*"; FAILED=$((FAILED + 1)); }
show() { sed 's/^/      | /' "$@" | tail -n 15; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
win() { echo "Z:$1"; }   # a Unix path as the Windows program sees it
# A static-token profile for keytally.exe, written on the host into a folder the lab sees:
#   write_token_config DIR SERVER TOKEN STATE_DIR TOKEN_FILE
# writes DIR/secret (TOKEN) and DIR/config.toml (state_dir STATE_DIR, [profiles.default] with
# SERVER and token_file TOKEN_FILE). STATE_DIR and TOKEN_FILE are Windows paths as keytally.exe
# will read them (TOML literal strings, so backslashes stay as they are).
write_token_config() {
    mkdir -p "$1" || return 1
    printf '%s\n' "$3" >"$1/secret" || return 1
    cat >"$1/config.toml" <<CFG
state_dir = '$4'
[profiles.default]
server = "$2"
token_file = '$5'
CFG
}

PIDS=()
work_dir() {   # $1: a name for the folder
    mkdir -p "$HERE/.cache"
    WORK="$(mktemp -d "$HERE/.cache/$1.XXXXXX")"
    trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT
    trap 'exit 130' INT TERM
}
