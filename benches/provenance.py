#!/usr/bin/env python3
"""Benchmark for signed stages, SBOMs and provenance (issue 16).

1. --sbom and --provenance on examples/debian.json: the time each adds to
   a build, and the files' sizes. The cold build runs once (it needs the
   mirror); then fully cached rebuilds run RUNS times each, plain (the
   baseline, in the same run) and with --sbom, --provenance,
   --provenance --provenance-key, all three. The added time is what these
   flags cost whether the stages ran or not: the SBOM reads the final tree,
   the provenance hashes the image and the host tools.
2. `osbuild stage verify` of every built-in stage, signed with a fresh
   key: the total, against `osbuild stages show` of the same files (the
   load without the check) in the same run.

Needs root and the Debian mirror. Prints medians."""

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import OSBUILD, ROOT, build_release, log

DEBIAN = ROOT / "examples" / "debian.json"
RUNS = int(os.environ.get("RUNS", "5"))
STAGE_BUILD = ROOT / "target" / "stage-build"


def timed(cmd):
    start = time.perf_counter()
    subprocess.run([str(c) for c in cmd], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def builtin_files(dest):
    """The built-in stages as the binary embeds them, as stage files."""
    files = []
    for wasm in sorted((STAGE_BUILD / "wasm32-wasip2" / "release").glob("io_weldr_*.wasm")):
        name = wasm.stem.replace("io_weldr_", "io.weldr.").replace("_", "-")
        target = dest / f"{name}.wasm"
        shutil.copy(wasm, target)
        files.append(target)
    for stage in sorted((ROOT / "stages").iterdir()):
        exe = STAGE_BUILD / "release" / stage.name.replace(".", "-")
        if exe.is_file():
            target = dest / stage.name
            shutil.copy(exe, target)
            shutil.copy(stage / "stage.json", dest / f"{stage.name}.json")
            files.append(target)
    return files


def main():
    build_release()
    with tempfile.TemporaryDirectory(dir=ROOT / "target") as work:
        work = Path(work)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", work / "key"], check=True)
        store = work / "store"
        log("cold build of examples/debian.json (once)")
        cold = timed([OSBUILD, "--store", store, "--output-directory", work / "out", "-q", DEBIAN])
        variants = {
            "plain (baseline)": [],
            "--sbom": ["--sbom", work / "sbom.json"],
            "--provenance": ["--provenance", work / "prov.json"],
            "--provenance --provenance-key": ["--provenance", work / "sprov.json",
                                              "--provenance-key", work / "key"],
            "all three": ["--sbom", work / "sbom.json", "--provenance", work / "sprov.json",
                          "--provenance-key", work / "key"],
        }
        times = {k: [] for k in variants}
        for _ in range(RUNS):
            for k, extra in variants.items():
                times[k].append(timed([OSBUILD, "--store", store, "--output-directory", work / "out",
                                       "-q", *extra, DEBIAN]))
        base = statistics.median(times["plain (baseline)"])
        print(f"examples/debian.json: cold build {cold:.1f} s; fully cached rebuild {base * 1000:.0f} ms "
              f"(median of {RUNS})")
        for k in variants:
            m = statistics.median(times[k])
            print(f"  {k:<32} {m * 1000:7.0f} ms  +{(m - base) * 1000:6.0f} ms  "
                  f"x{m / base:.2f} of the cached rebuild, +{(m - base) / cold * 100:.2f}% of the cold build")
        image = work / "out" / "debian.qcow2"
        print(f"  image {image.stat().st_size / 1e6:.0f} MB; SBOM {(work / 'sbom.json').stat().st_size / 1e3:.0f} kB; "
              f"provenance {(work / 'prov.json').stat().st_size / 1e3:.1f} kB, "
              f"signed {(work / 'sprov.json').stat().st_size / 1e3:.1f} kB")

        stages = work / "stages"
        stages.mkdir()
        files = builtin_files(stages)
        for f in files:
            subprocess.run([OSBUILD, "stage", "sign", f, "--key", work / "key"], check=True,
                           stderr=subprocess.DEVNULL)
        verify, show = [], []
        for _ in range(RUNS):
            verify.append(sum(timed([OSBUILD, "stage", "verify", f, "--key", work / "key.pub"]) for f in files))
            show.append(sum(timed([OSBUILD, "stages", "show", f]) for f in files))
        v, s = statistics.median(verify), statistics.median(show)
        size = sum(f.stat().st_size for f in files)
        print(f"stage verify of the {len(files)} built-in stages ({size / 1e6:.1f} MB): {v * 1000:.0f} ms in all, "
              f"{v / len(files) * 1000:.1f} ms each; loading them without the check (stages show) "
              f"{s * 1000:.0f} ms: x{v / s:.2f}")


if __name__ == "__main__":
    main()
