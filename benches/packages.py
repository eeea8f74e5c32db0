#!/usr/bin/env python3
"""Benchmark for packages as sources, all ratios from one run:

- examples/debian.json from an empty object store with a warm package
  cache, against plain mmdebstrap with the same packages into a directory
  (alternating, median of 3): the whole build, and its mmdebstrap stage;
- the same with an empty package cache (a new store each run);
- the package cache's size against the packages' total size (the lock's);
- a fully cached build with a ~100 MB --from archive against its cold
  build (the archive's digest remembered, not computed again).

Needs root and the Debian mirror."""

import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import MIRROR, OSBUILD, ROOT, WORK, build_release, debian_tarball, log

EXAMPLE = ROOT / "examples" / "debian.json"


def timed(args, **kw):
    start = time.perf_counter()
    p = subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if p.returncode != 0:
        raise SystemExit(f"{args} failed:\n{p.stderr[-3000:]}")
    return time.perf_counter() - start, p


def stage_seconds(stderr, name):
    m = re.findall(rf"^\s+{re.escape(name)} done in ([0-9.]+) ms", stderr, re.M)
    return float(m[-1]) / 1000


def du(path):
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True).stdout.split()[0])


def plain_mmdebstrap(tmp, options):
    target = tmp / "plain"
    shutil.rmtree(target, ignore_errors=True)
    args = ["mmdebstrap", f"--variant={options['variant']}",
            "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg"]
    if options.get("packages"):
        args.append("--include=" + ",".join(options["packages"]))
    args += [options["suite"], target, options.get("mirrors", [MIRROR])[0]]
    took, _ = timed(args, env={"SOURCE_DATE_EPOCH": "1700000000", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    shutil.rmtree(target, ignore_errors=True)
    return took


def main():
    build_release()
    WORK.mkdir(parents=True, exist_ok=True)
    pipeline = json.loads(EXAMPLE.read_text())
    options = pipeline["pipeline"][0]["options"]
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        tmp = Path(tmp)
        out = tmp / "out"
        warm_store = tmp / "warm"
        build = lambda store: timed([OSBUILD, "--store", store, "--output-directory", out, "--no-lock", EXAMPLE])
        log("warming the package cache (one build)...")
        build(warm_store)
        plain, warm, warm_stage, cold, cold_stage = [], [], [], [], []
        for i in range(3):
            log(f"round {i + 1} of 3: plain mmdebstrap, warm cache, plain mmdebstrap, cold cache")
            plain.append(plain_mmdebstrap(tmp, options))
            timed([OSBUILD, "--store", warm_store, "store", "clear", "--objects"])
            took, p = build(warm_store)
            warm.append(took)
            warm_stage.append(stage_seconds(p.stderr, "io.weldr.mmdebstrap"))
            plain.append(plain_mmdebstrap(tmp, options))
            cold_store = tmp / f"cold-{i}"
            took, p = build(cold_store)
            cold.append(took)
            cold_stage.append(stage_seconds(p.stderr, "io.weldr.mmdebstrap"))
            shutil.rmtree(cold_store)
        m = statistics.median
        print(f"plain mmdebstrap ({', '.join(options.get('packages', []))}): median {m(plain):.1f} s of {len(plain)}")
        print(f"warm package cache, empty object store: whole build {m(warm):.1f} s ({m(warm) / m(plain):.2f}x plain), "
              f"its mmdebstrap stage {m(warm_stage):.1f} s ({m(warm_stage) / m(plain):.2f}x plain; target <= 0.5x)")
        print(f"empty package cache: whole build {m(cold):.1f} s ({m(cold) / m(plain):.2f}x plain), "
              f"its mmdebstrap stage {m(cold_stage):.1f} s ({m(cold_stage) / m(plain):.2f}x plain; target within 5%)")

        lock = tmp / "debian.lock.json"
        timed([OSBUILD, "--store", warm_store, "lock", "--output", lock, EXAMPLE])
        packages = json.loads(lock.read_text())["stages"][0]["resolved"]["packages"]
        total = sum(p["size"] for p in packages)
        cache = du(warm_store / "packages" / "sha256")
        print(f"package cache {cache / 1e6:.1f} MB on disk for {len(packages)} packages of {total / 1e6:.1f} MB: "
              f"{cache / total:.3f}x")

        # --from: a ~100 MB archive; the cold build hashes and unpacks it,
        # the cached one reads none of it.
        archive = debian_tarball(kernel=False, packages=("systemd", "systemd-sysv", "dbus", "locales", "perl"))
        from_pipeline = tmp / "from.json"
        from_pipeline.write_text(json.dumps({"pipeline": [
            {"name": "io.weldr.hostname", "options": {"hostname": "from"}}]}))
        store = tmp / "from-store"
        cold_from, _ = timed([OSBUILD, "--store", store, "--from", archive, from_pipeline])
        cached_from = m([timed([OSBUILD, "--store", store, "--from", archive, from_pipeline])[0] for _ in range(5)])
        print(f"--from {archive.stat().st_size / 1e6:.0f} MB archive: cold build {cold_from:.2f} s, fully cached "
              f"{cached_from * 1000:.0f} ms ({cached_from / cold_from * 100:.2f}% of cold; target < 0.5%)")


if __name__ == "__main__":
    main()
