#!/usr/bin/env bash
# Builds keytally-VERSION-x64.msi on Linux with wixl (Debian: apt-get install wixl) from the one
# WiX source, installer/windows/keytally.wxs, and prints the MSI's path.
#
#   installer/windows/build-msi.sh [--exe PATH] [--version X.Y.Z]
#
# Without --exe it cross-builds the release keytally.exe and keytally-tray.exe (the tray's
# logon launcher) first (cargo build --release --locked --target x86_64-pc-windows-gnu -p keytally;
# CARGO_TARGET_DIR defaults to target/windows-gnu). With --exe, keytally-tray.exe is taken from
# the same folder. The MSI is written next to the exe.
#
# wixl builds a reduced MSI: the .wxs marks what wixl 0.101 cannot build with
# <?ifndef var.Wixl?> (this script defines Wixl=1), so these are NOT in it: the data folder's ACL (util:PermissionEx),
# the PATH entry (Environment), the service's KEYTALLY_STATE_DIR (multiString RegistryValue; the
# install-config custom action writes state_dir to the registry instead, and protects the data
# folder itself). The service's failure actions are in both builds: the ServiceRecovery custom
# action (keytally.exe install-config --service-recovery). wixl also ignores Secure/Hidden on properties (no SecureCustomProperties),
# HideTarget and MajorUpgrade's Schedule. For the full MSI, build the same .wxs with WiX 3's candle/light
# (see the comment at the top of keytally.wxs).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
EXE="" VERSION=""
while [ $# -gt 0 ]; do
    case "$1" in
        --exe) EXE="$2"; shift 2 ;;
        --version) VERSION="$2"; shift 2 ;;
        *) echo "usage: $0 [--exe PATH] [--version X.Y.Z]" >&2; exit 2 ;;
    esac
done
command -v wixl >/dev/null || { echo "build-msi.sh: needs wixl (apt-get install wixl)" >&2; exit 2; }

if [ -z "$EXE" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target/windows-gnu}"
    (cd "$REPO" && cargo build --release --locked --target x86_64-pc-windows-gnu -p keytally >&2)
    EXE="$CARGO_TARGET_DIR/x86_64-pc-windows-gnu/release/keytally.exe"
fi
EXE="$(realpath "$EXE")"
[ -f "$EXE" ] || { echo "build-msi.sh: no $EXE" >&2; exit 2; }
TRAY_EXE="$(dirname "$EXE")/keytally-tray.exe"
[ -f "$TRAY_EXE" ] || { echo "build-msi.sh: no $TRAY_EXE (cargo build --target x86_64-pc-windows-gnu -p keytally builds it with keytally.exe)" >&2; exit 2; }
if [ -z "$VERSION" ]; then
    VERSION="$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$REPO/Cargo.toml" | head -n1)"
fi
# An MSI ProductVersion is three numbers (a pre-release suffix cannot be one).
MSI_VERSION="${VERSION%%[-+]*}"
case "$MSI_VERSION" in
    [0-9]*.[0-9]*.[0-9]*) ;;
    *) echo "build-msi.sh: version $VERSION is not X.Y.Z" >&2; exit 2 ;;
esac

OUT="$(dirname "$EXE")/keytally-$MSI_VERSION-x64.msi"
# wixl takes no absolute File Source: stage the payload and build from there.
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
cp "$EXE" "$STAGE/keytally.exe"
cp "$TRAY_EXE" "$STAGE/keytally-tray.exe"
(cd "$STAGE" && wixl --arch x64 -D Wixl=1 -D "Version=$MSI_VERSION" -D KeytallyExe=keytally.exe -D KeytallyTrayExe=keytally-tray.exe \
    -o "$STAGE/out.msi" "$HERE/keytally.wxs" 2>"$STAGE/wixl.log") \
    || { cat "$STAGE/wixl.log" >&2; echo "build-msi.sh: wixl failed" >&2; exit 1; }
# wixl's GLib warnings name the attributes it ignored; anything else is worth seeing.
grep -v -e "has no property named '\(Platform\|Schedule\|Secure\|Hidden\|Permanent\)'" -e '^\s*$' \
    "$STAGE/wixl.log" >&2 || true
mv "$STAGE/out.msi" "$OUT"
echo "$OUT"
