#!/usr/bin/env bash
# The layering rules of ARCHITECTURE.md, checked from the tree. One ok/FAIL line per rule
# (tests/run.sh counts them); exits 1 when any rule is broken.
set -uo pipefail
cd "$(dirname "$0")/.."
fail=0
check() { # NAME, then the offending lines on stdin: none = ok
  local name=$1 found
  found=$(cat)
  if [ -z "$found" ]; then
    echo "ok    layering: $name"
  else
    echo "FAIL  layering: $name"
    printf '%s\n' "$found" | sed 's/^/        /'
    fail=1
  fi
}

# Rust `use` paths, one per line, with the file they are in (multi-line `use` lists joined).
uses() { # DIR...
  for f in $(find "$@" -name '*.rs' | sort); do
    awk -v f="$f" '
      /^[[:space:]]*(pub(\([a-z]+\))? )?use / { s = $0; while (s !~ /;/ && (getline l) > 0) s = s " " l; print f ": " s }
    ' "$f"
  done
}

uses agent/src | grep -v '^agent/src/commands/' | grep -v '^agent/src/main.rs:' | grep -v '^agent/src/cli.rs:' \
  | grep -E 'crate::commands' | check "no library module of the agent imports a command"

for f in agent/src/commands/*.rs; do
  name=$(basename "$f" .rs)
  [ "$name" = mod ] && continue
  uses "$f" | grep -E 'crate::commands|super::[a-z_]+' | grep -vE "super::super" || true
done | check "no command imports another command"

uses device/src/transport | grep -E 'crate::(identify|enumerate|management|advisory)' \
  | check "no transport imports identification, management or enumeration"

uses protocol/src/auth | grep -E 'crate::devices' | check "protocol's auth does not import the devices API"
uses protocol/src/devices.rs | grep -E 'crate::auth' | check "protocol's devices API does not import auth"
uses protocol/src/http | grep -E 'crate::(auth|devices)' | check "protocol's http plumbing imports neither auth nor devices"

# The record is typed until the outbox serializes it: no JSON edits of records by key.
grep -rnE 'pointer_mut|as_object_mut|\.insert\("(lastUsed|tappedAt|owners|observation|suggested)"|\["(lastUsed|tappedAt|owners|observation)"\][^;]* = ' agent/src --include='*.rs' \
  | grep -v '^agent/src/outbox.rs:' | check "the record is not edited as JSON outside the outbox's serialization"

# ARCHITECTURE.md names files that exist (every path in backquotes that starts with a crate folder).
grep -oE '`(agent|device|protocol|tests|installer|udev)/[A-Za-z0-9_./-]*`' ARCHITECTURE.md | tr -d '`' | sort -u \
  | while read -r p; do [ -e "$p" ] || echo "$p"; done | check "every path ARCHITECTURE.md names exists"

# Every public item of device and protocol is documented.
if out=$(RUSTDOCFLAGS="-W missing_docs" cargo doc --locked -q --no-deps -p keytally-device -p keytally-protocol 2>&1); then
  printf '%s\n' "$out" | grep -E 'missing documentation' | check "cargo doc: no missing docs in device and protocol"
else
  printf 'cargo doc failed:\n%s\n' "$out" | check "cargo doc: no missing docs in device and protocol"
fi
exit "$fail"
