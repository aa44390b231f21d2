#!/usr/bin/env bash
# Boots a Debian root with the keytally .deb installed under its own systemd, in QEMU (TCG), and
# checks the service as systemd runs it: started at boot, user, hardening in force, pcscd and
# udev reachable, /run/keytally, the journal, a virtual key plugged in (keytally-gadget on
# dummy_hcd) read through its hidraw nodes, `systemctl stop` within seconds, exit 2 without a
# server. installer/test-deb.sh --chroot calls it with the root it installed the package into.
#
#   tests/vm/systemd-boot.sh ROOT
#
# ROOT must have systemd (/lib/systemd/systemd) and keytally installed; it is shared read-only
# over 9p under a tmpfs overlay, so the boot leaves it as it was. The kernel and the base
# initramfs are the VM lab's (tests/vm/prepare.sh); tests/vm/systemd-init becomes /init and
# tests/vm/systemd-check.sh runs the checks in the guest.
#
# Prints one "ok - ..." / "FAIL - ..." line per check and ends with "N passed, M failed"; exits
# non-zero on any failure, a missing summary or the timeout.
# Environment: KEYTALLY_BOOT_TIMEOUT (hard limit on the VM, default 240 s), KEYTALLY_VM_SMP
# (default 2), KEYTALLY_BOOT_LOG (console log, default tests/vm/.cache/systemd-console.log),
# KEYTALLY_GADGET_BIN (default: cargo build -p keytally-usb-gadget, as tests/vm/run.sh).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="${1:?usage: systemd-boot.sh ROOT}"
START=$(date +%s)
summary_fail() { echo "FAIL - systemd boot: $*"; echo "0 passed, 1 failed"; exit 1; }

[ -x "$ROOT/lib/systemd/systemd" ] || summary_fail "$ROOT has no /lib/systemd/systemd"
[ -x "$ROOT/usr/bin/keytally" ] || summary_fail "$ROOT has no /usr/bin/keytally (install the .deb first)"
bash "$HERE/prepare.sh" >/dev/null || summary_fail "tests/vm/prepare.sh"
CACHE="${KEYTALLY_VM_CACHE:-$HERE/.cache}"
# The virtual key the checks plug in (built as for the VM lab; incremental).
REPO="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
case "$TARGET" in /*) ;; *) TARGET="$REPO/$TARGET" ;; esac
GADGET="${KEYTALLY_GADGET_BIN:-$TARGET/debug/keytally-gadget}"
if [ -z "${KEYTALLY_GADGET_BIN:-}" ]; then
    (cd "$REPO" && cargo build --quiet -p keytally-usb-gadget) || summary_fail "cargo build -p keytally-usb-gadget"
fi
[ -x "$GADGET" ] || summary_fail "no keytally-gadget at $GADGET"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The lab's initramfs (busybox, modules) plus a second cpio whose /init replaces the lab's: the
# kernel unpacks concatenated archives in order, later files win.
mkdir -p "$work/extra/kt"
install -m 0755 "$HERE/systemd-init" "$work/extra/init"
install -m 0755 "$HERE/systemd-check.sh" "$work/extra/kt/systemd-check.sh"
install -m 0755 "$GADGET" "$work/extra/kt/keytally-gadget"
(cd "$work/extra" && find . | cpio -o -H newc --quiet) | gzip -1 >"$work/extra.img" || summary_fail "cpio"
cat "$CACHE/initrd.img" "$work/extra.img" >"$work/initrd.img"

LOG="${KEYTALLY_BOOT_LOG:-$CACHE/systemd-console.log}"
LIMIT="${KEYTALLY_BOOT_TIMEOUT:-240}"
# quiet + show_status=0: only the checks' lines (and kernel errors) on the serial console; no
# getty on it.
APPEND="console=ttyS0 quiet loglevel=3 panic=-1 systemd.show_status=0 systemd.mask=serial-getty@ttyS0.service systemd.mask=getty@tty1.service"
BOOT=$(date +%s)
timeout --kill-after=10 "$LIMIT" qemu-system-x86_64 \
    -accel tcg -cpu max -m 768 -smp "${KEYTALLY_VM_SMP:-2}" \
    -nographic -no-reboot -nic none -monitor none -serial stdio \
    -kernel "$CACHE/vmlinuz" -initrd "$work/initrd.img" \
    -virtfs "local,path=$ROOT,mount_tag=debroot,security_model=none,readonly=on,multidevs=remap" \
    -append "$APPEND" </dev/null 2>&1 | sed -u 's/\r$//' | tee "$LOG" \
    | grep --line-buffered -E '^(ok - |FAIL - |# |init: )'
qrc=${PIPESTATUS[0]}
SECS=$(($(date +%s) - BOOT))

summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$LOG" | tail -n1)
passed=$(grep -c '^ok - ' "$LOG")
failed=$(grep -c '^FAIL - ' "$LOG")
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
    echo "FAIL - systemd boot: the VM hit its $LIMIT s limit (console: $LOG)"
    failed=$((failed + 1))
elif [ -z "$summary" ] || ! grep -q '^KT_BOOT_DONE$' "$LOG"; then
    echo "FAIL - systemd boot: the guest ended without a summary (qemu exit $qrc; console: $LOG)"
    failed=$((failed + 1))
fi
echo "# systemd boot: boot to power-off ${SECS}s, total $(($(date +%s) - START))s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
