#!/usr/bin/env python3
"""Benchmark for write sets and change records (issue 15).

1. Per-stage overhead: the stages of examples/debian-config.json, each on
   a real Debian tree, with enforcement and change records on (this
   osbuild), against a baseline osbuild without them (OSBUILD_BASELINE_BIN,
   a build from before issue 15), in the same run; on the 15k-entry
   Debian tree and on a 1k-entry cut of it, to show the cost does not grow
   with the tree. Each stage's time is its `duration_ms` from --json: run,
   change record, write-set check and store checkpoint.
2. `osbuild changes` on a build of examples/debian.json: time and output
   size (the mmdebstrap stage's record lists every entry of the tree).

Needs root. Prints medians over RUNS cold builds (fresh store each)."""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import OSBUILD, ROOT, build_release, log

sys.path.insert(0, str(Path(__file__).parent))
from library_config import config_tarball  # noqa: E402

EXAMPLE = ROOT / "examples" / "debian-config.json"
DEBIAN = ROOT / "examples" / "debian.json"
RUNS = int(os.environ.get("RUNS", "5"))
BASELINE = os.environ.get("OSBUILD_BASELINE_BIN")


def small_tarball(big, dest):
    """The Debian tree cut to about 1k entries, keeping what the stages read."""
    with tempfile.TemporaryDirectory(dir=ROOT / "target") as d:
        subprocess.run(["tar", "--xattrs", "--numeric-owner", "-xf", big, "-C", d], check=True)
        keep = ["usr/share/zoneinfo/Europe/Berlin", "usr/share/zoneinfo/right/UTC",
                "usr/lib/systemd/system/ssh.service", "usr/lib/systemd/system/multi-user.target",
                "usr/lib/systemd/system/apt-daily.timer", "usr/lib/systemd/system/apt-daily-upgrade.timer",
                "usr/lib/systemd/system/chrony.service"]
        subprocess.run(["bash", "-ec", f"""
            cd {d}
            mkdir -p ../keep-$$
            for k in {' '.join(keep)}; do [ -e "$k" ] && cp -a --parents "$k" ../keep-$$/ || true; done
            rm -rf usr/share/* usr/lib/x86_64-linux-gnu usr/lib/python3* usr/bin var/lib/dpkg usr/sbin usr/libexec
            cp -a ../keep-$$/. .
            rm -rf ../keep-$$
            mkdir -p usr/lib/sysctl.d usr/lib/modprobe.d usr/lib/tmpfiles.d
        """], check=True)
        entries = int(subprocess.run(["bash", "-c", f"find {d} | wc -l"], capture_output=True,
                                     text=True, check=True).stdout)
        subprocess.run(["tar", "--xattrs", "--numeric-owner", "-cf", dest, "-C", d, "."], check=True)
    return entries


def entries_of(tar):
    out = subprocess.run(["bash", "-c", f"tar -tf {tar} | wc -l"], capture_output=True, text=True, check=True)
    return int(out.stdout)


def stage_times(binary, tar):
    """{stage index: [ms per run]} over RUNS cold builds."""
    times = {}
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory(dir=ROOT / "target") as store:
            # Warm the compiled components for this binary in this store:
            # the first build's compile is not what is measured.
            p = subprocess.run([binary, "--store", store, "--from", tar, "--json", "--no-cache", EXAMPLE],
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise SystemExit(f"{binary} failed:\n{p.stderr}")
            p = subprocess.run([binary, "--store", store, "--from", tar, "--json", EXAMPLE],
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise SystemExit(f"{binary} failed:\n{p.stderr}")
            for s in json.loads(p.stdout)["stages"]:
                times.setdefault((s["index"], s["name"]), []).append(s["duration_ms"])
    return times


def main():
    build_release()
    big = config_tarball()
    small = ROOT / "target" / "bench" / "bookworm-config-1k.tar"
    small.parent.mkdir(parents=True, exist_ok=True)
    if not small.exists():
        small_tarball(big, small)
    sizes = {"1k": (small, entries_of(small)), "15k": (big, entries_of(big))}
    binaries = [("records", OSBUILD)]
    if BASELINE:
        binaries.append(("baseline", Path(BASELINE)))
    else:
        log("OSBUILD_BASELINE_BIN is not set: no baseline (give an osbuild from before issue 15)")
    medians = {}
    for tree, (tar, n) in sizes.items():
        for label, binary in binaries:
            log(f"{label} on the {tree} tree ({n} entries), {RUNS} runs...")
            t = stage_times(binary, tar)
            medians[(tree, label)] = {k: statistics.median(v) for k, v in t.items()}
    print(f"per-stage time, median of {RUNS} cold builds (ms):")
    header = f"{'stage':<32}" + "".join(f"{tree + ' ' + label:>16}" for tree in sizes for label, _ in binaries)
    print(header)
    keys = sorted(medians[("15k", "records")].keys())
    for k in keys:
        row = f"{k[0]:>2} {k[1]:<29}" + "".join(
            f"{medians[(tree, label)].get(k, float('nan')):>16.2f}" for tree in sizes for label, _ in binaries)
        print(row)
    for tree in sizes:
        rec = statistics.median(medians[(tree, "records")].values())
        line = f"{tree} tree: median stage {rec:.2f} ms with records"
        if BASELINE:
            base = statistics.median(medians[(tree, "baseline")].values())
            overhead = statistics.median(
                medians[(tree, "records")][k] - medians[(tree, "baseline")][k] for k in keys)
            line += f", {base:.2f} ms baseline: ratio {rec / base:.2f}, median overhead {overhead:.2f} ms per stage"
        print(line)

    # osbuild changes on a build of examples/debian.json (mmdebstrap, the
    # configuration stages, users, the qcow2 assembler).
    with tempfile.TemporaryDirectory(dir=ROOT / "target") as work:
        store = f"{work}/store"
        log("building examples/debian.json (mmdebstrap: a few minutes)...")
        start = time.perf_counter()
        subprocess.run([OSBUILD, "--store", store, "--output-directory", f"{work}/out", "-q", DEBIAN],
                       check=True)
        built = time.perf_counter() - start
        runs = []
        for _ in range(RUNS):
            start = time.perf_counter()
            p = subprocess.run([OSBUILD, "changes", "--store", store, DEBIAN], capture_output=True, check=True)
            runs.append(time.perf_counter() - start)
        js = subprocess.run([OSBUILD, "changes", "--json", "--store", store, DEBIAN],
                            capture_output=True, check=True).stdout
        records = json.loads(js)
        on_disk = sum(Path(r["record"]).stat().st_size for r in records)
        lines = p.stdout.count(b"\n")
        per_stage = ", ".join(f"{r['name']} {sum(r['counts'].values())}" for r in records)
        print(f"osbuild changes on {DEBIAN.name} (built in {built:.0f} s): "
              f"{statistics.median(runs) * 1000:.0f} ms median of {RUNS}; "
              f"{lines} lines, {len(p.stdout) / 1e6:.1f} MB of text, "
              f"{len(js) / 1e6:.1f} MB as --json, {on_disk / 1e6:.1f} MB of records in the store; "
              f"entries per stage: {per_stage}")


if __name__ == "__main__":
    main()
