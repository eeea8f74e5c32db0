#!/usr/bin/env python3
"""What the sandbox's hardening costs (issue 11): per-stage overhead of
20 no-op wasm stages, and the 13 configuration stages of
examples/debian-config.json on a Debian tree, for the binary of commit
e49fb6b (before; built once into target/bench) against this one, runs
interleaved in the same process. Target: at most 10% more. Also the peak
RSS of osbuild while a stage floods its output without newlines for 10 s
(target under 64 MiB).

    benches/sandbox.py [RUNS]     # default 9

Needs root and the Debian mirror (tools/setup)."""

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import OSBUILD, ROOT, TEST_STAGES, WORK, build_release, log, pipeline_file
from library_config import config_tarball

BEFORE = "e49fb6b"
CONFIG = ROOT / "examples" / "debian-config.json"


def baseline():
    """(osbuild, test stages dir) of commit BEFORE."""
    src = WORK / f"{BEFORE}-src"
    target = WORK / f"{BEFORE}-target"
    exe = target / "release" / "osbuild"
    if not exe.exists():
        if not src.exists():
            subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", src, BEFORE], check=True)
        log(f"building osbuild at {BEFORE} into {target} (once; about 12 minutes on 2 cores)...")
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "osbuild"], cwd=src, check=True,
                       env={**os.environ, "CARGO_TARGET_DIR": str(target)})
    stages = next((p.parent for p in [*target.rglob("test.noop.wasm"), *src.rglob("test.noop.wasm")]), None)
    if stages is None:
        raise SystemExit(f"no test stages built for {BEFORE} under {target} or {src}")
    return exe, stages


def stage_seconds(exe, args):
    """Seconds spent in the stages of one build (from --json)."""
    p = subprocess.run([str(a) for a in [exe, *args, "--json"]], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{exe} {args} failed:\n{p.stderr}")
    result = json.loads(p.stdout)
    return sum(s["duration_ms"] for s in result["stages"]) / 1000, result["duration_ms"] / 1000


def compare(label, cases, runs):
    """cases: {name: args-builder(exe, stages, store)}; prints before/after."""
    for name, make in cases.items():
        times = {"before": [], "after": []}
        for _ in range(runs):
            for which, (exe, stages, store) in BINARIES.items():
                times[which].append(stage_seconds(exe, make(exe, stages, store)))
        b = statistics.median(t[0] for t in times["before"])
        a = statistics.median(t[0] for t in times["after"])
        bw = statistics.median(t[1] for t in times["before"])
        aw = statistics.median(t[1] for t in times["after"])
        print(f"{label} {name}: stages {b * 1000:.1f} ms before, {a * 1000:.1f} ms after "
              f"({a / b:.3f}x; target <= 1.10); whole build {bw * 1000:.0f} ms before, {aw * 1000:.0f} ms after ({aw / bw:.3f}x)")


def flood_rss():
    with tempfile.TemporaryDirectory(dir=WORK) as d:
        p = Path(d) / "flood.json"
        p.write_text(json.dumps({"pipeline": [{"name": "test.loop", "options": {"mode": "flood"}}]}))
        r = subprocess.run(["/usr/bin/time", "-f", "%M", "--", OSBUILD, "--store", Path(d) / "store",
                            "--no-cache", "--libdir", TEST_STAGES, "--timeout", "10", p],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        kib = int(r.stderr.strip().splitlines()[-1])
        print(f"peak RSS while a stage floods its output without newlines for 10 s: {kib / 1024:.1f} MiB (target < 64 MiB)")


BINARIES = {}


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    WORK.mkdir(parents=True, exist_ok=True)
    build_release()
    before_exe, before_stages = baseline()
    tree = config_tarball()
    with tempfile.TemporaryDirectory(dir=WORK) as d:
        d = Path(d)
        BINARIES["before"] = (before_exe, before_stages, d / "store-before")
        BINARIES["after"] = (OSBUILD, Path(TEST_STAGES), d / "store-after")
        noop = pipeline_file([{"name": "test.noop", "options": {"n": i}} for i in range(20)], d)

        def noops(exe, stages, store):
            return ["--store", store, "--libdir", stages, "-q", "--no-cache", noop]

        def config(exe, stages, store):
            return ["--store", store, "-q", "--no-cache", "--from", tree, CONFIG]

        for exe, stages, store in BINARIES.values():  # fill each component cache
            stage_seconds(exe, noops(exe, stages, store))
            stage_seconds(exe, config(exe, stages, store))
        compare("median of", {"20 no-op wasm stages": noops, "13 config stages on a Debian tree": config}, runs)
    flood_rss()


if __name__ == "__main__":
    main()
