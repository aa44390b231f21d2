#!/usr/bin/env python3
"""Times tools against the virtual key already inserted by `keytally-vkey --lab`.

Each `--tool LABEL:RUNS COMMAND` is run RUNS times; the tools take turns (one run of each per
round), so a machine that gets busier or quieter during the run weighs on all of them alike.
`{reader}` in a command is the lab's reader (KEYTALLY_VKEY_READER). Prints one JSON line per
tool: median wall time, median CPU time (user + system), peak RSS and APDUs per run. Run by
scan.sh.
"""
import argparse
import json
import os
import resource
import shlex
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
    ap.add_argument("--tool", nargs=2, action="append", metavar=("LABEL:RUNS", "COMMAND"), required=True)
    a = ap.parse_args()
    reader = os.environ.get("KEYTALLY_VKEY_READER", "")
    tools = []
    for spec, command in a.tool:
        label, runs = spec.rsplit(":", 1)
        cmd = [part.replace("{reader}", reader) for part in shlex.split(command)]
        tools.append({"label": label, "runs": int(runs), "cmd": cmd, "walls": [], "cpus": [], "apdus": []})
    for round_ in range(max(t["runs"] for t in tools)):
        for t in tools:
            if round_ >= t["runs"]:
                continue
            before = read_count(a.count_file)
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            # Wall time is taken around the tool alone; GNU time runs it again for the RSS.
            t0 = time.perf_counter()
            p = subprocess.run(t["cmd"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            t["walls"].append(time.perf_counter() - t0)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t["cpus"].append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
            if p.returncode != 0:
                raise SystemExit(f"{t['label']}: {' '.join(t['cmd'])} failed: {p.stderr.decode(errors='replace')}")
            time.sleep(0.02)  # the card thread writes the count right after its last answer
            t["apdus"].append(read_count(a.count_file) - before)
    rss_file = tempfile.NamedTemporaryFile(prefix="bench-rss-", delete=False).name
    for t in tools:
        rss = []
        for _ in range(3):
            subprocess.run([GNU_TIME, "-f", "%M", "-o", rss_file] + t["cmd"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True)
            with open(rss_file) as f:
                rss.append(int(f.read().split()[-1]) / 1024.0)  # KiB -> MiB
        print(json.dumps({
            "label": t["label"],
            "median_s": statistics.median(t["walls"]),
            "cpu_s": statistics.median(t["cpus"]),
            "peak_rss_mib": max(rss),
            "apdus": statistics.median(t["apdus"]),
            "runs": t["runs"],
        }))
    os.unlink(rss_file)


if __name__ == "__main__":
    main()
