#!/usr/bin/env python3
"""Benchmark for the object store, on a ~650 MB Debian tree (mmdebstrap with
a kernel) followed by 10 configuration stages: the cold build, a fully
cached rebuild, a rebuild after changing only the last stage, the cost of a
checkpoint (handing the tree over) against one `cp -a` of the tree, and the
store's disk use against the tree's size. Both handoffs (overlay, copy).
Ratios from one run. Needs root and the Debian mirror."""

import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import MIRROR, OSBUILD, TEST_STAGES, WORK, build_release, log, sh


def config_stages(last_hostname):
    return [
        {"name": "io.weldr.locale", "options": {"language": "C.UTF-8"}},
        {"name": "io.weldr.timezone", "options": {"zone": "Europe/Berlin"}},
        {"name": "io.weldr.machine-id", "options": {"first-boot": "yes"}},
        {"name": "io.weldr.groups", "options": {"groups": {"staff2": {"gid": 2000}}}},
        {"name": "io.weldr.users", "options": {"users": {"alice": {"uid": 2000, "groups": ["staff2"]}}}},
        {"name": "io.weldr.fstab", "options": {"filesystems": [{"uuid": "76a22bf4-f153-4541-b6c7-0332c0dfaeac", "path": "/", "vfs_type": "ext4"}]}},
        {"name": "io.weldr.kernel-cmdline", "options": {"root_fs_uuid": "76a22bf4-f153-4541-b6c7-0332c0dfaeac", "kernel_opts": "ro"}},
        {"name": "io.weldr.systemd", "options": {"default_target": "multi-user.target"}},
        {"name": "io.weldr.files", "options": {"write": [{"path": "/etc/motd", "content": "hi\n"}]}},
        {"name": "io.weldr.hostname", "options": {"hostname": last_hostname}},
    ]


def pipeline(path, last_hostname):
    path.write_text(json.dumps({"source_epoch": 1700000000, "pipeline": [
        {"name": "io.weldr.mmdebstrap", "options": {"suite": "bookworm", "variant": "minbase",
                                                   "packages": ["linux-image-amd64", "systemd-sysv"],
                                                   "mirrors": [MIRROR]}},
        *config_stages(last_hostname),
    ]}))
    return path


def timed(args):
    start = time.perf_counter()
    p = subprocess.run([str(a) for a in args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(p.stderr)
    return time.perf_counter() - start, p.stderr


def stage_ms(stderr, name):
    m = re.findall(rf"^\s+{re.escape(name)} done in ([0-9.]+) ms", stderr, re.M)
    return float(m[-1])


def du(path):
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True).stdout.split()[0])


def main():
    build_release()
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        tmp = Path(tmp)
        # Per-stage overhead with caching on: 20 no-op wasm stages whose
        # results are not in the store yet (new options each run), against
        # an empty pipeline; compiled stages are warm.
        store = tmp / "store-overhead"
        def noops(run_no, n):
            p = tmp / f"noop-{run_no}-{n}.json"
            p.write_text(json.dumps({"pipeline": [{"name": "test.noop", "options": {"n": run_no * 100 + i}} for i in range(n)]}))
            return p
        base = [OSBUILD, "--store", store, "--libdir", TEST_STAGES, "-q"]
        timed([*base, noops(0, 20)])
        t0 = statistics.median([timed([*base, noops(r, 0)])[0] for r in range(1, 12)])
        t20 = statistics.median([timed([*base, noops(r, 20)])[0] for r in range(12, 23)])
        print(f"per-stage overhead with caching on (20 no-op wasm stages, new results, one checkpoint): "
              f"{(t20 - t0) / 20 * 1000:.2f} ms/stage (target < 2 ms)")
        shutil.rmtree(store)

        for handoff in ["overlay", "copy"]:
            store = tmp / f"store-{handoff}"
            base = [OSBUILD, "--store", store, "--libdir", TEST_STAGES, "--handoff", handoff]
            p1 = pipeline(tmp / "p1.json", "box-one")
            p2 = pipeline(tmp / "p2.json", "box-two")
            cold, _ = timed([*base, p1])
            cached, _ = timed([*base, p1])
            last, _ = timed([*base, p2])
            save = tmp / "final.tar"
            timed([*base, "--save", save, p2])
            tree = tmp / "tree"
            tree.mkdir()
            sh(f"tar -xpf {save} -C {tree}")
            tree_size = du(tree)
            store_size = du(store / "objects")
            t_cp = sh(f"cp -a {tree} {tmp}/tree-copy && sync")
            shutil.rmtree(tmp / "tree-copy")
            # A checkpoint costs what a native no-op stage costs on this tree
            # beyond what it costs on an empty one.
            noop = [{"name": "test.native-probe", "options": {"action": "tmp-check"}}]
            (tmp / "big.json").write_text(json.dumps({"pipeline": noop}))
            (tmp / "small.json").write_text(json.dumps({"pipeline": noop}))
            tarball = tmp / "tree.tar"
            shutil.move(save, tarball)
            _, big = timed([*base, "--no-cache", "--from", tarball, tmp / "big.json"])
            _, big_cached = timed([OSBUILD, "--store", tmp / f"h-{handoff}", "--libdir", TEST_STAGES, "--handoff", handoff, "--from", tarball, tmp / "big.json"])
            _, small = timed([OSBUILD, "--store", tmp / f"s-{handoff}", "--libdir", TEST_STAGES, "--handoff", handoff, tmp / "small.json"])
            handoff_s = (stage_ms(big_cached, "test.native-probe") - stage_ms(small, "test.native-probe")) / 1000
            print(f"[{handoff}] tree {tree_size/1e6:.0f} MB; cold build {cold:.1f} s; fully cached rebuild {cached:.2f} s "
                  f"({cached / cold * 100:.2f}% of cold, target < 1%); last stage changed {last:.2f} s (target < 2 s)")
            print(f"[{handoff}] checkpoint (tree handoff into the store) {handoff_s*1000:.0f} ms = "
                  f"{max(handoff_s, 0) / t_cp * 100:.1f}% of one cp -a ({t_cp:.1f} s) (target < 2%); "
                  f"between wasm stages: none (one tree, no copy)")
            print(f"[{handoff}] store {store_size/1e6:.0f} MB for a final tree of {tree_size/1e6:.0f} MB: "
                  f"{store_size / tree_size:.2f}x (target < 1.3x)")
            shutil.rmtree(tree)
            for d in [store, tmp / f"h-{handoff}", tmp / f"s-{handoff}"]:
                shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
