#!/usr/bin/env bash
# Installs what keytally's build, demo and tests need on a fresh Debian 12 machine:
# Debian packages (pcscd with the vpcd virtual reader, build headers, QEMU for the VM lab)
# and Yubico's ykman (the referee) in a venv at .venv. Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

APT_PACKAGES=(
  pcscd libpcsclite-dev vsmartcard-vpcd   # PC/SC: the real daemon and the virtual reader
  libudev-dev pkg-config                  # hidapi's hidraw backend
  util-linux time                         # unshare for the isolated pcscd lab; GNU time for benches
  tmux                                    # drives keytally enroll as a person would
  qemu-system-x86 busybox-static kmod cpio libccid udev   # the VM lab: a real Linux USB stack
  debootstrap systemd                     # the .deb installed into a clean Debian root; systemd-analyze
  python3-venv
  xvfb xfce4-panel dbus-daemon xdotool imagemagick fonts-dejavu-core   # keytally tray: a StatusNotifier host on a virtual screen
  dbus gnome-keyring libsecret-tools      # the keyring test: a private session bus, Secret Service, secret-tool
  gcc-mingw-w64-x86-64                    # C parts of dependencies, for the Windows type-check
  ${KEYTALLY_EXTRA_APT:-}
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Windows service code is type-checked in CI (it cannot run here); without the target
# (no network to rustup's server) that step says so and is skipped.
if command -v rustup >/dev/null && ! rustup target list --installed 2>/dev/null | grep -q x86_64-pc-windows-gnu; then
  rustup target add x86_64-pc-windows-gnu >/dev/null 2>&1 || echo "setup: could not add the x86_64-pc-windows-gnu target"
fi

YKMAN_VERSION=5.9.2
if ! .venv/bin/ykman --version 2>/dev/null | grep -q "$YKMAN_VERSION"; then
  echo "setup: creating .venv with yubikey-manager==$YKMAN_VERSION"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "yubikey-manager==$YKMAN_VERSION"
fi
# schemathesis checks the sandbox server against protocol/openapi.yaml.
if [ "${KEYTALLY_SETUP_SCHEMATHESIS:-1}" = 1 ] && ! .venv/bin/schemathesis --version >/dev/null 2>&1; then
  echo "setup: installing schemathesis into .venv"
  .venv/bin/pip install -q --disable-pip-version-check schemathesis
fi
echo "setup: done"
