#!/usr/bin/env python3
"""Benchmark for the remote store, all from one run against a real
registry (Debian's docker-registry) on 127.0.0.1:

- examples/debian.json built cold (an empty store, no registry), then a
  fully cached build into another empty store from the registry
  (--cache-from): both times, their ratio (target under 10%), the bytes
  pulled;
- the push of the example's objects (--cache-to, the results already in
  the store): its time and bytes, and the bytes a second, identical push
  sends (target: only manifests; osbuild sends none).

Needs root and the Debian mirror."""

import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from common import OSBUILD, ROOT, WORK, build_release, log

EXAMPLE = ROOT / "examples" / "debian.json"


def timed(args):
    start = time.perf_counter()
    p = subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{args} failed:\n{p.stderr[-3000:]}")
    return time.perf_counter() - start, json.loads(p.stdout)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(tmp):
    port = free_port()
    data = tmp / "registry"
    data.mkdir()
    config = tmp / "registry.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {data}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("docker-registry did not start")


def main():
    if shutil.which("docker-registry") is None:
        raise SystemExit("docker-registry is missing: tools/setup packages installs it")
    build_release()
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        tmp = Path(tmp)
        proc, port = start_registry(tmp)
        try:
            ref = f"oci://127.0.0.1:{port}/bench/osbuild-cache"
            build = lambda store, *extra: timed(
                [OSBUILD, "--store", tmp / store, "--output-directory", tmp / f"out-{store}",
                 "--no-lock", "--json", *extra, EXAMPLE])
            log("cold build (an empty store, no registry)...")
            cold, _ = build("a")
            log("push (the results in the store already)...")
            push, pushed = build("a", "--cache-to", ref)
            log("second, identical push...")
            push2, pushed2 = build("a", "--cache-to", ref)
            log("fully cached build into an empty store, from the registry...")
            pull, pulled = build("b", "--cache-from", ref)
            log("cached rebuild from the local store (for scale)...")
            local, _ = build("b")
        finally:
            proc.kill()
            proc.wait()
        image = "debian.qcow2"
        same = (tmp / "out-a" / image).read_bytes() == (tmp / "out-b" / image).read_bytes()
        rp, rq, rq2 = pulled["remote"], pushed["remote"], pushed2["remote"]
        if not all(s["cached"] for s in pulled["stages"]):
            raise SystemExit("the build from the registry ran a stage")
        print(f"cold build (empty store)                {cold:8.1f} s")
        print(f"build from the registry (empty store)   {pull:8.1f} s  = {pull / cold:.3f} of the cold build "
              f"(target < 0.10); pulled {rp['pulled']['objects']} objects, {rp['pulled']['bytes'] / 1e6:.1f} MB; "
              f"image identical: {same}")
        print(f"cached rebuild from the local store     {local:8.1f} s  = {local / cold:.3f} of the cold build")
        print(f"push of the example's objects           {push:8.1f} s  = {push / cold:.3f} of the cold build; "
              f"{rq['pushed']['objects']} objects, {rq['pushed']['bytes'] / 1e6:.1f} MB")
        print(f"second, identical push                  {push2:8.1f} s; {rq2['pushed']['objects']} objects, "
              f"{rq2['pushed']['bytes']} bytes sent, {rq2['present']} there already")


if __name__ == "__main__":
    main()
