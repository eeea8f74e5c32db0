#!/usr/bin/env python3
"""Benchmark for rootless builds: examples/debian-config.json (the wasm
configuration stages) --from a Debian tree (minbase and what the
configuration needs: systemd, openssh-server, chrony...) --save a .tar,
as an ordinary user (a user namespace, unprivileged overlayfs,
device-node stand-ins) vs the same as root, alternating, nothing cached
but the compiled stages.
Prints the ratio from this run. Needs root (it creates its own user,
as tests/e2e/rootless.rs does) and the Debian mirror once (the tree is cached)."""

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import CONFIG_PACKAGES, OSBUILD, ROOT, WORK, build_release, debian_tarball, log

# Not tests/e2e/rootless.rs's user: a bench and the tests may run at once, and
# each empties its user's store.
USER = "osbuild-bench"
RUNS = int(os.environ.get("OSBUILD_BENCH_RUNS", "5"))
CONFIG = ROOT / "examples" / "debian-config.json"


def ensure_user():
    if subprocess.run(["id", "-u", USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--create-home", "--shell", "/usr/sbin/nologin", USER], check=True)
    for f in ("/etc/subuid", "/etc/subgid"):
        if not any(l.startswith(USER + ":") for l in Path(f).read_text().splitlines()):
            subprocess.run(["usermod", "--add-subuids", "1300000-1365535",
                            "--add-subgids", "1300000-1365535", USER], check=True)
    return subprocess.run(["getent", "passwd", USER], capture_output=True, text=True,
                          check=True).stdout.split(":")[5]


def timed(cmd):
    start = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if p.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{p.stderr}")
    return elapsed


def main():
    build_release()
    home = ensure_user()
    tar = debian_tarball(packages=CONFIG_PACKAGES)
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        tmp = Path(tmp)
        os.chmod(tmp, 0o755)
        shutil.copy(OSBUILD, tmp / "osbuild")
        shutil.copy(tar, tmp / "base.tar")
        shutil.copy(CONFIG, tmp / "config.json")
        for f in ("base.tar", "config.json"):
            os.chmod(tmp / f, 0o644)
        out = tmp / "out"
        out.mkdir()
        shutil.chown(out, user=USER)
        args = ["--from", str(tmp / "base.tar"), "-q"]
        root_store, user_store = tmp / "root-store", Path(home) / ".cache" / "osbuild"
        root_cmd = [str(tmp / "osbuild"), "--store", str(root_store), *args,
                    "--save", str(tmp / "root.tar"), str(tmp / "config.json")]
        user_cmd = ["runuser", "-u", USER, "--", "env", "-i", f"HOME={home}",
                    "PATH=/usr/sbin:/usr/bin:/sbin:/bin", str(tmp / "osbuild"), *args,
                    "--save", str(out / "user.tar"), str(tmp / "config.json")]
        root, user = [], []
        for store in (root_store, user_store):
            subprocess.run(["rm", "-rf", str(store)], check=True)
        for i in range(RUNS + 1):
            # Each build unpacks, runs every stage and saves: no result is
            # cached. Compiled stages are (the first pair compiles them).
            for store in (root_store, user_store):
                subprocess.run(["rm", "-rf", str(store / "objects")], check=True)
            r, u = timed(root_cmd), timed(user_cmd)
            if i:
                root.append(r)
                user.append(u)
        same = Path(tmp / "root.tar").read_bytes() == Path(out / "user.tar").read_bytes()
        t_root, t_user = statistics.median(root), statistics.median(user)
        print(f"debian-config.json --from a Debian tree --save .tar, no cached results, median of {RUNS}: "
              f"rootless {t_user:.2f} s vs root {t_root:.2f} s: {t_user / t_root:.2f}x; "
              f"same bytes: {same}")
        print("  each run, root: " + ", ".join(f"{t:.2f}" for t in root)
              + "; rootless: " + ", ".join(f"{t:.2f}" for t in user))


if __name__ == "__main__":
    main()
