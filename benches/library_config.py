#!/usr/bin/env python3
"""Benchmark for the configuration stages (issue 4): each stage's run time
inside osbuild (warm component cache, on a real Debian bookworm tree) against
the host tool or shell command doing the same work on the same tree, and the
whole examples/debian-config.json pipeline. Prints ratios measured in this
run. Needs root (systemd-firstboot/systemctl --root write a tree) and the
Debian mirror the first time (mmdebstrap), unless the test fixture tarball
(target/tmp/debian-bookworm-config.tar) exists."""

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

from common import MIRROR, OSBUILD, ROOT, TEST_STAGES, WORK, build_release, log

EXAMPLE = ROOT / "examples" / "debian-config.json"
RUNS = int(os.environ.get("RUNS", "7"))
TOOL_RUNS = int(os.environ.get("TOOL_RUNS", "15"))
INCLUDE = "systemd,systemd-sysv,tzdata,openssh-server,chrony,procps,kmod,locales,dbus"


def config_tarball():
    """The tree the oracle tests use (cached by them), or one made the same way."""
    fixture = ROOT / "target" / "tmp" / "debian-bookworm-config.tar"
    if fixture.exists():
        return fixture
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / "bookworm-config.tar"
    if not path.exists():
        log(f"making {path} with mmdebstrap (about a minute)...")
        tmp = path.with_suffix(".tmp.tar")
        subprocess.run(
            ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={INCLUDE}",
             "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg",
             "bookworm", str(tmp), MIRROR],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"},
        )
        tmp.rename(path)
    return path


STAGE_LINE = re.compile(r"^\s+(\S+) done in ([0-9.]+) ms$")


def osbuild_run(store, tar, pipeline):
    """One build; returns (wall seconds, [(stage, ms), ...])."""
    start = time.perf_counter()
    p = subprocess.run([OSBUILD, "--store", store, "--libdir", TEST_STAGES, "--from", tar, pipeline],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if p.returncode != 0:
        raise SystemExit(f"osbuild failed:\n{p.stderr}")
    stages = []
    for line in p.stderr.splitlines():
        m = STAGE_LINE.match(line)
        if m:
            stages.append((m.group(1), float(m.group(2))))
    return wall, stages


def time_shell(script, runs):
    """Median wall time (ms) of `bash -ec script`."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        p = subprocess.run(["bash", "-ec", script], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
        times.append((time.perf_counter() - start) * 1000)
        if p.returncode != 0:
            raise SystemExit(f"{script} failed:\n{p.stderr}")
    return statistics.median(times)


def host_equivalents(t):
    """Per pipeline entry (in order): what does the same work on tree `t`,
    and what it is."""
    T = shlex.quote(str(t))
    fb = f"systemd-firstboot --root={T} --force"
    p = json.loads(EXAMPLE.read_text())["pipeline"]

    def printf(path, text):
        return f"printf '%s' {shlex.quote(text)} > {T}{path}"

    def opt(i):
        return p[i]["options"]

    hello = ("[Unit]\nDescription=Say hello at boot\nAfter=network-online.target\n"
             "Wants=network-online.target\n\n[Service]\nType=oneshot\nExecStart=/bin/echo hello\n"
             "RemainAfterExit=True\n\n[Install]\nWantedBy=multi-user.target\n\n")
    out = [
        (f"{fb} --hostname={opt(0)['hostname']}", "systemd-firstboot"),
        (f"{fb} --locale={opt(1)['language']}", "systemd-firstboot"),
        (f"{fb} --timezone={opt(2)['zone']}", "systemd-firstboot"),
        (f"{fb} --keymap={opt(3)['keymap']} && echo FONT={opt(3)['font']} >> {T}/etc/vconsole.conf",
         "systemd-firstboot"),
        (printf("/etc/machine-id", "uninitialized\n"), "sh printf"),
        (printf("/etc/fstab", "UUID=76a22bf4-f153-4541-b6c7-0332c0dfaeac\t/\text4\tdefaults,noatime\t0\t1\n"
                "LABEL=ESP\t/boot/efi\tvfat\tumask=0077\t0\t2\n"), "sh printf"),
        (f"mkdir -p {T}/etc/kernel && " + printf(
            "/etc/kernel/cmdline",
            "root=UUID=76a22bf4-f153-4541-b6c7-0332c0dfaeac ro console=ttyS0,115200n8"), "sh printf"),
        (printf("/usr/lib/sysctl.d/50-example.conf", "net.ipv4.ip_forward = 1\nkernel.panic = 10\n"),
         "sh printf"),
        (printf("/usr/lib/modprobe.d/example.conf", "blacklist floppy\noptions kvm_intel nested=1\n"),
         "sh printf"),
        (printf("/usr/lib/tmpfiles.d/example.conf", "d /var/lib/example 0750 root root\n"), "sh printf"),
        (f"mkdir -p {T}/srv/www && printf '<h1>It works</h1>\\n' > {T}/srv/www/index.html && "
         f"printf 'Built by osbuild.\\n' > {T}/etc/motd && ln -sfn /srv/www {T}/var/www && "
         f"chown -R 33:33 {T}/srv/www", "coreutils"),
        (printf("/usr/lib/systemd/system/example-hello.service", hello), "sh printf"),
        (f"mkdir -p {T}/etc/systemd/system/ssh.service.d && " + printf(
            "/etc/systemd/system/ssh.service.d/10-example.conf",
            "[Service]\nEnvironment=\"SSHD_OPTS=-e\"\n\n"), "sh printf"),
        (f"sed -i -e '$a ClientAliveInterval 60' -e '$a PasswordAuthentication no' "
         f"-e '$a PermitRootLogin prohibit-password' {T}/etc/ssh/sshd_config", "sed -i"),
        (f"sed -i 's/^pool .*/server time.cloudflare.com prefer iburst\\nserver ntp.example.com iburst minpoll 4 maxpoll 10/' "
         f"{T}/etc/chrony/chrony.conf", "sed -i"),
        (f"systemctl --root={T} enable example-hello.service 2>/dev/null; "
         f"systemctl --root={T} mask apt-daily.timer apt-daily-upgrade.timer 2>/dev/null; "
         f"systemctl --root={T} set-default multi-user.target 2>/dev/null", "systemctl --root (x3)"),
    ]
    assert len(out) == len(p), "examples/debian-config.json changed: update host_equivalents"
    return out


def main():
    build_release()
    tar = config_tarball()
    store = WORK / "store-config"
    with tempfile.TemporaryDirectory(dir=WORK if WORK.exists() else None) as tmp:
        tmp = Path(tmp)
        # The runtime's own cost per stage: as many no-op wasm stages.
        n_stages = len(json.loads(EXAMPLE.read_text())["pipeline"])
        noop = tmp / "noop.json"
        noop.write_text(json.dumps({"pipeline": [
            {"name": "test.noop", "options": {"n": i}} for i in range(n_stages)]}))
        log("warming the component cache...")
        osbuild_run(store, tar, EXAMPLE)
        osbuild_run(store, tar, noop)

        log(f"{RUNS} builds each of {EXAMPLE.name} and of {n_stages} no-op stages, --from the tree...")
        runs, noops = [], []
        for _ in range(RUNS):
            runs.append(osbuild_run(store, tar, EXAMPLE))
            noops.append(osbuild_run(store, tar, noop))
        names = [n for n, _ in runs[0][1]]
        per_stage = [statistics.median(r[1][i][1] for r in runs) for i in range(len(names))]
        total_stages = statistics.median(sum(ms for _, ms in r[1]) for r in runs)
        walls = statistics.median(r[0] for r in runs)
        overhead = statistics.median(ms for r in noops for _, ms in r[1])

        log("the host tools on an unpacked copy of the same tree...")
        tree = tmp / "tree"
        tree.mkdir()
        subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-p",
                        "-xf", tar, "-C", tree], check=True)
        tools = [(time_shell(cmd, TOOL_RUNS), what) for cmd, what in host_equivalents(tree)]

    print(f"Configuration stages on a Debian bookworm tree (warm component cache; median of "
          f"{RUNS} builds, tools median of {TOOL_RUNS} runs)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"stage times are osbuild's own (0.1 ms resolution)")
    print(f"runtime overhead per stage (a no-op wasm stage, same builds): {overhead:.2f} ms")
    print(f"{'stage':<24} {'stage ms':>9} {'tool ms':>9} {'ratio':>7}  tool")
    faster = 0
    for name, ms, (tool_ms, what) in zip(names, per_stage, tools):
        ratio = tool_ms / ms if ms > 0 else float("inf")
        faster += ratio > 1
        print(f"{name:<24} {ms:9.2f} {tool_ms:9.2f} {ratio:6.1f}x  {what}")
    print(f"stages faster than their tool: {faster} of {len(names)} (target: all)")
    tools_total = sum(t for t, _ in tools)
    print(f"whole pipeline ({len(names)} stages): {total_stages:.1f} ms in stages "
          f"(target < 100 ms), of which {overhead * len(names):.1f} ms is the runtime's per-stage "
          f"overhead; the tools: {tools_total:.1f} ms ({tools_total / total_stages:.1f}x); "
          f"whole osbuild run incl. unpacking the tree: {walls:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
