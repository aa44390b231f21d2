#!/usr/bin/env python3
"""The VM lab's case runner. Runs inside the QEMU guest (root, no udevd), after init has
chrooted into the overlay of the host's root. Plugs virtual YubiKeys (keytally-gadget on
dummy_udc.0..2), starts pcscd after plugging (it has no hot-plug without udevd), runs
`keytally scan --json` and Yubico's ykman, and checks every record field by field.

Prints one `ok - NAME` or `FAIL - NAME: why` line per case, then `N passed, M failed`.

ykman runs in this very interpreter (its own CLI entry point, `ykman._cli.__main__.main`,
called once per command line) when this script runs under ykman's venv: one Python start-up
instead of one per command, which matters under TCG where each start-up costs ~10 s.
"""

import contextlib
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

ENV = os.environ
KEYTALLY = ENV["KT_KEYTALLY"]
GADGET = ENV["KT_GADGET"]
YKMAN = ENV.get("KT_YKMAN", "")
RUN = "/run/keytally-lab"
CI = ENV.get("CI", "") == "true"
ONLY = ENV.get("KT_CASES", "")  # comma-separated phase names, for debugging

results = []  # (ok, name, why)
T0 = time.monotonic()


def log(msg):
    print(f"# [{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def report(ok, name, why=""):
    results.append((ok, name, why))
    if ok:
        print(f"ok - {name}", flush=True)
    else:
        first, *rest = (why or "").splitlines() or [""]
        print(f"FAIL - {name}: {first}", flush=True)
        for line in rest:  # continuation lines stay visible through run.sh's filter
            print(f"#     {line}", flush=True)


def stop_process(proc):
    """SIGTERM, then SIGKILL if it has not ended within 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sh(cmd, timeout=60, env=None, user=None):
    """Runs a command; returns (rc, stdout, stderr, seconds). rc 124 = timeout."""
    t = time.monotonic()
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"] + cmd
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        return p.returncode, p.stdout, p.stderr, time.monotonic() - t
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        return 124, out, err, time.monotonic() - t


# --------------------------------------------------------------------------------------------
# Keys


class Key:
    def __init__(self, label, model, pid, udc, serial=None, unplug_after=None, hid_fault=None,
                 posture=None, ykman_shows=(), nfc_restricted=False, count=False, posture_want=None):
        self.label, self.model, self.pid, self.udc = label, model, pid, udc
        self.serial_arg, self.unplug_after, self.hid_fault = serial, unplug_after, hid_fault
        # posture: keytally-gadget --posture SPEC; ykman_shows: (command, label, value) that
        # `ykman --device SERIAL COMMAND info` must print for it; posture_want: the
        # `observation.posture` fields `keytally scan --posture` must report (the others null).
        self.ykman_shows = ykman_shows
        self.posture_want = posture_want
        args = ["--model", model, "--pid", f"0x{pid:04x}"]
        if serial is not None:
            args += ["--serial", serial]
        if posture is not None:
            args += ["--posture", posture]
        if nfc_restricted:
            args += ["--nfc-restricted"]
        self.args = args
        rc, out, err, _ = sh([GADGET, "--describe"] + args)
        if rc != 0:
            raise RuntimeError(f"keytally-gadget --describe failed: {err}")
        self.expect = json.loads(out)
        self.proc = None
        self.port = None
        # count: the gadget keeps its running transfer counts in this file (--count-file).
        self.count_path = f"{RUN}/{label}.count" if count else None

    def start(self):
        os.makedirs(RUN, exist_ok=True)
        self.logf = open(f"{RUN}/{self.label}.log", "w")
        extra = ["--unplug-after", self.unplug_after] if self.unplug_after else []
        extra += ["--hid-fault", self.hid_fault] if self.hid_fault else []
        extra += ["--count-file", self.count_path] if self.count_path else []
        self.proc = subprocess.Popen(
            [GADGET] + self.args + ["--udc", f"dummy_udc.{self.udc}"] + extra,
            stdout=self.logf, stderr=self.logf)

    def sysfs(self):
        """The USB device's sysfs directory on this key's dummy_hcd bus, or None."""
        base = "/sys/bus/usb/devices"
        for d in os.listdir(base):
            if ":" in d or d.startswith("usb"):
                continue
            p = os.path.join(base, d)
            if f"dummy_hcd.{self.udc}/" in os.path.realpath(p) and os.path.exists(p + "/idVendor"):
                return p
        return None

    def hidraws(self):
        dev = self.sysfs()
        if not dev:
            return []
        out = []
        for root, dirs, _ in os.walk(os.path.realpath(dev)):
            if os.path.basename(root) == "hidraw":
                out += dirs
        return sorted(out)

    def ready(self):
        dev = self.sysfs()
        if not dev:
            return False
        self.port = os.path.basename(dev)
        hid = bin(self.expect["interfaces"] & 3).count("1")
        return len(self.hidraws()) >= hid

    def wait(self, present=True, timeout=30):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc and self.proc.poll() is not None:
                return False
            if (self.ready() if present else self.sysfs() is None):
                return True
            time.sleep(0.1)
        return False

    def transfers(self):
        """The gadget's running counts: (APDUs, OTP feature reports, CTAPHID packets)."""
        time.sleep(0.2)  # the gadget rewrites the file within 20 ms of a change
        try:
            with open(self.count_path) as f:
                return tuple(int(n) for n in f.read().split())
        except (OSError, ValueError):
            return (0, 0, 0)

    def unplug(self):
        self.proc.send_signal(signal.SIGUSR1)

    def stop(self):
        if self.proc:
            stop_process(self.proc)
            self.logf.close()

    def gadget_log(self):
        try:
            with open(f"{RUN}/{self.label}.log") as f:
                return f.read()
        except OSError:
            return ""


class Pcscd:
    def __init__(self):
        os.makedirs("/run/pcscd", exist_ok=True)
        self.logf = open(f"{RUN}/pcscd.log", "a")
        self.proc = subprocess.Popen(["pcscd", "-f"], stdout=self.logf, stderr=self.logf)

    def wait_readers(self, n, timeout=30):
        """Waits until pcscd lists n "Yubico YubiKey" readers (through pyscard, which ykman's
        venv has), or, without pyscard, for its socket and a settle time."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and not os.path.exists("/run/pcscd/pcscd.comm"):
            time.sleep(0.1)
        try:
            from smartcard.System import readers  # noqa: WPS433
        except ImportError:
            time.sleep(1.0 + 0.5 * n)
            return
        names = []
        while time.monotonic() < end:
            try:
                names = [str(r) for r in readers() if "yubico yubikey" in str(r).lower()]
            except Exception:  # noqa: BLE001  (pcscd not answering yet)
                names = []
            if len(names) >= n:
                break
            time.sleep(0.2)
        log(f"pcscd readers: {names}")
        time.sleep(0.3)  # libccid's first IccPowerOn

    def stop(self):
        stop_process(self.proc)
        self.logf.close()


# --------------------------------------------------------------------------------------------
# keytally and ykman

def keytally_scan(user=None, timeout=60, options=()):
    """`keytally [OPTIONS] scan --json`: (rc, records or None when stdout is not JSON, stderr, seconds)."""
    env = dict(ENV)
    if user is not None:
        env["HOME"] = f"/tmp/home-{user}"
        os.makedirs(env["HOME"], exist_ok=True)
        os.chown(env["HOME"], user, user)
    env.setdefault("HOME", "/root")
    rc, out, err, secs = sh([KEYTALLY, *options, "scan", "--json"], timeout=timeout, env=env, user=user)
    try:
        records = json.loads(out) if out.strip() else []
    except ValueError as e:
        records = None
        err += f"\n(unparseable JSON: {e}: {out[:300]!r})"
    return rc, records, err, secs


_ykman_main = None


def ykman(args):
    """Runs ykman with args; returns (rc, stdout, stderr)."""
    global _ykman_main
    if _ykman_main is None:
        try:
            from ykman._cli.__main__ import main as m  # noqa: WPS433
            _ykman_main = m
        except ImportError:
            _ykman_main = False
    if not _ykman_main:
        if not YKMAN:
            return 127, "", "ykman not available"
        rc, out, err, _ = sh([YKMAN] + args, timeout=120)
        return rc, out, err
    out, err = io.StringIO(), io.StringIO()
    saved_argv, rc = sys.argv, 0
    root = logging.getLogger()
    handlers = list(root.handlers)
    sys.argv = ["ykman"] + list(args)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                _ykman_main()
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception as e:  # noqa: BLE001
        rc = 1
        err.write(f"{type(e).__name__}: {e}")
    finally:
        sys.argv = saved_argv
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
    return rc, out.getvalue(), err.getvalue()


def parse_info(text):
    fields, apps, table = {}, {}, False
    for line in text.splitlines():
        if line.startswith("Applications"):
            table = True
            continue
        if table:
            cols = [c.strip() for c in line.split("\t")]
            if len(cols) >= 2 and cols[0]:
                apps[cols[0]] = cols[1:]
        elif ": " in line:
            k, v = line.split(": ", 1)
            fields[k] = v.strip()
    return fields, apps


FORM_FACTORS = [None, "Keychain (USB-A)", "Nano (USB-A)", "Keychain (USB-C)", "Nano (USB-C)",
                "Keychain (USB-C, Lightning)", "Bio (USB-A)", "Bio (USB-C)"]
APP_BITS = {"Yubico OTP": 0x01, "FIDO U2F": 0x02, "OpenPGP": 0x08, "PIV": 0x10, "OATH": 0x20,
            "YubiHSM Auth": 0x100, "FIDO2": 0x200}


def bits(mask):
    return [1 << i for i in range(16) if mask and mask & (1 << i)]


# --------------------------------------------------------------------------------------------
# Checks


def check_record(key, r):
    """Field-by-field check of one keytally record against the key's model. Returns problems."""
    e, p = key.expect, []
    y = r.get("yubikey", {})
    m = y.get("model", {})
    o = r.get("observation") or {}

    def eq(what, got, want):
        if got != want:
            p.append(f"{what}: got {got!r}, want {want!r}")

    eq("yubikey.name", y.get("name"), e["name"])
    eq("model.name", m.get("name"), e["name"])
    eq("serialNumber", y.get("serialNumber"), e["serial"])
    eq("firmwareVersion", y.get("firmwareVersion"), e["firmware"])
    eq("model.formFactor", m.get("formFactor"), e["formFactor"])
    uid = y.get("uniqueId")
    if not uid:
        p.append("uniqueId is empty")
    elif e["serial"] and uid != e["serial"]:
        p.append(f"uniqueId {uid!r} is not the serial")
    eq("observation.transport", o.get("transport"), "usb")
    # NFC: tag 0x0D, or a NEO (fw 3.x, whose info ykman and keytally synthesize with NFC).
    nfc = e["nfcSupported"] is not None or e["firmware"].startswith("3.")
    eq("model.interfaces", m.get("interfaces"), [1 | (2 if nfc else 0)])
    usb = m.get("usbCapabilities")
    if usb is not None and e["usbSupported"] and not (e["firmware"].startswith("3.")):
        eq("model.usbCapabilities", sorted(usb), bits(e["usbSupported"]))
    for k in ("code", "orgCode"):
        if y.get(k) is not None:
            p.append(f"yubikey.{k} must stay null")
    return p


def check_against_ykman(key, r, info_text):
    p = []
    fields, apps = parse_info(info_text)
    y = r.get("yubikey", {})
    m = y.get("model", {})
    o = r.get("observation") or {}

    def eq(what, got, want):
        if got != want:
            p.append(f"{what}: ykman {got!r}, keytally {want!r}")

    eq("Device type", fields.get("Device type"), y.get("name"))
    eq("Serial number", fields.get("Serial number"), y.get("serialNumber"))
    eq("Firmware version", fields.get("Firmware version"), o.get("versionName") or y.get("firmwareVersion"))
    ff = m.get("formFactor") or 0
    eq("Form factor", fields.get("Form factor"), FORM_FACTORS[ff] if 0 < ff < len(FORM_FACTORS) else None)
    usb, en = m.get("usbCapabilities") or [], y.get("enabledUSBCapabilities") or []
    if not apps:
        p.append("ykman printed no application table")
    for app, cols in apps.items():
        bit = APP_BITS.get(app)
        if bit is None:
            continue
        want = "Not available" if bit not in usb else ("Enabled" if bit in en else "Disabled")
        eq(f"{app} over USB", cols[0], want)
    return p


def match_records(keys, records):
    """Pairs keys with records: by serial, then serial-less keys by name in order."""
    pairs, used = {}, set()
    for k in keys:
        if k.expect["serial"]:
            for i, r in enumerate(records):
                if i not in used and r.get("yubikey", {}).get("serialNumber") == k.expect["serial"]:
                    pairs[k.label] = r
                    used.add(i)
                    break
    for k in keys:
        if not k.expect["serial"]:
            for i, r in enumerate(records):
                y = r.get("yubikey", {})
                if i not in used and y.get("serialNumber") is None and y.get("name") == k.expect["name"]:
                    pairs[k.label] = r
                    used.add(i)
                    break
    return pairs


def ykman_list_line(k):
    e = k.expect
    return f"{e['name']} ({e['firmware']})"


# --------------------------------------------------------------------------------------------
# Phases


def plug(keys):
    for k in keys:
        k.start()
    bad = [k for k in keys if not k.wait(True)]
    for k in bad:
        rc = k.proc.poll() if k.proc else None
        dmesg = subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()[-15:]
        report(False, f"{k.label}: plugged in", f"did not enumerate (gadget exit {rc}); gadget log:\n"
               f"{k.gadget_log()}\ndmesg:\n" + "\n".join(dmesg))
    return not bad


def scan_and_check(phase, keys, with_ykman=True):
    rc, records, err, secs = keytally_scan()
    log(f"{phase}: keytally scan --json exit {rc} in {secs:.1f}s, {len(records or [])} records")
    if records is None or rc == 124:
        report(False, f"{phase}: keytally scan --json", f"exit {rc}; stderr: {err.strip()[:500]}")
        records = records or []
    else:
        report(rc == 0, f"{phase}: keytally scan --json exits 0 ({secs:.1f}s)", f"exit {rc}; stderr: {err.strip()[:500]}")
    n = len(keys)
    report(len(records) == n, f"{phase}: one record per physical key ({n})",
           f"{len(records)} records: {[r.get('yubikey', {}).get('name') for r in records]}; stderr: {err.strip()[:300]}")
    uids = [r.get("yubikey", {}).get("uniqueId") for r in records]
    report(len(set(uids)) == len(uids) and all(uids), f"{phase}: distinct, non-empty uniqueIds", f"{uids}")
    pairs = match_records(keys, records)
    for k in keys:
        r = pairs.get(k.label)
        name = f"{phase}: keytally reads {k.label} ({k.model} as 1050:{k.pid:04x})"
        if r is None:
            report(False, name, f"no record; stderr: {err.strip()[:300]}")
            continue
        probs = check_record(k, r)
        report(not probs, name, "; ".join(probs))
    if not with_ykman:
        return pairs
    t = time.monotonic()
    lrc, lout, lerr = ykman(["list"])
    log(f"{phase}: ykman list in {time.monotonic() - t:.1f}s:\n" + "\n".join("#   " + l for l in lout.splitlines()))
    if lrc == 127 and not CI:
        print(f"# SKIP: ykman not available ({phase})")
        return pairs
    seen = {}
    for k in keys:
        want = ykman_list_line(k)
        iface = "+".join(n for b, n in ((1, "OTP"), (2, "FIDO"), (4, "CCID")) if k.expect["interfaces"] & b)
        serial = f"Serial: {k.expect['serial']}" if k.expect["serial"] else None
        lines = [l for l in lout.splitlines()
                 if l.startswith(want) and f"[{iface}]" in l and (serial is None or l.endswith(serial))]
        twin = (want, iface, serial) in seen
        seen[(want, iface, serial)] = seen.get((want, iface, serial), 0) + 1
        if twin:
            # ykman merges identical serial-less keys into one (reference §1.4, item 5).
            print(f"# note: ykman list shows {len(lines)} line(s) for {seen[(want, iface, serial)]} identical "
                  f"serial-less keys ({want} [{iface}]); keytally must not merge them", flush=True)
            continue
        report(bool(lines), f"{phase}: ykman list shows {k.label}", f"want {want} [{iface}] {serial or ''}; got:\n{lout}{lerr}")
        if not k.expect["serial"]:
            continue
        t = time.monotonic()
        irc, iout, ierr = ykman(["--device", k.expect["serial"], "info"])
        log(f"{phase}: ykman --device {k.expect['serial']} info: exit {irc} in {time.monotonic() - t:.1f}s")
        r = pairs.get(k.label)
        name = f"{phase}: ykman --device {k.expect['serial']} info agrees with keytally on {k.label}"
        if irc != 0:
            report(False, name, f"ykman exit {irc}: {ierr.strip()[:300]}")
        elif r is None:
            report(False, name, "keytally has no record")
        else:
            probs = check_against_ykman(k, r, iout)
            report(not probs, name, "; ".join(probs) + ("\n" + iout if probs else ""))
    return pairs


PCSCD = [None]


def restart_pcscd(readers):
    """pcscd only scans the bus when it starts (no udevd): restart it after re-plugging."""
    if PCSCD[0]:
        PCSCD[0].stop()
    PCSCD[0] = Pcscd()
    PCSCD[0].wait_readers(readers)


def phase(name, keys, body):
    if ONLY and name not in ONLY.split(","):
        return
    log(f"== {name}: " + ", ".join(f"{k.label}={k.model}@{k.pid:04x}/udc{k.udc}" for k in keys))
    try:
        if plug(keys):
            restart_pcscd(sum(1 for k in keys if k.expect["interfaces"] & 4))
            body(name, keys)
    except Exception as e:  # noqa: BLE001
        report(False, f"{name}: ran", f"{type(e).__name__}: {e}")
    finally:
        if PCSCD[0]:
            PCSCD[0].stop()
            PCSCD[0] = None
        for k in keys:
            k.stop()
            rc = k.proc.returncode if k.proc else 0
            if rc != 0:
                report(False, f"{name}: gadget {k.label} exits cleanly", f"exit {rc}; log:\n{k.gadget_log()}")
        for k in keys:
            k.wait(False, 10)


def models_body(name, keys):
    scan_and_check(name, keys)


def unplug_body(name, keys):
    pulled = [k for k in keys if k.unplug_after]
    others = [k for k in keys if not k.unplug_after]
    rc, records, err, secs = keytally_scan(timeout=60)
    log(f"{name}: keytally scan with keys pulled mid-read: exit {rc} in {secs:.1f}s; stderr:\n" +
        "\n".join("#   " + l for l in err.strip().splitlines()))
    report(rc != 124, f"{name}: no hang when a key is pulled mid-read ({secs:.1f}s)", "timed out after 60 s")
    records = records or []
    pairs = match_records(others, records)
    for k in others:
        r = pairs.get(k.label)
        probs = ["no record"] if r is None else check_record(k, r)
        report(not probs, f"{name}: {k.label} unaffected", "; ".join(probs) + f"; stderr: {err.strip()[:300]}")
    for k in pulled:
        tripped = "unplugging at" in k.gadget_log()
        report(tripped, f"{name}: {k.label} was pulled in the middle of a read ({k.unplug_after})",
               f"keytally never reached the pull point; gadget log:\n{k.gadget_log()}")
        partial = [r for r in records if r.get("yubikey", {}).get("serialNumber") == k.expect["serial"]
                   and r.get("yubikey", {}).get("name") == k.expect["name"]]
        # The error must name this key: its USB port, its serial, or its CCID reader's name.
        marks = [m for m in (k.port, k.expect["serial"], f"Yubico {k.expect['product']}") if m]
        named = any(m in err for m in marks)
        clean = tripped and not partial and named and "panicked" not in err
        report(clean, f"{name}: clean per-key error for {k.label}",
               f"stderr names none of {marks}: {err.strip()[:600]!r}; records for it: {len(partial)}")
        report(k.wait(False, 10), f"{name}: {k.label} is gone from the bus", "still enumerated")
    # Plug the pulled keys back in (SIGUSR2 binds the UDC again): every key reads again.
    for k in pulled:
        k.proc.send_signal(signal.SIGUSR2)
    back = all(k.wait(True, 30) for k in pulled)
    report(back, f"{name}: pulled keys plugged back in", "did not enumerate again")
    if not back:
        return
    restart_pcscd(sum(1 for k in keys if k.expect["interfaces"] & 4))
    rc, records, err, secs = keytally_scan()
    pairs = match_records(keys, records or [])
    for k in pulled:
        r = pairs.get(k.label)
        probs = ["no record"] if r is None else check_record(k, r)
        report(not probs, f"{name}: {k.label} reads again after being plugged back", "; ".join(probs) + f"; stderr: {err.strip()[:300]}")


def hid_fault_body(name, keys):
    """Keys that answer wrongly over HID, through the real kernel: no hang, no panic, a
    warning naming each broken key's port and why, and a key whose OTP answers are corrupt
    but whose FIDO interface is sound is still read (over FIDO) and reads right."""
    rc, records, err, secs = keytally_scan(timeout=90)
    log(f"{name}: keytally scan with broken HID keys: exit {rc} in {secs:.1f}s; stderr:\n" +
        "\n".join("#   " + l for l in err.strip().splitlines()))
    report(rc not in (124, None) and "panicked" not in err, f"{name}: no hang, no panic ({secs:.1f}s)", f"exit {rc}: {err[-600:]}")
    records = records or []
    why = {"otp-bad-crc": "CRC check failed", "ctap-wrong-cid": "broke the protocol"}
    for k in keys:
        if k.expect["interfaces"] & 2 and k.hid_fault == "otp-bad-crc":
            r = match_records([k], records).get(k.label)
            probs = ["no record"] if r is None else check_record(k, r)
            report(not probs, f"{name}: {k.label} (corrupt OTP answers, sound FIDO) is read over FIDO", "; ".join(probs) + f"; stderr: {err.strip()[:300]}")
            continue
        leaked = [r for r in records if r.get("yubikey", {}).get("serialNumber") == k.expect["serial"]]
        warned = [l for l in err.splitlines() if k.port and k.port in l and why[k.hid_fault] in l]
        report(bool(warned) and not leaked, f"{name}: {k.label} ({k.hid_fault}) is a warning naming port {k.port}: {why[k.hid_fault]}",
               f"records for it: {len(leaked)}; stderr: {err.strip()[:600]!r}")


POSTURE_FIELDS = ["pivPinDefault", "pivPukDefault", "pivManagementKeyDefault", "pivPinRetries", "pivPukRetries",
                  "fido2PinSet", "fido2UvEnrolled", "fido2ForcePinChange", "fido2MinPinLength",
                  "fido2RemainingDiscoverableCredentials", "openpgpPinRetries", "oathPasswordSet",
                  "otpSlotsConfigured"]


def posture_ykman_commands(k):
    """The `ykman … info` commands that reach the key's applets over its USB interfaces:
    otp over OTP HID, fido over FIDO HID, piv/openpgp/oath over CCID."""
    ifaces, caps = k.expect["interfaces"], k.expect["usbEnabled"] or k.expect["usbSupported"]
    cmds = []
    if ifaces & 1 and caps & APP_BITS["Yubico OTP"]:
        cmds.append("otp")
    if ifaces & 2 and caps & APP_BITS["FIDO2"]:
        cmds.append("fido")
    if ifaces & 4:
        cmds += [c for c, app in (("piv", "PIV"), ("openpgp", "OpenPGP"), ("oath", "OATH")) if caps & APP_BITS[app]]
    return cmds


def posture_as_ykman_reads_it(outputs):
    """`observation.posture` as ykman's `info` outputs ({command: text}) say it, for the
    fields ykman printed (as tests/e2e/posture.rs reads them)."""
    def field(text, label):
        return next((l.strip()[len(label):].strip() for l in text.splitlines() if l.strip().startswith(label)), None)

    def tries(v):
        return None if v is None else int(v.split("/")[0])

    got = {}
    if "otp" in outputs:
        slots = [field(outputs["otp"], f"Slot {n}:") for n in (1, 2)]
        if None not in slots:
            got["otpSlotsConfigured"] = [s != "empty" for s in slots]
    if "fido" in outputs:
        fido = outputs["fido"]
        pin = field(fido, "PIN:")
        if pin is not None:
            got["fido2PinSet"] = pin != "Not set"
            if pin != "Not set":  # ykman notes forcePINChange only when a PIN is set
                got["fido2ForcePinChange"] = any(l.startswith("NOTE: The FIDO PIN is disabled and must be changed")
                                                 for l in fido.splitlines())
        fp = field(fido, "Fingerprints:")
        got["fido2UvEnrolled"] = None if fp is None else fp.startswith("Registered")
        for key, label in (("fido2MinPinLength", "Minimum PIN length:"),
                           ("fido2RemainingDiscoverableCredentials", "Credential storage remaining:")):
            v = field(fido, label)
            got[key] = None if v is None else int(v)
    if "piv" in outputs:
        piv = outputs["piv"]
        lines = [l.strip() for l in piv.splitlines()]
        got["pivPinDefault"] = "WARNING: Using default PIN!" in lines
        got["pivPukDefault"] = "WARNING: Using default PUK!" in lines
        got["pivManagementKeyDefault"] = "WARNING: Using default Management key!" in lines
        got["pivPinRetries"] = tries(field(piv, "PIN tries remaining:"))
        got["pivPukRetries"] = tries(field(piv, "PUK tries remaining:"))
    if "openpgp" in outputs:
        pgp = outputs["openpgp"]
        got["openpgpPinRetries"] = [tries(field(pgp, l)) for l in
                                    ("PIN tries remaining:", "Reset code tries remaining:", "Admin PIN tries remaining:")]
    if "oath" in outputs:
        got["oathPasswordSet"] = field(outputs["oath"], "Password protection:") == "enabled"
    return got


def posture_body(name, keys):
    """Posture over USB, ykman as the referee: the OTP slots come from the OTP status report
    (feature reports), the FIDO2 PIN, minimum length, credential count and Bio fingerprints
    from CTAP2 getInfo / clientPIN over FIDO HID (CTAPHID_CBOR), PIV, OpenPGP and OATH over
    CCID. Then `keytally scan --posture --json` on the same keys: every field as configured
    (null where no USB interface of the key reaches the applet) and as ykman printed it."""
    ykman_outputs = {}
    for k in keys:
        outputs = ykman_outputs.setdefault(k.label, {})
        cmds = [c for c, _, _ in k.ykman_shows] + (posture_ykman_commands(k) if k.posture_want else [])
        for cmd in dict.fromkeys(cmds):
            t = time.monotonic()
            outputs[cmd] = ykman(["--device", str(k.expect["serial"])] + ([cmd] if cmd else []) + ["info"])
            rc, out, err = outputs[cmd]
            log(f"{name}: ykman --device {k.expect['serial']} {cmd} info on {k.label}: exit {rc} in "
                f"{time.monotonic() - t:.1f}s\n" + "\n".join("#   " + l for l in (out + err).strip().splitlines()))
        for cmd, label, want in k.ykman_shows:
            rc, out, err = outputs[cmd]
            if want is None:  # the whole line must be there
                got, want = ("present" if label in out.splitlines() else None), "present"
            else:
                got = next((l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith(label)), None)
            report(rc == 0 and got == want, f"{name}: ykman {cmd} info on {k.label} shows {label} {want}",
                   f"exit {rc}, got {got!r}; {err.strip()[:300]}")
    keys = [k for k in keys if k.posture_want is not None]
    if not keys:
        return
    rc, out, err, secs = sh([KEYTALLY, "scan", "--posture", "--json"], timeout=90, env=dict(ENV, HOME="/root"))
    log(f"{name}: keytally scan --posture --json: exit {rc} in {secs:.1f}s; stderr:\n" +
        "\n".join("#   " + l for l in err.strip().splitlines()))
    try:
        records = json.loads(out)
    except ValueError as e:
        records = []
        err += f"\n(unparseable JSON: {e}: {out[:300]!r})"
    report(rc == 0 and "warning" not in err.lower() and "panicked" not in err,
           f"{name}: keytally scan --posture --json exits 0 without warnings ({secs:.1f}s)", f"exit {rc}; stderr: {err.strip()[:600]}")
    pairs = match_records(keys, records)
    for k in keys:
        r = pairs.get(k.label)
        got = ((r or {}).get("observation") or {}).get("posture")
        want = {f: k.posture_want.get(f) for f in POSTURE_FIELDS}
        if r is None or not isinstance(got, dict):
            report(False, f"{name}: keytally scan --posture reads {k.label}'s posture",
                   f"record: {r is not None}, posture: {got!r}; stderr: {err.strip()[:300]}")
            continue
        probs = check_record(k, r)
        probs += [f"{f}: keytally {got.get(f)!r}, configured {want[f]!r}" for f in POSTURE_FIELDS if got.get(f) != want[f]]
        probs += [f"unexpected field {f}" for f in got if f not in want]
        report(not probs, f"{name}: keytally scan --posture reads {k.label}'s posture as configured "
               f"({sum(v is not None for v in want.values())} fields set, the rest null)", "; ".join(probs))
        theirs = posture_as_ykman_reads_it({c: o for c, (yrc, o, _) in ykman_outputs[k.label].items() if c and yrc == 0})
        failed = [c for c, (yrc, _, _) in ykman_outputs[k.label].items() if yrc != 0]
        probs = [f"ykman {c} info failed" for c in failed]
        probs += [f"{f}: keytally {got.get(f)!r}, ykman {v!r}" for f, v in theirs.items() if got.get(f) != v]
        report(not probs and bool(theirs), f"{name}: keytally's posture on {k.label} agrees with ykman "
               f"({', '.join(posture_ykman_commands(k))} info; {len(theirs)} fields)", "; ".join(probs))
    rc, plain, err, secs = keytally_scan()
    with_posture = [r.get("yubikey", {}).get("name") for r in (plain or []) if "posture" in (r.get("observation") or {})]
    report(rc == 0 and plain and len(plain) == len(records) and not with_posture,
           f"{name}: plain keytally scan --json carries no observation.posture ({len(plain or [])} records)",
           f"exit {rc}; records with posture: {with_posture}; stderr: {err.strip()[:300]}")


FIGURE_RUNS = int(ENV.get("KT_FIGURE_RUNS", "3"))


def usb_figures_body(name, keys):
    """Issue 12 §5: one key with all three USB interfaces, read through each alone by keytally
    (`keytally -v scan --json --interfaces X`, the whole process timed) and by ykman (its own
    listing and DeviceInfo read, `ykman.device.list_all_devices([X])`, timed in this
    interpreter, so without Python's start-up), with the transfers the gadget counted for each
    read (APDUs, OTP feature reports, CTAPHID packets). Each read must find the key; the
    times and counts are printed side by side (medians of KT_FIGURE_RUNS reads), not judged."""
    import statistics
    k = keys[0]
    serial = k.expect["serial"]
    kinds = [("ccid", "SmartCardConnection", 0), ("otp", "OtpConnection", 1), ("fido", "FidoConnection", 2)]
    try:
        from ykman.device import list_all_devices
        from yubikit.core.fido import FidoConnection
        from yubikit.core.otp import OtpConnection
        from yubikit.core.smartcard import SmartCardConnection
        conns = {"SmartCardConnection": SmartCardConnection, "OtpConnection": OtpConnection,
                 "FidoConnection": FidoConnection}
    except ImportError as e:
        if CI:
            report(False, f"{name}: ykman's library", str(e))
        else:
            print(f"# SKIP: ykman's library not importable ({e}); keytally figures only", flush=True)
        conns = None
    rows = []
    for iface, conn_name, slot in kinds:
        kt_secs, kt_n, kt_own, kt_ok, kt_err = [], [], [], True, ""
        for _ in range(FIGURE_RUNS):
            before = k.transfers()
            rc, out, err, secs = sh([KEYTALLY, "-v", "scan", "--json", "--interfaces", iface], timeout=60,
                                    env=dict(ENV, HOME=ENV.get("HOME", "/root")))
            after = k.transfers()
            try:
                records = json.loads(out) if out.strip() else []
            except ValueError:
                records = []
            own = re.search(rf'interface="?{iface}"? transfers=(\d+)', err)
            got = [r for r in records if r.get("yubikey", {}).get("serialNumber") == serial]
            if rc != 0 or len(got) != 1 or not own:
                kt_ok, kt_err = False, f"exit {rc}, {len(got)} record(s) with serial {serial}; stderr: {err.strip()[:400]}"
            kt_secs.append(secs)
            kt_n.append(after[slot] - before[slot])
            kt_own.append(int(own.group(1)) if own else -1)
        report(kt_ok, f"{name}: keytally reads {k.label} over {iface.upper()} alone", kt_err)
        yk = None
        if conns:
            yk_secs, yk_n, yk_ok, yk_err = [], [], True, ""
            for _ in range(FIGURE_RUNS):
                before = k.transfers()
                t = time.monotonic()
                try:
                    found = [info for _, info in list_all_devices([conns[conn_name]]) if str(info.serial) == str(serial)]
                except Exception as e:  # noqa: BLE001
                    found, yk_err = [], f"{type(e).__name__}: {e}"
                yk_secs.append(time.monotonic() - t)
                after = k.transfers()
                yk_n.append(after[slot] - before[slot])
                if len(found) != 1:
                    yk_ok, yk_err = False, yk_err or f"{len(found)} device(s) with serial {serial}"
            report(yk_ok, f"{name}: ykman reads {k.label} over {iface.upper()} alone", yk_err)
            yk = (statistics.median(yk_secs), statistics.median(yk_n))
        rows.append((iface.upper(), statistics.median(kt_secs), statistics.median(kt_n), statistics.median(kt_own), yk))
    # What keytally's process costs before it reads anything (ykman's interpreter start-up is
    # not in its figures).
    start = statistics.median(sh([KEYTALLY, "--version"])[3] for _ in range(FIGURE_RUNS))
    unit = {"CCID": "APDUs", "OTP": "OTP feature reports", "FIDO": "CTAPHID packets"}
    lines = [f"USB read figures ({k.model} @ 1050:{k.pid:04x}, medians of {FIGURE_RUNS}; transfers as the gadget "
             f"counted them (host to key), keytally's own count in brackets (CTAPHID: both directions)):",
             f"keytally: the whole process ({os.path.basename(os.path.dirname(KEYTALLY))} build; `keytally --version` alone "
             f"takes {start * 1000:.0f} ms here); ykman: ykman.device.list_all_devices([X]) in-process",
             f"{'transport':<9} | {'keytally: time, transfers (own count)':<38} | {'ykman: time, transfers':<24} | unit"]
    for iface, kt_s, kt_n, kt_own, yk in rows:
        yk_txt = f"{yk[0] * 1000:7.0f} ms {yk[1]:4.0f}" if yk else "-"
        lines.append(f"{iface:<9} | {kt_s * 1000:7.0f} ms {kt_n:4.0f} ({kt_own:.0f}){'':<19} | {yk_txt:<24} | {unit[iface]}")
    print("\n".join("# " + l for l in lines), flush=True)


def card_on(prefix, timeout):
    """The name of the first PC/SC reader whose name starts with `prefix` and that holds a card
    (pyscard, low level: no connection, so nothing is reset), or None after `timeout`."""
    from smartcard import scard  # noqa: WPS433
    hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hr != 0:
        return None
    try:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            hr, names = scard.SCardListReaders(ctx, [])
            for n in [n for n in (names or []) if n.startswith(prefix)] if hr == 0 else []:
                hr, states = scard.SCardGetStatusChange(ctx, 0, [(n, scard.SCARD_STATE_UNAWARE)])
                if hr == 0 and states and states[0][1] & scard.SCARD_STATE_PRESENT:
                    return n
            time.sleep(0.2)
        return None
    finally:
        scard.SCardReleaseContext(ctx)


def key_read_offsets(err, started):
    """{reader: seconds after `started`} of each `key read` line in `keytally -vv` stderr."""
    from datetime import datetime, timezone
    out = {}
    for m in re.finditer(r'^(\S+Z)\s+DEBUG\b.*\bkey read reader="([^"]+)"', err, re.M):
        at = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
        out[m.group(2)] = at - started
    return out


def stall_beside_usb_body(name, keys):
    """Issue 12 §1 on a real USB stack: a card that holds READ CONFIG for 30 s on vpcd's
    "Virtual PCD 00 00" in the same pcscd as a CCID-only YubiKey on the guest's USB bus
    (libccid). `keytally -vv scan --json` is run once without the stalling card and once with
    it: the USB key is listed both times, read within its normal time (its `key read` log
    line against the start of the process, compared with the first run), and the stalled
    reader is named once while the scan ends at the reader deadline (3 s)."""
    vkey = ENV.get("KT_VKEY", "")
    if not (vkey and os.access(vkey, os.X_OK)):
        report(False, f"{name}: prerequisites", f"keytally-vkey {vkey!r}")
        return
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
    k = keys[0]

    def scan():
        started = time.time()
        rc, records, err, secs = keytally_scan(options=["-vv"])
        records = records or []
        r = match_records(keys, records).get(k.label)
        probs = check_record(k, r) if r else ["no record"]
        return rc, records, probs, err, secs, key_read_offsets(err, started)

    rc, records, probs, err, secs, alone = scan()
    usb = [n for n in alone if "Yubico YubiKey" in n]
    report(rc == 0 and not probs and len(records) == 1 and len(usb) == 1, f"{name}: keytally reads the USB key alone",
           f"exit {rc}, {len(records)} record(s), {probs}; key read lines {alone}; stderr: {err.strip()[-400:]}")
    if len(usb) != 1:
        return
    usb = usb[0]
    log_path = f"{RUN}/vkey-stall.log"
    card = subprocess.Popen([vkey, "--model", "yk5cnfc", "--fault", "stall", "--stall", "30", "--port", "35963"],
                            stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))
    try:
        stalled = card_on("Virtual PCD", 30)
        report(stalled is not None, f"{name}: pcscd sees the stalling card on vpcd beside the USB reader",
               open(log_path).read()[-400:])
        if stalled is None:
            return
        rc, records, probs, err, secs, beside = scan()
        warnings = [l for l in err.splitlines() if l.startswith("keytally: warning:")]
        log(f"{name}: the USB key read {alone.get(usb, -1) * 1000:.0f} ms after the start alone, "
            f"{beside.get(usb, -1) * 1000:.0f} ms beside the stalled reader; that scan took {secs:.1f} s")
        report(rc == 0 and not probs and len(records) == 1, f"{name}: the USB key is listed beside the stalled reader",
               f"exit {rc}, {len(records)} record(s), {probs}; stderr: {err.strip()[-600:]}")
        report(usb in beside and beside[usb] < alone[usb] + 0.5,
               f"{name}: the USB key is read within its normal time beside the stalled reader",
               f"alone {alone[usb]:.2f} s, beside {beside.get(usb)}; stderr: {err.strip()[-600:]}")
        report(len(warnings) == 1 and f'reader "{stalled}"' in warnings[0] and "did not answer in time" in warnings[0],
               f"{name}: only the stalled reader is named, once", "\n".join(warnings) or err.strip()[-600:])
        report(3.0 <= secs < 6.0, f"{name}: the scan ends at the reader deadline ({secs:.1f} s)", f"{secs:.1f} s")
    finally:
        stop_process(card)


def ensure_user(name, groups=()):
    subprocess.run(["groupadd", "-f", "keytally"], check=False)
    if subprocess.run(["id", name], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-M", "-d", f"/tmp/home-{name}", "-s", "/bin/sh", name], check=True)
    for g in groups:
        subprocess.run(["usermod", "-a", "-G", g, name], check=True)
    return int(subprocess.run(["id", "-u", name], capture_output=True, text=True).stdout)


UDEVD = "/lib/systemd/systemd-udevd"
RULES = os.path.join(ENV.get("KT_REPO", "/"), "udev/70-keytally.rules")


def start_udevd():
    """The real systemd-udevd, listening (it rebroadcasts uevents to udev's netlink group,
    which is what nusb's hot-plug watch reads). Returns (process, env for udevadm)."""
    # systemd's tools refuse to act in a chroot unless told otherwise.
    uenv = dict(ENV, SYSTEMD_IGNORE_CHROOT="1")
    udevd = subprocess.Popen([UDEVD, "--debug"], stdout=subprocess.DEVNULL,
                             stderr=open(f"{RUN}/udevd.log", "w"), env=uenv)
    # Under TCG udevd takes a few seconds to listen; uevents sent before that are lost.
    for _ in range(120):
        if subprocess.run(["udevadm", "control", "--ping", "--timeout=5"], env=uenv,
                          capture_output=True).returncode == 0:
            break
        time.sleep(0.5)
    return udevd, uenv


def apply_udev_rules(name, keys):
    """Gives the keys' hidraw nodes what udev/70-keytally.rules grants. With Debian's `udev`
    installed on the host, the real systemd-udevd runs in the guest with the repo's rules file
    copied in and replays the hidraw "add" events; otherwise the grant is emulated (group
    keytally, mode 0660). Returns the udevd process (or None)."""
    nodes = [f"/dev/{h}" for k in keys for h in k.hidraws()]
    udevd = None
    if os.path.exists(UDEVD) and os.path.exists(RULES):
        os.makedirs("/etc/udev/rules.d", exist_ok=True)
        with open(RULES) as src, open("/etc/udev/rules.d/70-keytally.rules", "w") as dst:
            dst.write(src.read())
        for n in nodes:  # start from what the kernel gives: root only
            os.chmod(n, 0o600)
        udevd, uenv = start_udevd()
        subprocess.run(["udevadm", "trigger", "--action=add", "--subsystem-match=hidraw"], env=uenv, check=False)
        subprocess.run(["udevadm", "settle", "--timeout=30"], env=uenv, check=False)
        how = "systemd-udevd with udev/70-keytally.rules"
    else:
        for n in nodes:
            subprocess.run(["chgrp", "keytally", n], check=True)
            os.chmod(n, 0o660)
        how = "emulated: no systemd-udevd on the host root (Debian package udev)"
    import grp
    gid = grp.getgrnam("keytally").gr_gid
    bad = []
    for n in nodes:
        st = os.stat(n)
        if st.st_gid != gid or st.st_mode & 0o777 != 0o660:
            bad.append(f"{n}: gid {st.st_gid} mode {oct(st.st_mode & 0o777)}")
    report(bool(nodes) and not bad, f"{name}: hidraw nodes go to group keytally, mode 0660, none world-accessible ({how})",
           f"{bad or 'no hidraw nodes'}" + (f"\nudevd log:\n{open(RUN + '/udevd.log').read()[-3000:]}" if bad and udevd else ""))
    return udevd


def access_body(name, keys):
    allowed = ensure_user("ktallowed", ["keytally"])
    denied = ensure_user("ktdenied")
    udevd = apply_udev_rules(name, keys)
    if udevd:
        udevd.terminate()
        udevd.wait(10)
    rc, records, err, secs = keytally_scan(user=allowed)
    records = records or []
    pairs = match_records(keys, records)
    for k in keys:
        r = pairs.get(k.label)
        probs = ["no record"] if r is None else check_record(k, r)
        report(not probs, f"{name}: user in group keytally reads {k.label}", "; ".join(probs) + f"; exit {rc}; stderr: {err.strip()[:300]}")
    rc, records, err, secs = keytally_scan(user=denied)
    rc2, table, err2, _ = sh([KEYTALLY, "scan"], env=dict(ENV, HOME=f"/tmp/home-{denied}"), user=denied)
    log(f"{name}: `keytally scan` as a user outside group keytally (exit {rc2}):\n" +
        "\n".join("#   " + l for l in (table + err2).strip().splitlines()))
    for k in keys:
        if k.expect["interfaces"] & 4:
            continue  # CCID goes through pcscd, which any user may use
        leaked = [r for r in (records or []) if r.get("yubikey", {}).get("name") == k.expect["name"]
                  and r.get("yubikey", {}).get("firmwareVersion")]
        on_stderr = any(k.port and k.port in l and "access denied" in l.lower() for l in err.splitlines())
        in_table = any(k.port and k.port in l and "denied" in l.lower() for l in table.splitlines())
        report(on_stderr and in_table and not leaked,
               f"{name}: user not allowed gets \"access denied\" for {k.label} (port {k.port}; stderr and table)",
               f"stderr has it: {on_stderr}, table has it: {in_table}, records: {len(leaked)}; "
               f"stderr: {err.strip()[:400]!r}; table: {table.strip()[:400]!r}")


def enroll_body(name, keys):
    """The enrollment desk with USB keys PC/SC cannot see (FIDO-only, OTP-only): one is
    plugged in before `keytally enroll` starts, the others are plugged in while it waits
    (nusb's hot-plug watch, fed by systemd-udevd); each is found, read over HID, given the
    owner/tags/status from the flags, pushed to the sandbox server, and the desk waits for
    its removal before taking the next."""
    import queue
    import threading
    sandbox = ENV.get("KT_SANDBOX", "")
    if not (sandbox and os.access(sandbox, os.X_OK) and os.path.exists(UDEVD)):
        report(False, f"{name}: prerequisites", f"sandbox binary {sandbox!r}, udevd {os.path.exists(UDEVD)}")
        return
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
    udevd, _ = start_udevd()
    srv = subprocess.Popen([sandbox, "--listen", "127.0.0.1:18787"], stdout=subprocess.DEVNULL,
                           stderr=open(f"{RUN}/sandbox.log", "w"))
    later = keys[1:]
    unplugged = set()
    for k in later:
        k.unplug()
        unplugged.add(k.label)
    for k in later:
        k.wait(False, 15)
    csv = f"{RUN}/enrolled.csv"
    env = dict(ENV, KEYTALLY_SERVER="http://127.0.0.1:18787/api/external/ybk-management",
               KEYTALLY_TOKEN_URL="http://127.0.0.1:18787/oauth/token", KEYTALLY_CLIENT_ID="keytally",
               KEYTALLY_CLIENT_SECRET="sandbox-client-secret", KEYTALLY_STATE_DIR=f"{RUN}/enroll-state")
    desk = subprocess.Popen([KEYTALLY, "enroll", "--count", str(len(keys)), "--owner", "it@example.com",
                             "--tags", "desk,usb", "--status", "Active", "--csv", csv],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l.rstrip("\n")) for l in desk.stdout], daemon=True).start()
    seen = []

    def expect(pattern, timeout=90):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = lines.get(timeout=max(0.1, end - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            m = re.search(pattern, line)
            if m:
                return m
        return None

    try:
        for i, k in enumerate(keys):
            if k.label in unplugged:
                k.proc.send_signal(signal.SIGUSR2)  # plug it in while the desk waits
                unplugged.discard(k.label)
            found = expect(r"^Found: (.+?)  serial (\S+)  firmware (\S+)")
            ok = bool(found) and found.group(1) == k.expect["name"] and found.group(2) == str(k.expect["serial"] or "none")
            report(ok, f"{name}: {k.label} {'plugged in before the start' if i == 0 else 'hot-plugged'} is found over USB HID and read",
                   f"want {k.expect['name']} serial {k.expect['serial']}; desk said:\n" + "\n".join(seen[-15:]))
            if not found:
                return
            pushed = expect(r"(synced|queued)")
            report(bool(pushed) and pushed.group(1) == "synced", f"{name}: {k.label} pushed with owner/tags/status (synced)",
                   "\n".join(seen[-10:]))
            if not expect(r"^Remove the key to continue"):
                report(False, f"{name}: {k.label} removal asked", "\n".join(seen[-10:]))
                return
            k.unplug()
            unplugged.add(k.label)
        summary = expect(r"^Enrolled (\d+) key\(s\): (\d+) synced")
        try:
            rc = desk.wait(30)
        except subprocess.TimeoutExpired:
            rc = None
        report(bool(summary) and summary.group(1) == str(len(keys)) and summary.group(2) == str(len(keys)) and rc == 0,
               f"{name}: the desk ends after --count {len(keys)} with a summary, exit 0", f"exit {rc}:\n" + "\n".join(seen[-10:]))
        rows = open(csv).read().strip().splitlines() if os.path.exists(csv) else []
        report(len(rows) == len(keys) + 1 and all(r.endswith(",synced") and "it@example.com" in r for r in rows[1:]),
               f"{name}: --csv has one synced row per key with its owner", "\n".join(rows))
    finally:
        for p in (desk, srv, udevd):
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for k in keys:  # the phase's clean-up stops gadgets that are plugged in
            if k.label in unplugged:
                k.proc.send_signal(signal.SIGUSR2)
                k.wait(True, 15)


def main():
    log(f"keytally: {KEYTALLY}\n# gadget: {GADGET}\n# ykman: {YKMAN or '(none)'} (in-process: {'ykman' in sys.modules or _can_import_ykman()})")
    report(os.path.exists("/sys/class/udc/dummy_udc.2"), "three dummy UDCs", str(os.listdir("/sys/class/udc")))
    # Each model through each interface set it has on USB.
    phase("models-1", [Key("yk5nfc", "yk5nfc", 0x0407, 0), Key("bio", "bio", 0x0402, 1),
                       Key("yk4", "yk4", 0x0405, 2)], models_body)
    phase("models-2", [Key("skynfc", "skynfc", 0x0120, 0), Key("neo", "neo", 0x0116, 1),
                       Key("yk5nano", "yk5nano", 0x0406, 2)], models_body)
    # The other interface sets: OTP+FIDO, OTP alone, CCID alone.
    phase("models-3", [Key("yk5cnfc", "yk5cnfc", 0x0403, 0), Key("yk4", "yk4", 0x0401, 1),
                       Key("yk5nfc", "yk5nfc", 0x0404, 2)], models_body)
    # Three keys at once, two identical without serials.
    phase("three-keys", [Key("twin-a", "yk5nfc", 0x0407, 0, serial="none"),
                         Key("twin-b", "yk5nfc", 0x0407, 1, serial="none"),
                         Key("yk5cnfc", "yk5cnfc", 0x0407, 2)], models_body)
    # A key pulled out in the middle of a read (its 2nd APDU), the other two unaffected.
    phase("unplug", [Key("pulled", "yk5cnfc", 0x0407, 0, unplug_after="apdu:2"),
                     Key("bio", "bio", 0x0402, 1), Key("yk5nfc", "yk5nfc", 0x0407, 2)], unplug_body)
    # The same over HID: FIDO pulled at its 2nd CTAPHID packet (after INIT), OTP at its 3rd
    # feature report; a CCID key beside them unaffected.
    phase("unplug-hid", [Key("pulled-fido", "bio", 0x0402, 0, unplug_after="ctap:2"),
                         Key("pulled-otp", "yk4", 0x0401, 1, unplug_after="otp:3"),
                         Key("yk5nano", "yk5nano", 0x0406, 2)], unplug_body)
    # udev rules: a user in group keytally can read OTP/FIDO keys; another user is told "access denied".
    phase("access", [Key("bio", "bio", 0x0402, 0), Key("sky", "skynfc", 0x0120, 1),
                     Key("otpfido", "yk5cnfc", 0x0403, 2)], access_body)

    # Broken HID answers: an OTP-only key with corrupt CRCs, a FIDO-only key answering on a
    # foreign CTAPHID channel, and an OTP+FIDO key whose OTP answers are corrupt.
    phase("hid-faults", [Key("badcrc", "yk4", 0x0401, 0, hid_fault="otp-bad-crc"),
                         Key("wrongcid", "bio", 0x0402, 1, hid_fault="ctap-wrong-cid"),
                         Key("fallback", "yk5cnfc", 0x0403, 2, hid_fault="otp-bad-crc")], hid_fault_body)
    # The enrollment desk with keys only USB HID can read, plugged in while it waits.
    phase("enroll-usb", [Key("sky", "skynfc", 0x0120, 0), Key("bio", "bio", 0x0402, 1),
                         Key("otp", "yk4", 0x0401, 2)], enroll_body)

    # Posture over USB HID (ykman reads the OTP slots over OTP HID and FIDO2 over FIDO HID).
    phase("posture-usb", [
        Key("hardened", "yk5cnfc", 0x0403, 0, posture="hardened", nfc_restricted=True, ykman_shows=[
            ("", "NFC transport is restricted", None),
            ("otp", "Slot 1", "programmed"), ("otp", "Slot 2", "programmed"),
            ("fido", "PIN", "5 attempt(s) remaining"), ("fido", "Minimum PIN length", "6"),
            ("fido", "Credential storage remaining", "17")],
            # No CCID: OTP slots over OTP HID, FIDO2 over CTAPHID; no built-in UV (not a Bio).
            posture_want=dict(fido2PinSet=True, fido2ForcePinChange=True, fido2MinPinLength=6,
                              fido2RemainingDiscoverableCredentials=17, otpSlotsConfigured=[True, True])),
        Key("bio-enrolled", "bio", 0x0402, 1, posture="fido2-pin-set=true,fido2-uv-enrolled=true", ykman_shows=[
            ("fido", "Fingerprints", "Registered, 3 attempt(s) remaining"),
            ("fido", "PIN", "8 attempt(s) remaining")],
            posture_want=dict(fido2PinSet=True, fido2UvEnrolled=True, fido2ForcePinChange=False, fido2MinPinLength=4,
                              fido2RemainingDiscoverableCredentials=100)),
        Key("otp-slot2", "yk4", 0x0401, 2, posture="otp-slots=false/true", ykman_shows=[
            ("otp", "Slot 1", "empty"), ("otp", "Slot 2", "programmed")],
            posture_want=dict(otpSlotsConfigured=[False, True])),
    ], posture_body)
    # The same with CCID: keytally reads PIV, OpenPGP, OATH and OTP over CCID and FIDO2 from the
    # same key's FIDO HID node; ykman reads each applet (piv/openpgp/oath/otp/fido info).
    phase("posture-usb-ccid", [
        Key("mixed", "yk5cnfc", 0x0407, 0, posture="piv-pin-retries=1,piv-puk-default=false,piv-mgmt-key-default=false,"
            "fido2-pin-set=true,fido2-min-pin-length=8,fido2-remaining-creds=42,openpgp-retries=0/0/3,"
            "oath-password=true,otp-slots=true/false",
            posture_want=dict(pivPinDefault=True, pivPukDefault=False, pivManagementKeyDefault=False, pivPinRetries=1,
                              pivPukRetries=3, fido2PinSet=True, fido2ForcePinChange=False, fido2MinPinLength=8,
                              fido2RemainingDiscoverableCredentials=42, openpgpPinRetries=[0, 0, 3],
                              oathPasswordSet=True, otpSlotsConfigured=[True, False])),
        # FIDO+CCID with OTP disabled over USB: no OTP posture at all.
        Key("factory-nano", "yk5nano", 0x0406, 1, posture="factory",
            posture_want=dict(pivPinDefault=True, pivPukDefault=True, pivManagementKeyDefault=True, pivPinRetries=3,
                              pivPukRetries=3, fido2PinSet=False, fido2ForcePinChange=False, fido2MinPinLength=4,
                              fido2RemainingDiscoverableCredentials=100, openpgpPinRetries=[3, 0, 3],
                              oathPasswordSet=False)),
    ], posture_body)

    # Issue 12 §1 with a real USB stack: a stalled NFC reader (vpcd) beside a CCID-only key on
    # USB, in the same pcscd.
    phase("stall-beside-usb", [Key("ccid", "yk5nfc", 0x0404, 0)], stall_beside_usb_body)

    # Issue 12 §5: each USB transport read alone, keytally beside ykman, timed and counted.
    phase("usb-figures", [Key("yk5nfc", "yk5nfc", 0x0407, 0, count=True)], usb_figures_body)

    passed = sum(1 for ok, _, _ in results if ok)
    failed = len(results) - passed
    log("done")
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


def _can_import_ykman():
    try:
        import ykman  # noqa: F401
        return True
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
