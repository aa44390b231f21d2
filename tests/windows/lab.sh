#!/usr/bin/env bash
# The Windows lab: Wine 10 on the real PC/SC stack.
#
#   tests/windows/lab.sh [--vpcd-port PORT] -- COMMAND [ARG…]
#
# Prepares (once, cached in tests/windows/.cache/, git-ignored) a Debian 13 trixie
# `debootstrap --variant=minbase` root with wine64 (10.0), pcscd, vsmartcard-vpcd and
# ca-certificates, plus a Wine prefix initialised once. Then, in a private mount + PID namespace:
# starts `pcscd -f --disable-polkit` inside the root with one vpcd reader listening on PORT
# (default 35963) on the host's loopback (the network namespace is the host's, so a virtual key
# or a sandbox on the host's 127.0.0.1 reach it and the other way round), and runs COMMAND
# inside the root with `wine` on the PATH, the repository at the same path as on the host,
# HOME and WINEPREFIX set (a throw-away overlay on the cached prefix), WINEDEBUG=-all and
# WINEDLLOVERRIDES="mscoree,mshtml=". The working directory is kept if it is inside the
# repository. Exit status: COMMAND's.
#
# Cleanup: everything runs inside `unshare --mount --pid --fork`, so when COMMAND ends the kernel
# undoes the mounts and kills pcscd and wineserver; on SIGINT/SIGTERM/SIGHUP lab.sh kills the
# namespace's processes first.
#
# Needs: root (chroot, mount, namespaces; CI runs as root), util-linux `unshare`, and for the
# first run `debootstrap` and network access to deb.debian.org (about 4 min, 185 MB download,
# about 2.3 GB in tests/windows/.cache/). Environment:
#   KEYTALLY_WINE_CACHE  cache directory (default tests/windows/.cache)
#   KEYTALLY_WINE_MIRROR Debian mirror (default http://deb.debian.org/debian)
#   KEYTALLY_LAB_KEEP_PREFIX=1  COMMAND writes the cached prefix itself (no overlay)
#   KEYTALLY_LAB_TRANSIENT_SERVER=1  no persistent wineserver (Wine shuts the prefix and its
#                        services down whenever no program runs, unlike a real machine)
#   WINEDEBUG / WINEDLLOVERRIDES are kept if already set.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${KEYTALLY_WINE_CACHE:-$HERE/.cache}"
ROOT="$CACHE/root"
PREFIX_IN_ROOT=/var/lib/keytally-lab/prefix
PACKAGES="wine64 wine pcscd vsmartcard-vpcd ca-certificates"
STAMP_WANT="trixie minbase $PACKAGES lab-v1"

usage() { echo "usage: $0 [--vpcd-port PORT] -- COMMAND [ARG…]" >&2; exit 2; }

PORT=35963
while [ $# -gt 0 ]; do
    case "$1" in
        --vpcd-port) [ $# -ge 2 ] || usage; PORT="$2"; shift 2 ;;
        --vpcd-port=*) PORT="${1#*=}"; shift ;;
        --) shift; break ;;
        *) usage ;;
    esac
done
[ $# -ge 1 ] || usage
case "$PORT" in ''|*[!0-9]*) echo "lab.sh: --vpcd-port must be a number" >&2; exit 2 ;; esac

if [ "$(id -u)" != 0 ]; then
    echo "lab.sh: needs root (chroot, mounts, namespaces); run it with sudo or as root in CI" >&2
    exit 2
fi

# ---- 1. The root, created once (flock: two labs started together prepare it once).
prepare() {
    mkdir -p "$CACHE"
    exec 9>"$CACHE/prepare.lock"
    flock 9
    if [ "$(cat "$ROOT/.keytally-lab-stamp" 2>/dev/null)" = "$STAMP_WANT" ]; then
        exec 9>&-
        return
    fi
    if [ "$(cat "$ROOT/.keytally-lab-root" 2>/dev/null)" != "$STAMP_WANT" ]; then
        make_root
    fi
    # The Wine prefix, initialised once (wineboot, ~20 s); every run overlays it.
    echo "lab.sh: initialising the Wine prefix (once)" >&2
    __KEYTALLY_LAB_INNER=1 KEYTALLY_LAB_KEEP_PREFIX=1 KEYTALLY_LAB_TRANSIENT_SERVER=1 \
        unshare --mount --pid --fork --kill-child --propagation private -- "$0" --vpcd-port "$PORT" -- \
        sh -c 'wine wineboot --init && wineserver -w' > "$CACHE/wineboot.log" 2>&1 9>&- \
        || { tail -n 30 "$CACHE/wineboot.log" >&2; echo "lab.sh: wineboot failed (log: $CACHE/wineboot.log)" >&2; exit 1; }
    echo "$STAMP_WANT" > "$ROOT/.keytally-lab-stamp"
    exec 9>&-
}

make_root() {
    command -v debootstrap >/dev/null || { echo "lab.sh: first run needs debootstrap (apt-get install debootstrap)" >&2; exit 2; }
    local t0=$SECONDS tmp="$CACHE/root.tmp"
    echo "lab.sh: creating the trixie root in $ROOT (once; about 4 min)" >&2
    rm -rf "$tmp" "$ROOT"
    # In its own mount namespace: debootstrap's proc/sys mounts never show on the host.
    unshare --mount --propagation private -- debootstrap --variant=minbase trixie "$tmp" "${KEYTALLY_WINE_MIRROR:-http://deb.debian.org/debian}" \
        > "$CACHE/debootstrap.log" 2>&1 \
        || { tail -n 30 "$CACHE/debootstrap.log" >&2; echo "lab.sh: debootstrap failed (log: $CACHE/debootstrap.log)" >&2; exit 1; }
    cp /etc/resolv.conf "$tmp/etc/resolv.conf" 2>/dev/null || true
    # No daemon may start during the install (it would outlive the install's namespace).
    printf '#!/bin/sh\nexit 101\n' > "$tmp/usr/sbin/policy-rc.d"
    chmod 0755 "$tmp/usr/sbin/policy-rc.d"
    # apt inside the root, in a throw-away mount namespace (proc/dev undone on exit).
    unshare --mount --propagation private -- sh -ec '
        R="$1"; shift
        mount -t proc proc "$R/proc"; mount --rbind /dev "$R/dev"; mount -t tmpfs tmpfs "$R/tmp"
        chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
            sh -ec "apt-get update -q && apt-get install -y -q --no-install-recommends $* && apt-get clean"
    ' sh "$tmp" $PACKAGES > "$CACHE/apt.log" 2>&1 \
        || { tail -n 30 "$CACHE/apt.log" >&2; echo "lab.sh: package install failed (log: $CACHE/apt.log)" >&2; exit 1; }
    mkdir -p "$tmp$PREFIX_IN_ROOT"
    echo "$STAMP_WANT" > "$tmp/.keytally-lab-root"
    mv "$tmp" "$ROOT"
    echo "lab.sh: root ready in $((SECONDS - t0)) s ($(du -sh "$ROOT" | cut -f1))" >&2
}
[ "${__KEYTALLY_LAB_INNER:-}" = 1 ] || prepare

# ---- 2. The lab itself, inside a new mount + PID namespace (the kernel cleans up).
run_inside() {
    set -euo pipefail
    mount -t proc proc "$ROOT/proc"
    mount --rbind /dev "$ROOT/dev"
    mount --rbind /sys "$ROOT/sys" 2>/dev/null || true
    mount -t tmpfs -o mode=1777 tmp "$ROOT/tmp"   # per-run scratch; vanishes with the namespace
    local tmp="$ROOT/tmp/.lab"
    mkdir -p "$tmp"
    mkdir -p "$ROOT/run/pcscd" "$ROOT$REPO"
    mount -t tmpfs run-pcscd "$ROOT/run/pcscd"
    mount --bind "$REPO" "$ROOT$REPO"
    [ -f /etc/resolv.conf ] && mount --bind /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true

    # HOME and the Wine prefix: an overlay over the cached prefix, so every run starts clean.
    mkdir -p "$ROOT/tmp/home/.wine" "$tmp/upper" "$tmp/work"
    mkdir -m 0700 "$ROOT/tmp/xdg"
    if [ "${KEYTALLY_LAB_KEEP_PREFIX:-0}" = 1 ]; then
        mount --bind "$ROOT$PREFIX_IN_ROOT" "$ROOT/tmp/home/.wine"
    else
        mount -t overlay overlay -o "lowerdir=$ROOT$PREFIX_IN_ROOT,upperdir=$tmp/upper,workdir=$tmp/work" \
            "$ROOT/tmp/home/.wine"
    fi

    # pcscd with one vpcd reader on PORT (hex, as vpcd's reader.conf wants it).
    local hexport
    hexport="$(printf '0x%X' "$PORT")"
    cat > "$ROOT/tmp/reader.conf" <<EOF
FRIENDLYNAME "Virtual PCD"
DEVICENAME   /dev/null:$hexport
LIBPATH      /usr/lib/pcsc/drivers/serial/libifdvpcd.so
CHANNELID    $hexport
EOF
    chroot "$ROOT" /usr/sbin/pcscd -f --disable-polkit -c /tmp/reader.conf > "$tmp/pcscd.log" 2>&1 &
    local pcscd=$! i
    for i in $(seq 1 100); do
        [ -S "$ROOT/run/pcscd/pcscd.comm" ] && break
        kill -0 "$pcscd" 2>/dev/null || { cat "$tmp/pcscd.log" >&2; echo "lab.sh: pcscd exited" >&2; return 1; }
        sleep 0.1
    done
    [ -S "$ROOT/run/pcscd/pcscd.comm" ] || { cat "$tmp/pcscd.log" >&2; echo "lab.sh: pcscd did not start" >&2; return 1; }

    # One Wine "machine" for the whole session: a persistent wineserver. Without it, the moment
    # no program is running (a `sleep` between two `wine sc …` calls) Wine shuts the prefix
    # down, services included (SERVICE_CONTROL_SHUTDOWN to services.exe, which exits), and the
    # next `wine` boots it again and auto-starts the services: seen as a `sc stop` answered
    # STOP_PENDING while the service was being started again, then RUNNING and deaf to it.
    # Not for the one-time wineboot (it waits for the server to exit).
    if [ "${KEYTALLY_LAB_TRANSIENT_SERVER:-0}" != 1 ]; then
        chroot "$ROOT" /usr/bin/env HOME=/tmp/home WINEPREFIX=/tmp/home/.wine /usr/lib/wine/wineserver -p
    fi

    local cwd="$PWD"
    case "$cwd" in "$REPO"|"$REPO"/*) ;; *) cwd="$REPO" ;; esac
    local rc=0
    chroot "$ROOT" /usr/bin/env \
        PATH="/usr/lib/wine:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        HOME=/tmp/home WINEPREFIX=/tmp/home/.wine XDG_RUNTIME_DIR=/tmp/xdg \
        WINEDEBUG="${WINEDEBUG:--all}" WINEDLLOVERRIDES="${WINEDLLOVERRIDES-mscoree,mshtml=}" \
        KEYTALLY_LAB_VPCD_PORT="$PORT" \
        sh -c 'cd "$1" && shift && exec "$@"' sh "$cwd" "$@" || rc=$?
    # Let Wine write its registry back before the namespace (and wineserver) is torn down.
    chroot "$ROOT" /usr/bin/env HOME=/tmp/home WINEPREFIX=/tmp/home/.wine /usr/lib/wine/wineserver -k 2>/dev/null || true
    if [ "${KEYTALLY_LAB_DEBUG:-0}" = 1 ]; then cat "$tmp/pcscd.log" >&2; fi
    return "$rc"
}

if [ "${__KEYTALLY_LAB_INNER:-}" = 1 ]; then
    unset __KEYTALLY_LAB_INNER
    run_inside "$@"
    exit $?
fi

# The namespace dies with its first process; on a signal, kill that tree (SIGKILL to the
# namespace's init takes every process in it, pcscd and wineserver included).
kill_tree() {
    local c children
    children="$(pgrep -P "$1")"
    kill -KILL "$1" 2>/dev/null || true
    for c in $children; do kill_tree "$c"; done
}
export __KEYTALLY_LAB_INNER=1
exec 3<&0   # a background job's stdin would be /dev/null: keep the caller's
unshare --mount --pid --fork --kill-child --propagation private -- "$0" --vpcd-port "$PORT" -- "$@" <&3 3<&- &
LAB=$!
exec 3<&-
trap 'disown "$LAB" 2>/dev/null; kill_tree "$LAB"; exit 130' INT
trap 'disown "$LAB" 2>/dev/null; kill_tree "$LAB"; exit 143' TERM
trap 'disown "$LAB" 2>/dev/null; kill_tree "$LAB"; exit 129' HUP
wait "$LAB"
