#!/usr/bin/env python3
"""Times one tool against the virtual key already inserted by `keytally-vkey --lab`.

Prints one JSON line: median wall time, median CPU time (user + system), peak RSS and APDUs
per run. Run by scan.sh.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time

# GNU time reports the child's own peak RSS; Python's wait4 would count the forked
# interpreter's pages too.
GNU_TIME = "/usr/bin/time"


def read_count(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except FileNotFoundError:
        return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count-file", required=True)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--label", required=True)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    walls, cpus, rss, apdus = [], [], [], []
    rss_file = tempfile.NamedTemporaryFile(prefix="bench-rss-", delete=False).name
    for _ in range(a.runs):
        before = read_count(a.count_file)
        # Wall time is taken around the tool alone; GNU time runs it again for the RSS.
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        walls.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
        if p.returncode != 0:
            raise SystemExit(f"{a.label}: {' '.join(cmd)} failed: {p.stderr.decode(errors='replace')}")
        time.sleep(0.02)  # the card thread writes the count right after its last answer
        apdus.append(read_count(a.count_file) - before)
    for _ in range(3):
        subprocess.run([GNU_TIME, "-f", "%M", "-o", rss_file] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        with open(rss_file) as f:
            rss.append(int(f.read().split()[-1]) / 1024.0)  # KiB -> MiB
    os.unlink(rss_file)
    print(json.dumps({
        "label": a.label,
        "median_s": statistics.median(walls),
        "cpu_s": statistics.median(cpus),
        "peak_rss_mib": max(rss),
        "apdus": statistics.median(apdus),
        "runs": a.runs,
    }))


if __name__ == "__main__":
    main()
