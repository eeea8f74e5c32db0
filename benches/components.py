#!/usr/bin/env python3
"""First build on a fresh machine: what compiling the wasm components costs.

Each wasm stage's component is compiled on its first use and cached in the
store (`components/`). osbuild compiles the pipeline's components in a
background thread while the first stages run. This measures, in one run:

- examples/debian.json from an empty object store (--no-cache), with an
  empty component cache, against a warm one (target: under 1 s apart: the
  compiles overlap mmdebstrap), and with an empty cache and the prefetch
  off (OSBUILD_PREFETCH=0), what compiling each stage as it runs costs;
- examples/debian-config.json (wasm stages only) --from a Debian tree,
  cold against warm component cache, with and without the prefetch.

    benches/components.py [RUNS]      # default 1 for debian.json, 5 for the config pipeline

Needs root and the Debian mirror (tools/setup)."""

import json
import os
import shutil
import subprocess
import statistics
import sys
import tempfile
from pathlib import Path

from common import OSBUILD, ROOT, build_release, log
from library_config import config_tarball

EXAMPLE = ROOT / "examples" / "debian.json"
CONFIG = ROOT / "examples" / "debian-config.json"


def build(pipeline, store, out, extra=(), prefetch=True):
    """Returns (whole build seconds, seconds spent in the stages).

    The stages' sum leaves out unpacking --from, which dominates the
    config pipeline's wall time and varies more than the compiles cost."""
    env = {**os.environ}
    if not prefetch:
        env["OSBUILD_PREFETCH"] = "0"
    cmd = [OSBUILD, "--store", store, "--no-cache", "--output-directory", out, "--json", *extra, pipeline]
    p = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{p.stderr}")
    result = json.loads(p.stdout)
    stages = sum(s["duration_ms"] for s in result["stages"]) / 1000
    return result["duration_ms"] / 1000, stages


LABELS = ("cold", "cold, no prefetch", "warm")


def case(pipeline, extra, runs, work):
    """Returns {label: (median build seconds, median stage seconds)}."""
    warm_store = work / "warm"
    build(pipeline, warm_store, work / "out", extra)  # fills its components/
    times = {label: [] for label in LABELS}
    for _ in range(runs):
        for label in LABELS:
            if label == "warm":
                store = warm_store
            else:
                store = work / "cold"
                shutil.rmtree(store, ignore_errors=True)
            t = build(pipeline, store, work / "out", extra, prefetch=(label != "cold, no prefetch"))
            times[label].append(t)
            log(f"  {pipeline.name} {label}: build {t[0]:.2f} s, stages {t[1]:.2f} s")
    return {k: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v))
            for k, v in times.items()}


def main():
    build_release()
    config_runs = int(sys.argv[1]) * 5 if len(sys.argv) > 1 else 5
    example_runs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    tree = config_tarball()
    with tempfile.TemporaryDirectory(dir=ROOT / "target") as d:
        work = Path(d)
        (work / "out").mkdir()
        log(f"examples/debian-config.json --from {tree.name}, median of {config_runs}")
        c = case(CONFIG, ["--from", str(tree)], config_runs, work)
        shutil.rmtree(work / "warm")
        log(f"examples/debian.json, median of {example_runs}")
        e = case(EXAMPLE, [], example_runs, work)
    for name, r in (("debian-config.json", c), ("debian.json", e)):
        for i, what in enumerate(("build", "stages")):
            warm = r["warm"][i]
            cold = r["cold"][i]
            slow = r["cold, no prefetch"][i]
            print(f"{name} {what}: warm {warm:.2f} s, cold {cold:.2f} s "
                  f"(+{cold - warm:.2f} s, {cold / warm:.2f}x), "
                  f"cold without prefetch {slow:.2f} s (+{slow - warm:.2f} s, {slow / warm:.2f}x)")

if __name__ == "__main__":
    main()
