#!/bin/sh
# Runs inside the lab's guest, chrooted into the overlay of the host's root (see init).
# KT_* variables come from the kernel command line (run.sh).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
[ "${KT_CI:-}" = true ] && export CI=true
export KT_KEYTALLY KT_GADGET KT_YKMAN KT_CASES KT_REPO KT_SANDBOX KT_VKEY
PY=python3
# Run the case runner under ykman's own interpreter so ykman can be called in-process.
if [ -n "${KT_YKMAN:-}" ] && [ -x "$(dirname "$KT_YKMAN")/python3" ]; then
    PY="$(dirname "$KT_YKMAN")/python3"
fi
echo "guest: $(uname -r), $(nproc) CPU(s), python $PY"
"$PY" "${KT_REPO:?}/tests/vm/lab.py"
rc=$?
echo "guest: lab exited with $rc"
echo "KT_GUEST_EXIT=$rc"
