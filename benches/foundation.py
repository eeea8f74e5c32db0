#!/usr/bin/env python3
"""Benchmark for the foundation: per-stage overhead of wasm stages, and
--save / --from against tar + gzip and tar + zstd on a real Debian tree
(~650 MB), and --save .tar.zst against --save .tar.gz.
Prints ratios measured in this run. Needs root and the Debian mirror."""

import os
import shutil
import tempfile
from pathlib import Path

from common import (OSBUILD, TEST_STAGES, WORK, build_release, debian_tarball, log,
                    median_time, pipeline_file, run, sh)


def main():
    build_release()
    store = WORK / "store"
    with tempfile.TemporaryDirectory(dir=WORK if WORK.exists() else None) as tmp:
        tmp = Path(tmp)
        # Per-stage overhead: 20 no-op wasm stages vs an empty pipeline.
        empty = pipeline_file([], tmp)
        empty_p = tmp / "empty.json"
        empty.rename(empty_p)
        noop = pipeline_file([{"name": "test.noop", "options": {"n": i}} for i in range(20)], tmp)
        base = ["--store", store, "--libdir", TEST_STAGES, "-q", "--no-cache"]
        run([OSBUILD, *base, noop])  # warm the component cache
        t0 = median_time([OSBUILD, *base, empty_p], 15)
        t20 = median_time([OSBUILD, *base, noop], 15)
        per_stage_ms = (t20 - t0) / 20 * 1000
        print(f"per-stage overhead (20 no-op wasm stages, warm): {per_stage_ms:.2f} ms/stage "
              f"(whole run {t20*1000:.1f} ms, empty pipeline {t0*1000:.1f} ms); target < 2 ms")

        # --save and --from on a real tree.
        tar = debian_tarball(kernel=True)
        tree = tmp / "tree"
        tree.mkdir()
        sh(f"tar --xattrs --xattrs-include='*' -xpf {tar} -C {tree}")
        size = sh  # noqa
        du = os.popen(f"du -sb {tree}").read().split()[0]
        files = os.popen(f"find {tree} | wc -l").read().strip()
        log(f"tree: {int(du)/1e6:.0f} MB, {files} entries")
        base_gz = tmp / "base.tar.gz"
        t_tar_gzip = sh(f"tar --xattrs --xattrs-include='*' --numeric-owner --sort=name -C {tree} -cf - . | gzip -6 > {base_gz}")
        t_tar_x = sh(f"mkdir {tmp}/x && tar -xzpf {base_gz} -C {tmp}/x && rm -rf {tmp}/x")

        t_from, rss_from = run([OSBUILD, *base, "--from", base_gz, empty_p])
        t_from_save, rss_save = run([OSBUILD, *base, "--from", base_gz, "--save", tmp / "out.tar.gz", empty_p])
        t_save = t_from_save - t_from
        t_from_only = t_from - t0
        out_size = (tmp / "out.tar.gz").stat().st_size
        print(f"--save: {t_save:.2f} s vs tar | gzip -6 {t_tar_gzip:.2f} s: {t_tar_gzip / t_save:.2f}x as fast "
              f"(target >= 1.0, aim 1.7); archive {out_size/1e6:.1f} MB vs {base_gz.stat().st_size/1e6:.1f} MB")
        print(f"--from: {t_from_only:.2f} s vs tar -xzf {t_tar_x:.2f} s: {t_tar_x / t_from_only:.2f}x as fast")

        # zstd: --save .tar.zst against tar | zstd -3 -T0 and against
        # --save .tar.gz; --from .tar.zst against tar --zstd -x.
        base_zst = tmp / "base.tar.zst"
        t_tar_zstd = sh(f"tar --xattrs --xattrs-include='*' --numeric-owner --sort=name -C {tree} -cf - . "
                        f"| zstd -q -3 -T0 > {base_zst}")
        t_tar_xz = sh(f"mkdir {tmp}/xz && tar --zstd -xpf {base_zst} -C {tmp}/xz && rm -rf {tmp}/xz")
        t_from_zst, _ = run([OSBUILD, *base, "--from", base_zst, empty_p])
        t_from_save_zst, _ = run([OSBUILD, *base, "--from", base_zst, "--save", tmp / "out.tar.zst", empty_p])
        t_save_zst = t_from_save_zst - t_from_zst
        t_from_zst_only = t_from_zst - t0
        zst_size = (tmp / "out.tar.zst").stat().st_size
        print(f"--save .tar.zst: {t_save_zst:.2f} s vs tar | zstd -3 -T0 {t_tar_zstd:.2f} s: "
              f"{t_tar_zstd / t_save_zst:.2f}x as fast; vs --save .tar.gz {t_save:.2f} s: "
              f"{t_save / t_save_zst:.2f}x as fast; archive {zst_size/1e6:.1f} MB vs {out_size/1e6:.1f} MB gzip")
        print(f"--from .tar.zst: {t_from_zst_only:.2f} s vs tar --zstd -x {t_tar_xz:.2f} s: "
              f"{t_tar_xz / t_from_zst_only:.2f}x as fast; vs --from .tar.gz {t_from_only:.2f} s")
        print(f"peak RSS of osbuild: --from {rss_from:.0f} MiB, --from + --save {rss_save:.0f} MiB")
    shutil.rmtree(store / "tmp", ignore_errors=True)


if __name__ == "__main__":
    main()
