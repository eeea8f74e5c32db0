"""Shared helpers for the benchmark scripts: timing, peak memory, and a
cached Debian tree to measure on. Timings are always reported as ratios
against a baseline measured in the same run."""

import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "bench"
# OSBUILD_BENCH_BIN: measure a binary already built (a debug build, say;
# the ratios compare two modes of one binary) instead of building release.
OSBUILD = Path(os.environ.get("OSBUILD_BENCH_BIN", ROOT / "target" / "release" / "osbuild"))
TEST_STAGES = Path(os.environ.get("OSBUILD_BENCH_TEST_STAGES",
                                  ROOT / "target" / "stage-build" / "test-stages-release"))
MIRROR = os.environ.get("OSBUILD_MIRROR", "http://deb.debian.org/debian")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def build_release():
    if os.environ.get("OSBUILD_BENCH_BIN"):
        return
    # The test stages are a crate of their own (never in the binary).
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "osbuild-cli", "-p", "osbuild-test-stages"],
                   cwd=ROOT, check=True)


def run(cmd, **kw):
    """Runs cmd; returns (seconds, peak RSS in MiB of the process tree's largest member)."""
    wrapped = ["/usr/bin/time", "-f", "%M", "--"] + [str(c) for c in cmd]
    start = time.perf_counter()
    p = subprocess.run(wrapped, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kw)
    elapsed = time.perf_counter() - start
    if p.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{p.stderr}")
    rss_kib = int(p.stderr.strip().splitlines()[-1])
    return elapsed, rss_kib / 1024


def sh(script):
    start = time.perf_counter()
    subprocess.run(["bash", "-ec", script], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def median_time(cmd, n, **kw):
    return statistics.median(run(cmd, **kw)[0] for _ in range(n))


# What examples/debian-config.json configures (its services and files),
# as tests/common's debian_base installs it.
CONFIG_PACKAGES = ("systemd", "systemd-sysv", "tzdata", "openssh-server", "chrony",
                   "procps", "kmod", "locales", "dbus")


def debian_tarball(kernel=True, packages=()):
    """A Debian bookworm tree as a .tar (mmdebstrap, cached in target/bench):
    minbase, with a kernel or with `packages`."""
    WORK.mkdir(parents=True, exist_ok=True)
    if packages:
        name = "bookworm-" + hashlib.sha256(",".join(packages).encode()).hexdigest()[:12] + ".tar"
    else:
        name = "bookworm-kernel.tar" if kernel else "bookworm-minbase.tar"
    path = WORK / name
    if not path.exists():
        if packages:
            include = ["--include=" + ",".join(packages)]
        else:
            include = ["--include=linux-image-amd64,systemd-sysv"] if kernel else []
        log(f"making {path} with mmdebstrap (about a minute)...")
        tmp = path.with_suffix(".tmp.tar")
        subprocess.run(
            ["mmdebstrap", "--variant=minbase", *include,
             "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg",
             "bookworm", str(tmp), MIRROR],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"},
        )
        tmp.rename(path)
    return path


def pipeline_file(stages, directory):
    path = Path(directory) / "pipeline.json"
    path.write_text(json.dumps({"pipeline": stages}))
    return path
