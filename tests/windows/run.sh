#!/usr/bin/env bash
# The Windows part of CI: everything under the Wine lab, one phase after the other, each timed.
#   1. the lab (tests/windows/lab.sh; created once, ~4 min, then cached in tests/windows/.cache)
#   2. the cross-build: keytally.exe and keytally-tray.exe, the tray's logon launcher
#      (x86_64-pc-windows-gnu, debug) + the host's sandbox and virtual key
#   3. smoke.sh: --version, scan --json via winscard (and --posture, and a key in NFC restricted
#      mode), sync --once (token, OAuth2), secret set + sync,
#      the tray started by its launcher (icon on an Xvfb screen, one tray per session), the
#      enrollment desk, the kiosk
#   4. msi.sh: the wixl MSI installed silently, the service registered, pushing, stopped, removed,
#      the tray's Run value pointing at the launcher; installs with SERVER_URL + API_TOKEN and with
#      the OAuth2 properties (TOKEN_URL, CLIENT_ID, CLIENT_SECRET; a wrong secret too)
#   5. the Windows test binaries under Wine (cargo runner): device + protocol --lib, agent --bins
# Prints `ok    …` / `FAIL  …` lines (tests/run.sh counts them) and a timing line per phase;
# exit 1 if anything failed.
#
# Needs root (chroot/mounts), network for the first lab build, and: debootstrap, wixl,
# gcc-mingw-w64-x86-64, the rustup target x86_64-pc-windows-gnu, python3. As root with
# CI=true, missing apt packages and the rustup target are installed.
# Cargo's target dir for this triple: $CARGO_TARGET_DIR, default target/windows-gnu.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
cd "$REPO"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target/windows-gnu}"
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$HERE/runner.sh"
TRIPLE=x86_64-pc-windows-gnu
FAILED=0
ok() { echo "ok    $*"; }
fail() { echo "FAIL  $*"; FAILED=$((FAILED + 1)); }
T0=$SECONDS PHASE_T0=$SECONDS
phase() { echo "windows: phase $1: $((SECONDS - PHASE_T0)) s"; PHASE_T0=$SECONDS; }
LOG="$HERE/.cache/logs"
mkdir -p "$LOG"

# 0. Prerequisites.
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v wixl >/dev/null || missing+=(wixl)
command -v x86_64-w64-mingw32-gcc >/dev/null || missing+=(gcc-mingw-w64-x86-64)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && [ "${CI:-}" = true ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >"$LOG/apt.log" 2>&1 \
            || { fail "windows: apt-get install ${missing[*]}"; exit 1; }
    else
        fail "windows: missing ${missing[*]} (apt-get install ${missing[*]})"; exit 1
    fi
fi
if ! rustup target list --installed 2>/dev/null | grep -qx "$TRIPLE"; then
    rustup target add "$TRIPLE" >"$LOG/rustup.log" 2>&1 || { fail "windows: rustup target add $TRIPLE"; exit 1; }
fi

# 1. The lab.
if "$HERE/lab.sh" -- wine --version >"$LOG/lab.log" 2>&1; then
    ok "windows: the Wine lab is ready ($(tail -n1 "$LOG/lab.log"))"
else
    fail "windows: the Wine lab"; tail -n 20 "$LOG/lab.log"; exit 1
fi
phase "lab"

# 2. Cross-build (and the host binaries smoke.sh and msi.sh talk to).
if cargo build --locked --target "$TRIPLE" -p keytally >"$LOG/build.log" 2>&1 \
    && (unset CARGO_TARGET_DIR; cargo build --locked -p keytally-sandbox -p keytally-virtual-key) >>"$LOG/build.log" 2>&1; then
    ok "windows: cargo build --target $TRIPLE -p keytally ($(du -h "$CARGO_TARGET_DIR/$TRIPLE/debug/keytally.exe" | cut -f1))"
else
    fail "windows: cargo build --target $TRIPLE -p keytally"; grep -E '^error' -A5 "$LOG/build.log" | head -n 30; exit 1
fi
phase "cross-build"

# 3. + 4.
"$HERE/smoke.sh" || FAILED=$((FAILED + 1))
phase "smoke"
"$HERE/msi.sh" || FAILED=$((FAILED + 1))
phase "msi"
"$HERE/pcsc_restart.sh" || FAILED=$((FAILED + 1)); phase "pcsc restart"   # pcscd stopped and started under run and the service

# 5. Test binaries under Wine. A test that cannot make sense on Windows is #[cfg(unix)] in the
# code; nothing is skipped here.
wine_tests() {   # $1 name, rest: cargo test arguments
    local name="$1"; shift
    local log="$LOG/test-$name.log"
    if cargo test --locked --target "$TRIPLE" --no-fail-fast "$@" >"$log" 2>&1; then
        ok "windows: cargo test $* under Wine: $(grep -E '^test result' "$log" | awk '{p += $4} END {print p}') passed"
    else
        fail "windows: cargo test $* under Wine: $(grep -E '^test .* FAILED$' "$log" | awk '{print $2}' | tr '\n' ' ')"
        grep -E '^error' -A5 "$log" | head -n 20
    fi
}
wine_tests device-protocol -p keytally-device -p keytally-protocol --lib
wine_tests agent -p keytally --bins
phase "test binaries"

echo "windows: $FAILED phase(s) failed, $((SECONDS - T0)) s in all"
[ "$FAILED" = 0 ]
