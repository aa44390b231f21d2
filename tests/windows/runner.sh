#!/usr/bin/env bash
# Cargo runner for x86_64-pc-windows-gnu binaries: runs each one under Wine in the Windows lab
# (tests/windows/lab.sh; a fresh Wine prefix and pcscd with a vpcd reader per binary).
#   CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=$PWD/tests/windows/runner.sh \
#     cargo test --target x86_64-pc-windows-gnu -p keytally-device --lib
# KEYTALLY_WINE_VPCD_PORT picks the reader's port (default 35963). Needs root (see lab.sh).
exec "$(dirname "$0")/lab.sh" --vpcd-port "${KEYTALLY_WINE_VPCD_PORT:-35963}" -- wine "$@"
