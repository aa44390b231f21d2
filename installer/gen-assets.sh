#!/usr/bin/env bash
# Generates the man page and shell completions the .deb ships, from the built binary's clap
# definition (`keytally manpage`, `keytally completions SHELL`), into
# $CARGO_TARGET_DIR/release/assets/ (default target/release/assets/). cargo-deb resolves the
# `target/release/...` asset paths in agent/Cargo.toml to that directory.
#
#   installer/gen-assets.sh          build the release binary (cargo build --release -p keytally),
#                                    then generate
#   installer/gen-assets.sh BINARY   generate with this binary instead of building
#
# installer/test-deb.sh runs it before `cargo deb`; run it yourself before a bare `cargo deb`.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
if [[ -n "${1:-}" ]]; then
    bin=$1
else
    (cd "$repo" && cargo build --release -p keytally --bin keytally)
    bin=$target_dir/release/keytally
fi

out=$target_dir/release/assets
mkdir -p "$out"
"$bin" manpage | gzip -9n >"$out/keytally.1.gz"
"$bin" completions bash >"$out/keytally.bash"
"$bin" completions zsh >"$out/_keytally"
"$bin" completions fish >"$out/keytally.fish"
chmod 0644 "$out/keytally.1.gz" "$out/keytally.bash" "$out/_keytally" "$out/keytally.fish"
echo "generated in $out: keytally.1.gz keytally.bash _keytally keytally.fish"
