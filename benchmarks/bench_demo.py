"""Benchmark: `evalkit demo` on a fresh cache, then again (everything cached), side by side.

    python benchmarks/bench_demo.py                 # a fresh $EVALKIT_CACHE and --work in a temp dir

The targets: the first run (the shipped base, two QLoRA candidates trained, one evaluation; kernels
pinned, one thread) within 4 minutes of wall time on 2 CPU cores, peak RSS within 1.5 GB (the demo's
own child process included); the second run (no training, no model call) within 3 s. Each run is its own process (`evalkit demo --no-progress`), so its peak
RSS (from wait4's rusage) is its own. Prints wall, CPU, peak RSS for both runs, the ratio
first/second, and the demo's own per-stage times of the first run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"first_wall_s": 240.0, "first_rss_gb": 1.5, "second_wall_s": 3.0}


def run_once(cache: Path, work: Path, out: Path) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS GB, stdout) of one `evalkit demo` in its own process."""
    env = {**os.environ, "EVALKIT_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "evalkit.cli", "demo", "--no-progress", "--work", str(work), "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stdout = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"evalkit demo failed (exit {os.waitstatus_to_exitcode(status)})")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024 / 1024, stdout


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        root = Path(tmp)
        first = run_once(root / "cache", root / "work", root / "out1")
        second = run_once(root / "cache", root / "work", root / "out2")
    print(f"{'run':<8} {'wall s':>8} {'CPU s':>8} {'peak RSS GB':>12}")
    for name, (wall, cpu, rss, _) in (("first", first), ("second", second)):
        print(f"{name:<8} {wall:>8.1f} {cpu:>8.1f} {rss:>12.2f}")
    print(f"first / second wall: {first[0] / second[0]:.0f}x")
    stages = re.search(r"Time per stage: (.*)", first[3])
    if stages:
        print(f"first run, per stage: {stages.group(1)}")
    ships = re.search(r"Ship: (.*)", first[3])
    print(f"verdict: ship {ships.group(1) if ships else 'nothing'}")
    ok = first[0] <= TARGETS["first_wall_s"] and first[2] <= TARGETS["first_rss_gb"] and second[0] <= TARGETS["second_wall_s"]
    print(f"targets (first <= {TARGETS['first_wall_s']:.0f} s and {TARGETS['first_rss_gb']} GB, second <= {TARGETS['second_wall_s']:.0f} s): {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
