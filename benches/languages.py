#!/usr/bin/env python3
"""Stages in Rust, Python and JavaScript: what each language costs.

For the same trivial stage in each language (the project `osbuild stage
new` writes), in one run:

- the component's size;
- its first run with an empty component cache (the compile, which the run
  waits for: a one-stage pipeline, prefetch off) against a warm one;
- the warm per-stage time, median of RUNS runs (the compiled component is
  in the store), as a ratio against the Rust stage's;
- a pipeline whose first stage is native (a 12 s stage) and whose second is
  the Python stage, cold against warm component cache: the compile is done
  by the prefetch while the native stage runs (target: no visible cost).

    benches/languages.py [RUNS]      # default 20

Needs root and the stage toolchains (tools/setup toolchains)."""

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import OSBUILD, ROOT, TEST_STAGES, build_release, log

LANGS = ("rust", "python", "javascript")


def osbuild(*args, env=None):
    p = subprocess.run([str(OSBUILD), *map(str, args)], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"osbuild {' '.join(map(str, args))} failed:\n{p.stderr}")
    return p


def build(store, pipeline, libdirs, prefetch=True):
    """(whole build seconds, each stage's seconds) from --json."""
    import os
    env = {**os.environ}
    if not prefetch:
        env["OSBUILD_PREFETCH"] = "0"
    args = ["--store", store, "--no-cache", "--json"]
    for lib in libdirs:
        args += ["--libdir", lib]
    result = json.loads(osbuild(*args, pipeline, env=env).stdout)
    return result["duration_ms"] / 1000, [s["duration_ms"] / 1000 for s in result["stages"]]


def pipeline(work, name, stages):
    path = work / f"{name}.json"
    path.write_text(json.dumps({"source_epoch": 1700000000, "pipeline": stages}))
    return path


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    build_release()
    rows = {}
    with tempfile.TemporaryDirectory(dir=ROOT / "target") as d:
        work = Path(d)
        for lang in LANGS:
            project = work / lang
            name = f"bench.{lang}"
            osbuild("stage", "new", name, "--lang", lang, project)
            osbuild("--store", work / "scratch-store", "stage", "build", project)
            size = (project / f"{name}.wasm").stat().st_size / 1e6
            p = pipeline(work, lang, [{"name": name, "options": {"text": "hello"}}])
            cold_store = work / "cold"
            shutil.rmtree(cold_store, ignore_errors=True)
            _, (first,) = build(cold_store, p, [project], prefetch=False)
            warm = []
            for _ in range(runs):
                _, (t,) = build(cold_store, p, [project])
                warm.append(t)
            rows[lang] = (size, first, statistics.median(warm))
            log(f"  {lang}: {size:.1f} MB, first run {first:.2f} s, warm {statistics.median(warm) * 1000:.2f} ms")
        base = rows["rust"][2]
        print(f"{'language':<11} {'component':>10} {'first run':>10} {'warm stage':>11} {'vs Rust':>8}")
        for lang, (size, first, warm) in rows.items():
            print(f"{lang:<11} {size:>8.1f}MB {first:>9.2f}s {warm * 1000:>9.2f}ms {warm / base:>7.2f}x")

        # A native stage first: the Python stage's compile hides behind it.
        p = pipeline(work, "native-first", [
            {"name": "test.native-probe", "options": {"action": "sleep", "seconds": 12}},
            {"name": "bench.python", "options": {"text": "hello"}},
        ])
        libs = [work / "python", TEST_STAGES]
        cold = []
        warm_store = work / "warm"
        build(warm_store, p, libs)
        warm = []
        for _ in range(3):
            shutil.rmtree(work / "cold", ignore_errors=True)
            cold.append(build(work / "cold", p, libs))
            warm.append(build(warm_store, p, libs))
        c = statistics.median(t for t, _ in cold)
        w = statistics.median(t for t, _ in warm)
        cs = statistics.median(s[1] for _, s in cold)
        ws = statistics.median(s[1] for _, s in warm)
        print(f"native stage then Python stage: cold components {c:.2f} s, warm {w:.2f} s "
              f"({c / w:.3f}x); the Python stage itself {cs * 1000:.1f} ms cold, {ws * 1000:.1f} ms warm")


if __name__ == "__main__":
    main()
