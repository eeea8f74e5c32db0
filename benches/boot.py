#!/usr/bin/env python3
"""Benchmark for the README's example: wall time of examples/debian.json
(total and per stage, from osbuild's "NAME done in X ms" lines), the share
spent in mmdebstrap against a plain mmdebstrap of the same suite, variant
and packages in the same run (target: total < mmdebstrap + 15 s), and the
time from QEMU's start to "login:" (osbuild boot).

    benches/boot.py [RUNS]     # RUNS pairs, alternating (default 1)

Needs root, the Debian mirror and qemu-system-x86 (tools/setup)."""

import json
import os
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import MIRROR, OSBUILD, ROOT, WORK, build_release, log

EXAMPLE = ROOT / "examples" / "debian.json"
DONE = re.compile(r"^\s*(\S+) done in ([0-9.]+) ms")


def stage_options(pipeline, name):
    return next(s.get("options", {}) for s in pipeline["pipeline"] if s["name"] == name)


def plain_mmdebstrap(opts, epoch, dest):
    """The same mmdebstrap the stage runs, straight on the host."""
    cmd = ["mmdebstrap", "--quiet", f"--variant={opts.get('variant', 'minbase')}",
           "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg"]
    if opts.get("packages"):
        cmd.append("--include=" + ",".join(opts["packages"]))
    cmd += [opts["suite"], str(dest), *(opts.get("mirrors") or [MIRROR])]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "SOURCE_DATE_EPOCH": str(epoch)})
    took = time.perf_counter() - start
    shutil.rmtree(dest)
    return took


def osbuild_example(store, out):
    """Builds the example from nothing; returns (total s, {stage: s})."""
    start = time.perf_counter()
    p = subprocess.run([OSBUILD, "--store", store, "--no-cache", "--output-directory", out, EXAMPLE],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    total = time.perf_counter() - start
    if p.returncode != 0:
        raise SystemExit(f"osbuild failed:\n{p.stderr[-4000:]}")
    stages = {}
    for line in p.stderr.splitlines():
        m = DONE.match(line)
        if m:
            stages[m.group(1)] = stages.get(m.group(1), 0) + float(m.group(2)) / 1000
    return total, stages


def boot_to_login(image, password, timeout=600):
    """osbuild boot: seconds from start to "login:", and to QEMU's exit
    after logging in as root and powering off."""
    start = time.perf_counter()
    p = subprocess.Popen([OSBUILD, "boot", image], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    seen = b""
    marks = {}

    def wait_for(needle, name):
        nonlocal seen
        while needle not in seen:
            left = start + timeout - time.perf_counter()
            if left <= 0 or not select.select([p.stdout], [], [], left)[0]:
                p.kill()
                raise SystemExit(f"no {needle!r} on the console after {timeout} s")
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                raise SystemExit(f"QEMU exited before {needle!r}")
            seen += chunk
        seen = seen[seen.index(needle) + len(needle):]
        marks[name] = time.perf_counter() - start

    def send(line):
        p.stdin.write(line.encode() + b"\n")
        p.stdin.flush()

    wait_for(b"Linux version", "kernel")
    wait_for(b"login:", "login")
    send("root")
    wait_for(b"Password:", "password")
    send(password)
    wait_for(b"# ", "shell")
    send("systemctl is-system-running --wait; poweroff")
    p.wait(timeout=timeout)
    marks["exit"] = time.perf_counter() - start
    return marks


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    build_release()
    pipeline = json.loads(EXAMPLE.read_text())
    mm = stage_options(pipeline, "io.weldr.mmdebstrap")
    epoch = pipeline.get("source_epoch", 0)
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        tmp = Path(tmp)
        plain, totals, per_stage = [], [], {}
        for i in range(runs):
            # Alternating, so a change in the mirror's speed hits both.
            log(f"run {i + 1}/{runs}: plain mmdebstrap...")
            plain.append(plain_mmdebstrap(mm, epoch, tmp / "plain"))
            log(f"run {i + 1}/{runs}: osbuild examples/debian.json...")
            shutil.rmtree(tmp / "out", ignore_errors=True)
            total, stages = osbuild_example(tmp / "store", tmp / "out")
            totals.append(total)
            for name, s in stages.items():
                per_stage.setdefault(name, []).append(s)
            shutil.rmtree(tmp / "store", ignore_errors=True)
        t_plain, t_total = statistics.median(plain), statistics.median(totals)
        stages = {name: statistics.median(v) for name, v in per_stage.items()}
        t_mm = stages.get("io.weldr.mmdebstrap", 0.0)
        what = f"median of {runs}" if runs > 1 else "one run"
        print(f"examples/debian.json ({what}): total {t_total:.1f} s")
        for name, s in stages.items():
            print(f"  {name:<28} {s:8.2f} s  {s / t_total * 100:5.1f}%")
        rest = t_total - t_mm
        print(f"mmdebstrap: {t_mm:.1f} s in osbuild ({t_mm / t_total * 100:.0f}% of the build) vs "
              f"{t_plain:.1f} s plain ({(t_mm / t_plain - 1) * 100:+.1f}%); everything else {rest:.1f} s")
        print(f"total {t_total:.1f} s vs plain mmdebstrap {t_plain:.1f} s + 15 s = {t_plain + 15:.1f} s: "
              f"{'met' if t_total < t_plain + 15 else 'MISSED'} (margin {t_plain + 15 - t_total:+.1f} s)")

        marks = boot_to_login(tmp / "out" / stage_options(pipeline, "io.weldr.qcow2")["target"],
                              "osbuild")
        print(f"boot (osbuild boot, {'kvm' if kvm() else 'tcg'}): kernel at {marks['kernel']:.1f} s, "
              f"QEMU start -> login: {marks['login']:.1f} s, "
              f"running + poweroff, QEMU exited at {marks['exit']:.1f} s")


def kvm():
    """What osbuild boot picks: KVM where a hardware KVM module is loaded."""
    return os.access("/dev/kvm", os.R_OK | os.W_OK) and any(
        Path("/sys/module", m).exists() for m in ("kvm_intel", "kvm_amd"))


if __name__ == "__main__":
    main()
