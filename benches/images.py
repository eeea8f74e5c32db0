#!/usr/bin/env python3
"""Benchmark for io.weldr.qcow2's layouts and formats, and for booting.

assembly: the stage's own time (--monitor json) on the ~650 MB kernel tree,
  for each layout and format, against `mkfs.ext4 -d` + `qemu-img convert`
  by hand on the same tree in the same run (alternating, median of RUNS,
  disk synced before each). Target: the ext4 qcow2 with every
  reproducibility fix-up within 1.10x of the hand-made one.
boot: QEMU start to "login:" under `osbuild boot`, for the BIOS image of
  examples/debian.json (SeaBIOS) and the UEFI image of
  examples/debian-uefi.json (OVMF), alternating, median of RUNS.

    benches/images.py [assembly] [boot]

Needs root, the Debian mirror (the kernel tree, the examples' base) and
qemu-system-x86 and ovmf (tools/setup)."""

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from boot import boot_to_login
from common import OSBUILD, ROOT, WORK, build_release, debian_tarball, log, run, sh

RUNS = int(os.environ.get("OSBUILD_BENCH_RUNS", "3"))

# (label, options): the first is the one held to the target.
LAYOUTS = [
    ("mbr bios ext4 qcow2, no bootloader", {"bootloader": "none"}),
    ("mbr bios ext4 qcow2, GRUB", {}),
    ("gpt uefi ext4 qcow2, GRUB", {"boot": "uefi"}),
    ("gpt hybrid ext4 qcow2, GRUB", {"boot": "hybrid"}),
    ("gpt uefi erofs qcow2, GRUB (kernel on the ESP)", {"boot": "uefi", "root_fs_type": "erofs"}),
    ("gpt uefi squashfs qcow2, GRUB (kernel on the ESP)", {"boot": "uefi", "root_fs_type": "squashfs"}),
    ("gpt uefi ext4 raw", {"boot": "uefi", "format": "raw"}),
    ("gpt uefi ext4 vmdk (stream-optimised)", {"boot": "uefi", "format": "vmdk"}),
    ("gpt uefi ext4 vhd (fixed)", {"boot": "uefi", "format": "vhd"}),
    ("gpt uefi ext4 vhdx", {"boot": "uefi", "format": "vhdx"}),
]


def stage_seconds(cmd, name):
    """The duration osbuild reports for stage `name` (--monitor json);
    osbuild's messages on failure."""
    p = subprocess.run([str(c) for c in cmd] + ["--monitor", "json"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{cmd} failed ({p.returncode}):\n{p.stderr[-4000:]}")
    for line in p.stdout.splitlines():
        e = json.loads(line)
        if e.get("event") == "stage-finished" and e.get("name") == name:
            return e["duration_ms"] / 1000
    raise SystemExit(f"no stage-finished event for {name}")


def assembly(tmp):
    tar = debian_tarball(kernel=True)
    tree = tmp / "tree"
    tree.mkdir()
    sh(f"tar --xattrs --xattrs-include='*' -xpf {tar} -C {tree}")
    size = int(os.popen(f"du -sb {tree}").read().split()[0])
    mb = (size * 5 // 4 + (256 << 20)) >> 20
    store = tmp / "store"
    out = tmp / "out"
    pipelines = []
    for i, (label, options) in enumerate(LAYOUTS):
        p = tmp / f"layout{i}.json"
        o = {"target": "disk", **options}
        p.write_text(json.dumps({"pipeline": [{"name": "io.weldr.qcow2", "options": o}]}))
        pipelines.append((label, p))
    ours = {label: [] for label, _ in pipelines}
    hand, hand_vmdk = [], []
    base = ["--store", store, "-q", "--no-cache", "--from", tar, "--output-directory", out]
    for r in range(RUNS):
        log(f"run {r + 1}/{RUNS}")
        sh(f"rm -rf {tmp}/hand.raw {tmp}/hand.qcow2")
        os.sync()
        hand.append(sh(f"truncate -s {mb}M {tmp}/hand.raw && "
                       f"mkfs.ext4 -q -F -d {tree} {tmp}/hand.raw && "
                       f"qemu-img convert -O qcow2 {tmp}/hand.raw {tmp}/hand.qcow2"))
        # A stream-optimised vmdk compresses every grain (zlib, one
        # thread): its own baseline.
        sh(f"rm -rf {tmp}/hand.raw {tmp}/hand.qcow2")
        os.sync()
        hand_vmdk.append(sh(f"truncate -s {mb}M {tmp}/hand.raw && "
                            f"mkfs.ext4 -q -F -d {tree} {tmp}/hand.raw && "
                            f"qemu-img convert -O vmdk -o subformat=streamOptimized "
                            f"{tmp}/hand.raw {tmp}/hand.vmdk"))
        sh(f"rm -rf {tmp}/hand.raw {tmp}/hand.vmdk")
        for label, p in pipelines:
            sh(f"rm -rf {out}")
            os.sync()
            ours[label].append(stage_seconds([OSBUILD, *base, p], "io.weldr.qcow2"))
    t_hand = statistics.median(hand)
    print(f"assembly of the kernel tree ({size >> 20} MiB), median of {RUNS}; "
          f"mkfs.ext4 -d + qemu-img convert by hand: {t_hand:.2f} s "
          f"(each run: {', '.join(f'{t:.2f}' for t in hand)})")
    t_vmdk = statistics.median(hand_vmdk)
    print(f"  by hand as a stream-optimised vmdk: {t_vmdk:.2f} s "
          f"(each run: {', '.join(f'{t:.2f}' for t in hand_vmdk)})")
    for i, (label, times) in enumerate(ours.items()):
        t = statistics.median(times)
        target = " (target at most 1.10x)" if i == 0 else ""
        vmdk = f", {t / t_vmdk:.2f}x the vmdk by hand" if "vmdk" in label else ""
        print(f"  {label}: {t:.2f} s, {t / t_hand:.2f}x{target}{vmdk} "
              f"(each run: {', '.join(f'{x:.2f}' for x in times)})")


def boot(tmp):
    store = WORK / "store"
    images = {}
    for name in ["debian", "debian-uefi"]:
        example = ROOT / "examples" / f"{name}.json"
        log(f"building examples/{name}.json (the Debian base is cached in {store} after the first)")
        seconds, _ = run([OSBUILD, "--store", store, "-q", "--output-directory", tmp / "out", example])
        target = next(s["options"]["target"] for s in json.loads(example.read_text())["pipeline"]
                      if s["name"] == "io.weldr.qcow2")
        images[name] = tmp / "out" / target
        log(f"  {seconds:.1f} s")
    logins = {name: [] for name in images}
    for r in range(RUNS):
        for name, image in images.items():
            marks = boot_to_login(image, "osbuild")
            logins[name].append(marks["login"])
            log(f"run {r + 1}/{RUNS} {name}: login after {marks['login']:.1f} s")
    # As osbuild boot decides: KVM only with a hardware-virtualization module.
    kvm = os.access("/dev/kvm", os.W_OK) and any(Path(f"/sys/module/{m}").exists()
                                                  for m in ("kvm_intel", "kvm_amd"))
    accel = "kvm" if kvm else "tcg"
    b, u = statistics.median(logins["debian"]), statistics.median(logins["debian-uefi"])
    print(f"QEMU start -> login: ({accel}), median of {RUNS}: BIOS (SeaBIOS) {b:.1f} s, "
          f"UEFI (OVMF) {u:.1f} s: {u / b:.2f}x")
    for name, times in logins.items():
        print(f"  each run, {name}: " + ", ".join(f"{t:.1f}" for t in times))


def main():
    only = set(sys.argv[1:]) or {"assembly", "boot"}
    build_release()
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        tmp = Path(tmp)
        if "assembly" in only:
            assembly(tmp)
        if "boot" in only:
            boot(tmp)


if __name__ == "__main__":
    main()
