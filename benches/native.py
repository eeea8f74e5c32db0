#!/usr/bin/env python3
"""Benchmark for native stages: nspawn start overhead vs a wasm no-op,
io.weldr.mmdebstrap inside osbuild vs plain mmdebstrap, and io.weldr.qcow2
vs mkfs.ext4 -d + qemu-img convert by hand. Ratios from one run.
Needs root and the Debian mirror."""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (MIRROR, OSBUILD, TEST_STAGES, WORK, build_release, debian_tarball, log,
                    pipeline_file, run, sh)


# Runs of each mmdebstrap variant; the mirror's speed varies from run to run.
RUNS = int(os.environ.get("OSBUILD_BENCH_RUNS", "3"))


def stage_seconds(cmd, name):
    """The duration osbuild reports for stage `name` (--monitor json)."""
    p = subprocess.run([str(c) for c in cmd] + ["--monitor", "json"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True, check=True)
    for line in p.stdout.splitlines():
        e = json.loads(line)
        if os.environ.get("OSBUILD_BENCH_VERBOSE") and e.get("event") == "output":
            print(f"  {e['name']}: {e['line']}")
        if e.get("event") == "stage-finished" and e.get("name") == name:
            return e["duration_ms"] / 1000
    raise SystemExit(f"no stage-finished event for {name}")


def timed(cmd, n):
    return [run(cmd)[0] for _ in range(n)]


def main():
    # Sections to run (all by default): nspawn mmdebstrap qcow2
    only = set(sys.argv[1:]) or {"nspawn", "mmdebstrap", "qcow2"}
    build_release()
    WORK.mkdir(parents=True, exist_ok=True)
    store = WORK / "store"
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        tmp = Path(tmp)
        base = ["--store", store, "--libdir", TEST_STAGES, "-q", "--no-cache"]
        (tmp / "empty.json").write_text('{"pipeline": []}')
        native = tmp / "native.json"
        native.write_text('{"pipeline": [{"name": "test.native-probe", "options": {"action": "write-tree"}}]}')
        wasm = tmp / "wasm.json"
        wasm.write_text('{"pipeline": [{"name": "test.noop"}]}')
        run([OSBUILD, *base, wasm])
        if "nspawn" in only:
            nspawn_overhead(base, tmp, native, wasm)
        if "mmdebstrap" in only:
            mmdebstrap(base, tmp)
        if "qcow2" in only:
            qcow2(base, tmp)


def nspawn_overhead(base, tmp, native, wasm):
    empty = statistics.median(timed([OSBUILD, *base, tmp / "empty.json"], 10))
    w = statistics.median(timed([OSBUILD, *base, wasm], 10)) - empty
    # The user namespace (id range, id-mapped tree, generated root) vs the
    # host's root on its / read-only (OSBUILD_NATIVE_USERNS=0), alternating.
    userns, old = [], []
    for _ in range(10):
        userns.append(run([OSBUILD, *base, native])[0])
        old.append(run([OSBUILD, *base, native], env={**os.environ, "OSBUILD_NATIVE_USERNS": "0"})[0])
    n, o = statistics.median(userns) - empty, statistics.median(old) - empty
    print(f"no-op stage, median of 10: native in a user namespace {n*1000:.0f} ms (target at most 150 ms), "
          f"as the host's root {o*1000:.0f} ms ({n / o:.2f}x), wasm {w*1000:.2f} ms: "
          f"native costs {n / w:.0f}x a wasm stage")


def mmdebstrap(base, tmp):
    # mmdebstrap: inside osbuild vs plain, same suite and variant,
    # alternating, median of RUNS each (the mirror's speed varies).
    mm = tmp / "mm.json"
    mm.write_text('{"pipeline": [{"name": "io.weldr.mmdebstrap", "options": '
                  f'{{"suite": "bookworm", "variant": "minbase", "mirrors": ["{MIRROR}"]}}}}]}}')
    plain_dir = tmp / "plain"
    plain, inside = [], []
    for _ in range(RUNS):
        plain.append(sh(f"mmdebstrap --quiet --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg "
                        f"bookworm {plain_dir} {MIRROR} 2>/dev/null; rm -rf {plain_dir}"))
        inside.append(run([OSBUILD, *base, mm])[0])
    t_plain, t_osb = statistics.median(plain), statistics.median(inside)
    print(f"mmdebstrap minbase, median of {RUNS}: osbuild {t_osb:.1f} s vs plain {t_plain:.1f} s (both incl. removing the tree): "
          f"{(t_osb / t_plain - 1) * 100:+.1f}% (target within 5%)")
    print("  each run, plain: " + ", ".join(f"{t:.1f}" for t in plain)
          + "; osbuild: " + ", ".join(f"{t:.1f}" for t in inside))


def qcow2(base, tmp):
    # qcow2 of the ~650 MB kernel tree vs by hand.
    tar = debian_tarball(kernel=True)
    tree = tmp / "tree"
    tree.mkdir()
    sh(f"tar --xattrs --xattrs-include='*' -xpf {tar} -C {tree}")
    out = tmp / "out"
    q = tmp / "q.json"
    q.write_text('{"pipeline": [{"name": "io.weldr.qcow2", "options": {"target": "disk.qcow2", "bootloader": "none"}}]}')
    # The stage's own time (from --monitor json): the unpack of --from
    # before it varies by seconds on ext4 right after a tree of the same
    # size was deleted (the inode allocator skips recently freed inodes).
    size = int(os.popen(f"du -sb {tree}").read().split()[0])
    mb = (size * 5 // 4 + (256 << 20)) >> 20
    ours, hand = [], []
    for _ in range(RUNS):
        # Each side starts with no earlier image to replace and nothing
        # left to write back from the other (both vary by seconds here).
        sh(f"rm -rf {out} {tmp}/hand.raw {tmp}/hand.qcow2")
        os.sync()
        ours.append(stage_seconds([OSBUILD, *base, "--from", tar, "--output-directory", out, q],
                                  "io.weldr.qcow2"))
        sh(f"rm -rf {out}")
        os.sync()
        hand.append(sh(f"truncate -s {mb}M {tmp}/hand.raw && "
                       f"mkfs.ext4 -q -F -d {tree} {tmp}/hand.raw && "
                       f"qemu-img convert -O qcow2 {tmp}/hand.raw {tmp}/hand.qcow2"))
    t_q, t_hand = statistics.median(ours), statistics.median(hand)
    print(f"qcow2 of the kernel tree, median of {RUNS}: io.weldr.qcow2 {t_q:.1f} s vs mkfs.ext4 -d + qemu-img by hand {t_hand:.1f} s: "
          f"{(t_q / t_hand - 1) * 100:+.1f}% (target within 10%)")
    print("  each run, io.weldr.qcow2: " + ", ".join(f"{t:.1f}" for t in ours)
          + "; by hand: " + ", ".join(f"{t:.1f}" for t in hand))


if __name__ == "__main__":
    main()
