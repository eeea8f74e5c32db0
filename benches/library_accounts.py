#!/usr/bin/env python3
"""Benchmark for io.weldr.groups and io.weldr.users (issue 4): each stage's
run time inside osbuild (warm component cache, on a real Debian bookworm
tree) against groupadd / useradd / usermod / mkhomedir_helper doing the same
work on an unpacked copy of the same tree, in the same run. Prints ratios.
Needs root (the tools write a tree and chown) and the Debian mirror the first
time, unless the test fixture tarball (target/tmp/debian-bookworm-config.tar)
exists."""

import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import OSBUILD, ROOT, TEST_STAGES, WORK, build_release, debian_tarball, log

RUNS = int(os.environ.get("RUNS", "7"))
TOOL_RUNS = int(os.environ.get("TOOL_RUNS", "7"))
STAGE_LINE = re.compile(r"^\s+(\S+) done in ([0-9.]+) ms$")
PASSWORD = "$6$salt$0123456789abcdef"


def base_tarball():
    fixture = ROOT / "target" / "tmp" / "debian-bookworm-config.tar"
    return fixture if fixture.exists() else debian_tarball(kernel=False)


def stages(i):
    """The three workloads; `i` varies a key so no build is a cache hit."""
    return [
        {"name": "io.weldr.groups", "options": {"groups": {
            "web": {"gid": 1600}, "db": {}, "ops": {}, "dev": {"gid": 1700}, "qa": {}}}},
        {"name": "io.weldr.users", "options": {"users": {
            "alice": {},
            "bob": {"uid": 1500, "groups": ["sudo", "users", "web"], "description": "Bob B",
                    "home": "/home/bob", "shell": "/bin/bash", "password": PASSWORD,
                    "expiredate": 20000},
            "carol": {"gid": 100, "home": "/srv/people/carol",
                      "keys": ["ssh-ed25519 AAAAC3 carol@one", f"ssh-rsa AAAAB3 carol@{i}"]},
            "dave": {"uid": 500, "home": ""},
            "erin": {"key": "ssh-ed25519 AAAAC3 erin"}}}},
        {"name": "io.weldr.users", "options": {"users": {
            "root": {"keys": ["ssh-ed25519 AAAAC3 root"]},
            "messagebus": {"groups": ["users"], "home": "/var/lib/mb"},
            "sshd": {"password": "!"}}}},
    ]


def tool_scripts(t):
    """What does the same work as each workload on tree `t`: the tools as
    osbuild's stages run them, and its way of adding SSH keys."""
    T = shlex.quote(str(t))
    keys = f"""add_keys() {{
  u=$1; shift; IFS=: read -r _ _ uid gid _ home _ <<EOF
$(grep "^$u:" {T}/etc/passwd)
EOF
  d={T}$home/.ssh; [ -e "$d" ] || {{ mkdir -m 700 "$d"; chown $uid:$gid "$d"; }}
  printf '%s\\n' "$@" >> "$d/authorized_keys"; chown $uid:$gid "$d/authorized_keys"; chmod 600 "$d/authorized_keys"
}}
"""
    groups = "\n".join([
        f"groupadd --root={T} -g 1600 web",
        f"groupadd --root={T} db",
        f"groupadd --root={T} -g 1700 dev",
        f"groupadd --root={T} ops",
        f"groupadd --root={T} qa",
    ])
    new = keys + "\n".join([
        f"useradd --root={T} alice",
        f"useradd --root={T} --uid 1500 --groups sudo,users,web --comment 'Bob B' --home-dir /home/bob "
        f"--create-home --shell /bin/bash --password '{PASSWORD}' --expiredate 20000 bob",
        f"useradd --root={T} --gid 100 --home-dir /srv/people/carol --create-home carol",
        "add_keys carol 'ssh-ed25519 AAAAC3 carol@one' 'ssh-rsa AAAAB3 carol@0'",
        f"useradd --root={T} --uid 500 --no-create-home dave",
        f"useradd --root={T} --create-home erin",
        "add_keys erin 'ssh-ed25519 AAAAC3 erin'",
    ])
    modify = keys + "\n".join([
        "add_keys root 'ssh-ed25519 AAAAC3 root'",
        f"usermod --root={T} --groups users --home /var/lib/mb messagebus",
        f"chroot {T} mkhomedir_helper messagebus",
        f"usermod --root={T} --password '!' sshd",
    ])
    return [(groups, "groupadd x5"), (new, "useradd x5 + keys"),
            (modify, "usermod x2 + mkhomedir_helper + keys")]


def osbuild_run(store, tar, pipeline):
    """One build; returns [(stage, ms), ...] from osbuild's own timings."""
    p = subprocess.run([OSBUILD, "--store", store, "--libdir", TEST_STAGES, "--from", tar, pipeline],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(f"osbuild failed:\n{p.stderr}")
    return [(m.group(1), float(m.group(2)))
            for m in map(STAGE_LINE.match, p.stderr.splitlines()) if m]


def reset(tree, saved_etc):
    """Puts the tree's /etc back and removes what the tools created."""
    subprocess.run(["bash", "-ec", f"rm -rf {tree}/etc {tree}/home/* {tree}/srv/people "
                    f"{tree}/var/lib/mb {tree}/root/.ssh && cp -a {saved_etc} {tree}/etc"],
                   check=True)


def main():
    build_release()
    tar = base_tarball()
    store = WORK / "store-accounts"
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        tmp = Path(tmp)
        noop = tmp / "noop.json"
        noop.write_text(json.dumps({"pipeline": [{"name": "test.noop", "options": {"n": 0}}]}))

        def pipeline(i):
            p = tmp / f"p{i}.json"
            p.write_text(json.dumps({"source_epoch": 1700000000, "pipeline": stages(i)}))
            return p

        log("warming the component cache...")
        osbuild_run(store, tar, pipeline(0))
        osbuild_run(store, tar, noop)
        log(f"{RUNS} builds --from {tar.name}...")
        runs = [osbuild_run(store, tar, pipeline(i + 1)) for i in range(RUNS)]
        overhead = statistics.median(ms for _ in range(3) for _, ms in osbuild_run(store, tar, noop))
        per_stage = [statistics.median(r[k][1] for r in runs) for k in range(3)]

        log("the tools on an unpacked copy of the same tree...")
        tree = tmp / "tree"
        tree.mkdir()
        subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-p",
                        "-xf", tar, "-C", tree], check=True)
        saved = tmp / "etc.orig"
        subprocess.run(["cp", "-a", tree / "etc", saved], check=True)
        scripts = tool_scripts(tree)
        tool_ms = [[] for _ in scripts]
        for _ in range(TOOL_RUNS):
            reset(tree, saved)
            for k, (script, _) in enumerate(scripts):
                start = time.perf_counter()
                p = subprocess.run(["bash", "-ec", script], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
                tool_ms[k].append((time.perf_counter() - start) * 1000)
                if p.returncode != 0:
                    raise SystemExit(f"{script} failed:\n{p.stderr}")
        tools = [statistics.median(t) for t in tool_ms]

    print(f"Account stages on a Debian bookworm tree (warm component cache; median of {RUNS} "
          f"builds, tools median of {TOOL_RUNS} runs)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"runtime overhead per stage (a no-op wasm stage): {overhead:.2f} ms")
    print(f"{'workload':<34} {'stage ms':>9} {'tool ms':>9} {'ratio':>7}  tool")
    names = ["io.weldr.groups (5 new groups)", "io.weldr.users (5 new users)",
             "io.weldr.users (3 existing users)"]
    for name, ms, t, (_, what) in zip(names, per_stage, tools, scripts):
        print(f"{name:<34} {ms:9.2f} {t:9.2f} {t / ms:6.1f}x  {what}")
    total, total_tools = sum(per_stage), sum(tools)
    print(f"all three: {total:.1f} ms in stages vs {total_tools:.1f} ms of tools "
          f"({total_tools / total:.1f}x as fast)")


if __name__ == "__main__":
    sys.exit(main())
