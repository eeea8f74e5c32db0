#!/usr/bin/env python3
"""Benchmark for auditing: `osbuild audit` on a 20-stage pipeline (warm),
and what schema validation costs per stage. Ratios from one run."""

import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import OSBUILD, TEST_STAGES, WORK, build_release


def median_run(args, n=15):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        p = subprocess.run([str(a) for a in args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times), p.returncode


def main():
    build_release()
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        tmp = Path(tmp)
        example = json.loads((Path(__file__).parent.parent / "examples" / "debian-config.json").read_text())
        stages = (example["pipeline"] * 2)[:19]
        stages.insert(0, {"name": "io.weldr.mmdebstrap", "options": {"suite": "bookworm"}})
        p20 = tmp / "p20.json"
        p20.write_text(json.dumps({"pipeline": stages}))
        p1 = tmp / "p1.json"
        p1.write_text(json.dumps({"pipeline": stages[:1]}))
        base = [OSBUILD, "--libdir", TEST_STAGES, "audit"]
        t20, rc = median_run([*base, p20])
        assert rc == 0, "audit failed"
        t1, _ = median_run([*base, p1])
        print(f"osbuild audit, 20 stages ({len({s['name'] for s in stages})} distinct), warm: {t20*1000:.1f} ms "
              f"(target < 50 ms); 1 stage: {t1*1000:.1f} ms")
        # Validation: the same stage 20 times with valid options vs 20 times
        # with options its schema refuses (all 20 are checked and reported).
        good = tmp / "good.json"
        good.write_text(json.dumps({"pipeline": [example["pipeline"][5]] * 20}))
        bad = tmp / "bad.json"
        bad.write_text(json.dumps({"pipeline": [{"name": "io.weldr.fstab", "options": {"filesystems": [{"path": 1}]}}] * 20}))
        tg, _ = median_run([*base, good])
        tb, rc = median_run([*base, bad])
        assert rc == 2
        print(f"schema validation: 20 valid fstab stages audited in {tg*1000:.1f} ms, 20 invalid (errors reported) in "
              f"{tb*1000:.1f} ms; per stage beyond the first: {(tg - t1) / 19 * 1000:.2f} ms")


if __name__ == "__main__":
    main()
