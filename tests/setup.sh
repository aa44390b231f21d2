#!/usr/bin/env bash
# Installs what keytally needs on a fresh Debian 12 machine. Idempotent: installs only what is
# missing.
#   bash tests/setup.sh --demo   what the main job (tests/demo.sh) needs: Rust, a C compiler,
#                                the -dev headers the build links against, pcscd and the vpcd
#                                virtual reader
#   bash tests/setup.sh          that, and what the test suite needs (tests/run.sh): QEMU for the
#                                VM lab, tmux, Xvfb and a panel, gnome-keyring, debootstrap,
#                                mingw, and Yubico's ykman 5.9.2 (the referee) and schemathesis
#                                in a venv at .venv
set -euo pipefail
cd "$(dirname "$0")/.."

demo_only=0
[ "${1:-}" = --demo ] && demo_only=1

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# What the main job needs: build, link, and run the virtual key on a real pcscd.
DEMO_APT_PACKAGES=(
  gcc libc6-dev pkg-config                # the C parts of dependencies (ring, SQLite)
  libpcsclite-dev                         # PC/SC (hidapi's hidraw backend is Rust: no libudev)
  pcscd vsmartcard-vpcd util-linux        # PC/SC: the real daemon, the virtual reader, unshare for its isolated lab
  python3 ca-certificates curl            # demo.sh's server check; rustup when Rust is missing
)
# What only the test suite needs.
TEST_APT_PACKAGES=(
  time                                    # GNU time for the benchmarks
  tmux                                    # drives keytally enroll as a person would
  qemu-system-x86 busybox-static kmod cpio libccid udev   # the VM lab: a real Linux USB stack
  debootstrap systemd                     # the .deb installed into a clean Debian root; systemd-analyze
  python3-venv
  xvfb xfce4-panel dbus-daemon xdotool imagemagick fonts-dejavu-core   # keytally tray: a StatusNotifier host on a virtual screen
  dbus gnome-keyring libsecret-tools      # the keyring test: a private session bus, Secret Service, secret-tool
  gcc-mingw-w64-x86-64                    # C parts of dependencies, for keytally.exe
  wixl                                    # the MSI (installer/windows/build-msi.sh)
)
packages=("${DEMO_APT_PACKAGES[@]}")
[ "$demo_only" = 1 ] || packages+=("${TEST_APT_PACKAGES[@]}")
# shellcheck disable=SC2206 # a list of package names, split on spaces
packages+=(${KEYTALLY_EXTRA_APT:-})

missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${#missing[@]} Debian package(s): ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rust: the workspace's rust-version or newer, through rustup (Debian's rustc is too old).
RUST_MIN=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null; then
  echo "setup: installing Rust (rustup, minimal profile, stable) into ~/.cargo"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y -q --profile minimal --default-toolchain stable >/dev/null
fi
have=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$RUST_MIN" "$have" | sort -V | head -n1)" != "$RUST_MIN" ]; then
  echo "setup: rustc $have is older than the $RUST_MIN this workspace needs: run 'rustup update stable'" >&2
  exit 1
fi

if [ "$demo_only" = 1 ]; then
  exit 0
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
