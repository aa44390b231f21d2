#!/bin/bash
# The checks of tests/vm/systemd-boot.sh, run inside the booted Debian root by
# keytally-boot-check.service (written by tests/vm/systemd-init) after keytally.service was
# started at boot. Prints "ok - ..." / "FAIL - ..." per check and "N passed, M failed", then
# powers the machine off. Every wait has a limit.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
passed=0
failed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
bad() { echo "FAIL - $*"; failed=$((failed + 1)); }
journal() { journalctl -b -u keytally.service --no-pager -o cat 2>/dev/null; }
# wait_for SECONDS COMMAND...: true once COMMAND succeeds, false after SECONDS.
wait_for() {
    local end=$(($(date +%s) + $1)); shift
    until "$@"; do
        (($(date +%s) >= end)) && return 1
        sleep 0.2
    done
}
started() { systemctl is-active --quiet keytally.service && journal | grep -q 'keytally service started'; }

echo "# boot: $(uname -r), systemd $(systemctl --version | awk 'NR == 1 {print $2}')"

# 1. Started at boot, by the package's enablement, as the keytally user.
if wait_for 60 started; then
    ok "keytally.service is active after boot, and its journal has keytally's 'keytally service started'"
else
    bad "keytally.service is $(systemctl is-active keytally.service) after 60 s: $(journal | tail -n 5 | tr '\n' '|')"
fi
pid=$(systemctl show -p MainPID --value keytally.service)
user=$(systemctl show -p User --value keytally.service)
[ "$user" = keytally ] && ok "systemctl show: User=keytally" || bad "systemctl show: User=$user"
if [ "${pid:-0}" -gt 0 ] && [ -r "/proc/$pid/status" ]; then
    ok "systemctl show: MainPID=$pid"
    status=/proc/$pid/status
    uid=$(id -u keytally) gid=$(id -g keytally)
    read -r _ ruid euid _ < <(grep '^Uid:' "$status")
    read -r _ rgid egid _ < <(grep '^Gid:' "$status")
    [ "$ruid:$euid:$rgid:$egid" = "$uid:$uid:$gid:$gid" ] && ok "the process runs as keytally:keytally (uid $uid, gid $gid)" \
        || bad "the process runs as uid $ruid/$euid gid $rgid/$egid, want $uid/$gid"
    [ "$(readlink "/proc/$pid/exe")" = /usr/bin/keytally ] && ok "the process is /usr/bin/keytally" || bad "the process is $(readlink "/proc/$pid/exe")"
    # The hardening is in force on the live process.
    grep -q '^CapBnd:[[:space:]]*0000000000000000$' "$status" && grep -q '^CapEff:[[:space:]]*0000000000000000$' "$status" \
        && ok "no capabilities (CapBnd and CapEff are 0)" || bad "capabilities: $(grep '^Cap' "$status" | tr '\n' ' ')"
    grep -q '^NoNewPrivs:[[:space:]]*1$' "$status" && grep -q '^Seccomp:[[:space:]]*2$' "$status" \
        && ok "NoNewPrivs=1 and a seccomp filter (Seccomp: 2)" || bad "$(grep -e '^NoNewPrivs' -e '^Seccomp:' "$status" | tr '\n' ' ')"
else
    bad "systemctl show: MainPID=${pid:-?} (no such process)"
fi
[ "$(stat -c '%F %a %U:%G' /run/keytally 2>/dev/null)" = "directory 755 keytally:keytally" ] \
    && ok "/run/keytally (RuntimeDirectory=) is a directory, 0755 keytally:keytally" \
    || bad "/run/keytally: $(stat -c '%F %a %U:%G' /run/keytally 2>&1)"
[ "$(stat -c '%a %U:%G' /var/lib/keytally 2>/dev/null)" = "750 keytally:keytally" ] \
    && ok "/var/lib/keytally is 0750 keytally:keytally" || bad "/var/lib/keytally: $(stat -c '%a %U:%G' /var/lib/keytally 2>&1)"

# 2. It works under the hardening: pcscd over AF_UNIX (socket-activated), udev hot-plug over
# AF_NETLINK, its state under /var/lib/keytally (the outbox holds the records it could not push).
sleep 3
if journal | grep -q 'PC/SC is not available'; then bad "pcscd: $(journal | grep 'PC/SC is not available' | head -n1)"; else ok "pcscd answered the service (no 'PC/SC is not available' in its journal)"; fi
systemctl is-active --quiet pcscd.service && ok "pcscd.service was started by pcscd.socket" || bad "pcscd.service is $(systemctl is-active pcscd.service)"
if journal | grep -q 'no USB hot-plug events'; then bad "USB hot-plug: $(journal | grep 'no USB hot-plug events' | head -n1)"; else ok "USB hot-plug watch started (AF_NETLINK allowed)"; fi
[ -s /var/lib/keytally/agent-id ] && ok "the agent id was written to /var/lib/keytally" || bad "no /var/lib/keytally/agent-id: $(ls -la /var/lib/keytally 2>&1 | tr '\n' '|')"
bad_lines=$(journal | grep -i -e 'operation not permitted' -e 'permission denied' -e 'bad system call' -e 'read-only file system' -e panicked)
[ -z "$bad_lines" ] && ok "no EPERM, EACCES, EROFS, SIGSYS or panic in the service's journal" || bad "journal: $(head -n 3 <<<"$bad_lines" | tr '\n' '|')"

# 3. A key (a YubiKey 5C NFC: OTP+FIDO, no CCID) plugged in: the package's udev rules give its
# hidraw nodes to group keytally, and the service reads the key through them under the hardening.
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
serial=$(keytally-gadget --describe --model yk5cnfc --pid 0x0403 | sed -n 's/.*"serial":"\([0-9]*\)".*/\1/p')
keytally-gadget --model yk5cnfc --pid 0x0403 --udc dummy_udc.0 >/run/keytally-gadget.log 2>&1 &
gadget=$!
# The plugged-in key goes away (the gadget removes itself on SIGTERM).
unplug() {
    kill -TERM "$gadget" 2>/dev/null
    timeout 10 tail --pid="$gadget" -f /dev/null || kill -KILL "$gadget" 2>/dev/null
}
hidraw_nodes() { ls /dev/hidraw* 2>/dev/null; }
two_nodes_keytally() { [ "$(stat -c '%a %G' $(hidraw_nodes) 2>/dev/null | grep -c '^660 keytally$')" = 2 ]; }
if wait_for 30 two_nodes_keytally; then
    ok "udev: the key's two hidraw nodes (OTP, FIDO) are 0660 group keytally"
else
    bad "udev: hidraw nodes: $(stat -c '%n %a %U:%G' $(hidraw_nodes) 2>&1 | tr '\n' ' ') gadget: $(tail -n 3 /run/keytally-gadget.log | tr '\n' '|')"
fi
# The running service reads it: the hot-plug rescan can run before udev has set the nodes'
# group ("access denied"), so it scans again 1, 2 and 4 s later.
hot_attached() { journal | grep -q "key attached.*$serial"; }
if [ -n "$serial" ] && wait_for 20 hot_attached; then
    ok "the running service read the key when it was plugged in (serial $serial)"
else
    bad "the running service did not read the hot-plugged key within 20 s: $(journal | grep -m1 -i 'access denied')"
fi
# Asserted: started with the key present, the service reads it through /dev/hidraw*.
systemctl restart keytally.service
pid=$(systemctl show -p MainPID --value keytally.service)
attached() { journalctl -b _PID="$pid" --no-pager -o cat 2>/dev/null | grep -q "key attached.*$serial"; }
if [ -n "$serial" ] && [ "${pid:-0}" -gt 0 ] && wait_for 60 attached; then
    ok "restarted with the key plugged in, the service read it (serial $serial) through hidraw: 'key attached'"
else
    bad "restarted with the key plugged in, no 'key attached' for serial ${serial:-?} within 60 s: $(journalctl -b _PID="${pid:-0}" --no-pager -o cat 2>/dev/null | tail -n 4 | tr '\n' '|')"
fi
denied=$(journalctl -b _PID="${pid:-0}" --no-pager -o cat 2>/dev/null | grep -i -e 'access denied' -e 'permission denied' -e 'operation not permitted')
[ -z "$denied" ] && ok "no access denied in the journal of the restarted service" || bad "journal: $(head -n 3 <<<"$denied" | tr '\n' '|')"
# The control socket the agent makes in its RuntimeDirectory answers (keytally doctor's
# service check, run as root, which the socket lets in).
[ -S /run/keytally/control.sock ] && ok "/run/keytally/control.sock is a socket" || bad "/run/keytally: $(ls -la /run/keytally 2>&1 | tr '\n' '|')"
service_line=$(timeout 60 keytally --config /etc/keytally/config.toml doctor 2>&1 | grep -E '^[A-Za-z]+ +service' | head -n1)
grep -qE '^ok +service: running: 1 key\(s\) attached' <<<"$service_line" \
    && ok "keytally doctor over the control socket: $(sed 's/^ok *//' <<<"$service_line")" || bad "keytally doctor: '${service_line:-no service line}'"

# 3b. A USB CCID key (a YubiKey 5 NFC with only its CCID interface, 0x0404) in place of the
# first: pcscd (libccid) gives it a reader of its own, and the running service reads it through
# that reader and pushes it as its read ends, carrying the key's USB port (the early push of
# issue 12: its "key attached" line names the port, where a key that waits for the whole scan
# has no place in that line).
unplug
ccid_serial=$(keytally-gadget --describe --model yk5nfc --pid 0x0404 | sed -n 's/.*"serial":"\([0-9]*\)".*/\1/p')
keytally-gadget --model yk5nfc --pid 0x0404 --udc dummy_udc.0 >/run/keytally-gadget-ccid.log 2>&1 &
gadget=$!
# The key's port as the kernel names it (the sysfs device whose idProduct is 0404).
ccid_port() {
    local d
    for d in /sys/bus/usb/devices/*; do
        [ "$(cat "$d/idVendor" 2>/dev/null):$(cat "$d/idProduct" 2>/dev/null)" = 1050:0404 ] && { basename "$d"; return 0; }
    done
    return 1
}
wait_for 30 ccid_port >/dev/null
port=$(ccid_port)
ccid_attached() { journalctl -b _PID="$pid" --no-pager -o cat 2>/dev/null | grep "key attached" | grep -q "$ccid_serial"; }
if [ -n "$ccid_serial" ] && [ -n "$port" ] && wait_for 30 ccid_attached; then
    line=$(journalctl -b _PID="$pid" --no-pager -o cat 2>/dev/null | grep "key attached" | grep -m1 "$ccid_serial")
    if grep -Eq "place=\"?$port\"?( |$)" <<<"$line"; then
        ok "a USB CCID key plugged in was read through pcscd's reader for it and handed to the push as its read ended, with its USB port ($port): $line"
    else
        bad "the USB CCID key's 'key attached' line does not carry its port $port: $line"
    fi
else
    bad "no 'key attached' for the USB CCID key (serial ${ccid_serial:-?}, port ${port:-none}) within 30 s: $(journalctl -b _PID="${pid:-0}" --no-pager -o cat 2>/dev/null | tail -n 4 | tr '\n' '|') gadget: $(tail -n 3 /run/keytally-gadget-ccid.log | tr '\n' '|')"
fi

# 4. systemctl stop (the key still plugged in): SIGTERM, the agent flushes within its push
# timeout (2 s) and exits 0.
t0=$(date +%s%N)
timeout 30 systemctl stop keytally.service
ms=$((($(date +%s%N) - t0) / 1000000))
((ms < 5000)) && ok "systemctl stop keytally finished in $ms ms (< 5000)" || bad "systemctl stop keytally took $ms ms"
result=$(systemctl show -p Result --value keytally.service) code=$(systemctl show -p ExecMainStatus --value keytally.service)
[ "$(systemctl is-active keytally.service)" = inactive ] && [ "$result" = success ] && [ "$code" = 0 ] \
    && ok "after stop: inactive, Result=success, exit status 0" \
    || bad "after stop: $(systemctl is-active keytally.service), Result=$result, exit status $code"

# The key goes away.
unplug

# 5. No server configured: exit 2 and no restart loop (RestartPreventExitStatus=2).
echo 'state_dir = "/var/lib/keytally"' >/etc/keytally/config.toml
systemctl start keytally.service
failed_2() { [ "$(systemctl is-active keytally.service)" = failed ]; }
if wait_for 20 failed_2; then
    sleep 6 # RestartSec=5: a restart would have happened by now
    code=$(systemctl show -p ExecMainStatus --value keytally.service) n=$(systemctl show -p NRestarts --value keytally.service)
    [ "$code" = 2 ] && [ "$n" = 0 ] && [ "$(systemctl is-active keytally.service)" = failed ] \
        && ok "without a server profile: exit status 2, failed, not restarted" \
        || bad "without a server profile: exit status $code, $n restart(s), $(systemctl is-active keytally.service)"
else
    bad "without a server profile: still $(systemctl is-active keytally.service) after 20 s"
fi

echo "$passed passed, $failed failed"
echo "KT_BOOT_DONE"
systemctl --no-block poweroff
