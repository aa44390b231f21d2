#!/usr/bin/env bash
# Prepares the VM lab: Debian's kernel (apt-get download, no install) and a small initramfs
# (busybox-static + the USB gadget / HID / 9p / overlay modules + tests/vm/init).
# Idempotent; everything goes to tests/vm/.cache/ (git-ignored).
# Needs: apt-get (Debian), dpkg-deb, depmod (kmod), cpio, gzip, busybox-static.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${KEYTALLY_VM_CACHE:-$HERE/.cache}"
mkdir -p "$CACHE"
cd "$CACHE"


# 1. The kernel package named by linux-image-amd64's dependency.
PKG="${KEYTALLY_VM_KERNEL_PKG:-$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')}"
if [ -z "$PKG" ]; then
    echo "prepare.sh: cannot resolve linux-image-amd64 (run apt-get update)" >&2
    exit 1
fi
if [ ! -f kernel/.done-"$PKG" ]; then
    rm -rf kernel dl && mkdir -p dl kernel
    (cd dl && apt-get download "$PKG" >/dev/null 2>&1) || (cd dl && apt-get download "$PKG")
    dpkg-deb -x dl/"$PKG"_*.deb kernel
    rm -rf dl
    touch kernel/.done-"$PKG"
fi
KVER="$(ls kernel/lib/modules | head -n1)"
VMLINUZ="kernel/boot/vmlinuz-$KVER"
[ -f "$VMLINUZ" ] || { echo "prepare.sh: no $VMLINUZ" >&2; exit 1; }

# 2. initramfs: only the module subtrees the lab needs.
STAMP="$KVER-$(sha256sum "$HERE/init" "$HERE/prepare.sh" /bin/busybox | sha256sum | cut -c1-16)"
if [ ! -f initrd.img ] || [ "$(cat initrd.stamp 2>/dev/null)" != "$STAMP" ]; then
    rm -rf initrd && mkdir -p initrd/{bin,dev,proc,sys,host,newroot,lib/modules/"$KVER"/kernel}
    M=kernel/lib/modules/"$KVER"
    for d in drivers/usb drivers/hid drivers/virtio drivers/input net/9p fs/9p fs/fscache fs/netfs fs/overlayfs fs/configfs; do
        if [ -d "$M/kernel/$d" ]; then
            mkdir -p initrd/lib/modules/"$KVER"/kernel/"$(dirname "$d")"
            cp -a "$M/kernel/$d" initrd/lib/modules/"$KVER"/kernel/"$d"
        fi
    done
    cp "$M"/modules.order "$M"/modules.builtin* initrd/lib/modules/"$KVER"/ 2>/dev/null || true
    depmod -b initrd "$KVER"
    cp /bin/busybox initrd/bin/busybox
    for a in sh mount umount mkdir modprobe insmod cat echo sleep ls poweroff chroot ln mknod grep env sync; do
        ln -sf busybox initrd/bin/"$a"
    done
    install -m 0755 "$HERE/init" initrd/init
    (cd initrd && find . | cpio -o -H newc --quiet) | gzip -1 > initrd.img.tmp
    mv initrd.img.tmp initrd.img
    rm -rf initrd
    echo "$STAMP" > initrd.stamp
fi
ln -sf "$VMLINUZ" vmlinuz
echo "prepare.sh: kernel $KVER, initrd $(du -h initrd.img | cut -f1) in $CACHE"
