"""`evalkit plan` on a store of 10 finished runs, against its 1 s target, in one run.

Builds a SQLite store with 10 runs of one config (2 suites x 2 models x --items items each, pass/fail
scores with some discordance) and an eval.yaml with four comparison gates, then times
`evalkit plan eval.yaml --effect 0.05` end to end (a fresh interpreter each time: what a user waits
for), and beside it `evalkit --help` (the interpreter and CLI start-up alone). Prints the median of
--repeat runs and its ratio to the 1 s target.

    python benchmarks/bench_plan.py [--items 300] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evalkit.record import RunItem  # noqa: E402
from evalkit.store import Store  # noqa: E402

TARGET_S = 1.0


def build(root: Path, items: int) -> Path:
    for suite in ("alpha", "beta"):
        d = root / "suites" / suite
        d.mkdir(parents=True)
        (d / "suite.yaml").write_text(f"name: {suite}\nscorers: [json_valid]\n")
        with (d / "samples.jsonl").open("w") as fh:
            for i in range(items):
                fh.write(json.dumps({"id": f"{suite}-{i}", "messages": [{"role": "user", "content": f"q{i}"}]}) + "\n")
    cfg = root / "eval.yaml"
    cfg.write_text(
        "name: nightly\nmodels:\n  base: {backend: hf, path: /m}\n  cand: {backend: hf, path: /m, adapter: /a}\n"
        "baseline: base\nsuites: [suites/alpha, suites/beta]\nstore: store.db\ngates:\n"
        "  - {name: noreg, metric: regressions, scorer: json_valid, max: 3}\n"
        "  - {name: better, metric: pass_rate, scorer: json_valid, vs: baseline, min: 0, significant: 0.05}\n"
        "  - {name: floor, metric: pass_rate, scorer: json_valid, min: 0.8}\n"
        "  - {name: applied, metric: adapter_applied}\n"
    )
    rng = random.Random(0)
    st = Store(root / "store.db")
    try:
        for _ in range(10):
            rid = st.begin_run(name="nightly", config_path=str(cfg), config={}, out_dir=None)
            rows = []
            for suite in ("alpha", "beta"):
                for i in range(items):
                    b = rng.random() < 0.8
                    c = b if rng.random() < 0.85 else not b
                    for model, passed in (("base", b), ("cand", c)):
                        rows.append(RunItem(rid, model, f"id-{model}", suite, "v1", f"{suite}-{i}", {"id": f"{suite}-{i}"}, f"g-{rid}-{model}-{i}",
                                            "{}", None, {"json_valid": {"value": float(passed), "passed": passed, "kind": "validator"}}))
            st.save_run_items(rid, rows)
            st.finish_run(rid, {"run_id": rid, "name": "nightly", "passed": True}, "passed")
    finally:
        st.close()
    return cfg


def timed(args: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "evalkit.cli", *args], cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        cfg = build(root, a.items)
        print(f"store: 10 runs x 2 suites x 2 models x {a.items} items, built in {time.perf_counter() - t:.1f} s")
        plan = statistics.median(timed(["plan", str(cfg), "--effect", "0.05"], root) for _ in range(a.repeat))
        start = statistics.median(timed(["--help"], root) for _ in range(a.repeat))
    print(f"evalkit plan --effect 0.05: {plan:.2f} s (median of {a.repeat}); target {TARGET_S:.0f} s: ratio {plan / TARGET_S:.2f}")
    print(f"evalkit --help (start-up alone): {start:.2f} s; plan's own work: {plan - start:.2f} s")


if __name__ == "__main__":
    main()
