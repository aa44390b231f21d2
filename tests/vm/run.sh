#!/usr/bin/env bash
# The VM lab: boots Debian's kernel under QEMU (TCG) with the host's root shared read-only,
# plugs virtual YubiKeys into dummy_hcd through keytally-gadget, and checks `keytally scan
# --json` and ykman on every key. All cases run in one boot.
#
# Prints one "ok - ..." / "FAIL - ..." line per case and ends with "N passed, M failed";
# exits non-zero on any failure or timeout.
#
# Environment:
#   KEYTALLY_BIN         keytally binary to test (default: cargo build -p keytally, then the
#                        newest of $CARGO_TARGET_DIR|target /{debug,release}/keytally)
#   KEYTALLY_GADGET_BIN  keytally-gadget binary (default: cargo build -p keytally-usb-gadget)
#   KEYTALLY_VKEY_BIN    keytally-vkey, the virtual key on vpcd (default: cargo build -p keytally-virtual-key)
#   KEYTALLY_YKMAN       ykman (default: .venv/bin/ykman, then /tmp/ykvenv/bin/ykman)
#   KEYTALLY_VM_TIMEOUT  hard limit on the whole VM in seconds (default 480)
#   KEYTALLY_VM_CASES    comma-separated phase names to run only those (debugging)
#   KEYTALLY_VM_SMP      guest CPUs (default 2)
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
cd "$REPO"
START=$(date +%s)

bash "$HERE/prepare.sh" || { echo "FAIL - vm: prepare.sh"; echo "0 passed, 1 failed"; exit 1; }
CACHE="${KEYTALLY_VM_CACHE:-$HERE/.cache}"

TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
case "$TARGET" in /*) ;; *) TARGET="$REPO/$TARGET" ;; esac
if [ -z "${KEYTALLY_GADGET_BIN:-}" ] || { [ -z "${KEYTALLY_BIN:-}" ] && [ "${KEYTALLY_VM_BUILD:-1}" = 1 ]; }; then
    pkgs=(-p keytally-usb-gadget -p keytally-sandbox -p keytally-virtual-key)
    [ -z "${KEYTALLY_BIN:-}" ] && pkgs+=(-p keytally)
    cargo build --quiet "${pkgs[@]}" || { echo "FAIL - vm: cargo build ${pkgs[*]}"; echo "0 passed, 1 failed"; exit 1; }
fi
GADGET="${KEYTALLY_GADGET_BIN:-$TARGET/debug/keytally-gadget}"
SANDBOX="${KEYTALLY_SANDBOX_BIN:-$TARGET/debug/keytally-sandbox}"
VKEY="${KEYTALLY_VKEY_BIN:-$TARGET/debug/keytally-vkey}"
KT="${KEYTALLY_BIN:-}"
if [ -z "$KT" ]; then
    KT=$(ls -t "$TARGET"/debug/keytally "$TARGET"/release/keytally 2>/dev/null | head -n1)
fi
YK="${KEYTALLY_YKMAN:-}"
if [ -z "$YK" ]; then
    for c in "$REPO/.venv/bin/ykman" /tmp/ykvenv/bin/ykman; do [ -x "$c" ] && { YK="$c"; break; }; done
fi
for b in "$KT" "$GADGET"; do
    [ -x "$b" ] || { echo "FAIL - vm: missing binary ${b:-keytally}"; echo "0 passed, 1 failed"; exit 1; }
done
abs() { (cd "$(dirname "$1")" && echo "$PWD/$(basename "$1")"); }
KT=$(abs "$KT"); GADGET=$(abs "$GADGET"); [ -n "$YK" ] && YK=$(abs "$YK")
[ -x "$SANDBOX" ] && SANDBOX=$(abs "$SANDBOX")
[ -x "$VKEY" ] && VKEY=$(abs "$VKEY")
echo "# vm: keytally=$KT gadget=$GADGET ykman=${YK:-none} (prepared in $(( $(date +%s) - START ))s)"

LOG="${KEYTALLY_VM_LOG:-$CACHE/console.log}"
APPEND="console=ttyS0 loglevel=3 panic=-1 KT_GUEST=$HERE/guest.sh KT_REPO=$REPO KT_KEYTALLY=$KT KT_GADGET=$GADGET KT_SANDBOX=$SANDBOX KT_VKEY=$VKEY"
[ -n "$YK" ] && APPEND="$APPEND KT_YKMAN=$YK"
[ -n "${KEYTALLY_VM_CASES:-}" ] && APPEND="$APPEND KT_CASES=$KEYTALLY_VM_CASES"
[ "${CI:-}" = true ] && APPEND="$APPEND KT_CI=true"

BOOT=$(date +%s)
timeout --kill-after=10 "${KEYTALLY_VM_TIMEOUT:-480}" qemu-system-x86_64 \
    -accel tcg -cpu max -m 1024 -smp "${KEYTALLY_VM_SMP:-2}" \
    -nographic -no-reboot -nic none -monitor none -serial stdio \
    -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd.img" \
    -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap \
    -append "$APPEND" </dev/null 2>&1 | tr -d '\r' | tee "$LOG" | grep --line-buffered -E '^(ok - |FAIL - |# |guest: |init: |[0-9]+ passed, [0-9]+ failed$)' | grep --line-buffered -vE '^[0-9]+ passed, [0-9]+ failed$'
qrc=${PIPESTATUS[0]}
SECS=$(( $(date +%s) - BOOT ))

summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$LOG" | tail -n1)
guest_rc=$(sed -n 's/^KT_GUEST_EXIT=//p' "$LOG" | tail -n1)
# Without the guest's summary (timeout, crash), count the lines it did print.
passed=$(grep -c '^ok - ' "$LOG"); failed=$(grep -c '^FAIL - ' "$LOG")
if [ -n "$summary" ]; then
    passed=${summary%% passed*}
    failed=${summary#*, }; failed=${failed%% failed}
fi
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
    echo "FAIL - vm: the VM hit its ${KEYTALLY_VM_TIMEOUT:-480} s limit (console: $LOG)"
    failed=$((failed + 1))
elif [ -z "$summary" ] || [ -z "$guest_rc" ]; then
    echo "FAIL - vm: the guest ended without a summary (qemu exit $qrc; console: $LOG)"
    failed=$((failed + 1))
fi
echo "# vm: boot to power-off ${SECS}s, total $(( $(date +%s) - START ))s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
