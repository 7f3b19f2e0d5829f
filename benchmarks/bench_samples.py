"""K = 5 samples per item vs K = 1 on the demo's regression suite with the hf backend, side by side.

Runs `evalkit run` on the shipped tiny base (suites/demo-regression, 50 items, max 48 new tokens,
temperature 0.8), first with `samples: 1`, then `samples: 5`, each on a fresh store, and prints the
generation time of each and their ratio. Target: K = 5 costs at most 3 x K = 1 (the five samples of an
item are batched together, not five sequential runs).

    python benchmarks/bench_samples.py [--k 5] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evalkit.demo_model import shipped_base  # noqa: E402

TARGET = 3.0


def run(tmp: Path, k: int, batch: int) -> dict:
    cfg = tmp / f"eval-k{k}.yaml"
    cfg.write_text(
        f"models:\n  base: {{backend: hf, path: '{shipped_base()}', dtype: float32, batch_size: {batch}}}\n"
        f"suites: ['{ROOT / 'suites' / 'demo-regression'}']\nstore: store-k{k}.db\n"
        f"generation: {{max_new_tokens: 48, temperature: 0.8, samples: {k}}}\n"
    )
    subprocess.run([sys.executable, "-m", "evalkit.cli", "run", str(cfg), "--out", str(tmp / f"out-k{k}"), "--no-progress"],
                   cwd=tmp, check=True, capture_output=True)
    return json.loads((tmp / f"out-k{k}" / "summary.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=16)
    a = ap.parse_args()
    if shipped_base() is None:
        sys.exit("the shipped demo base is missing")
    with tempfile.TemporaryDirectory() as tmp:
        one = run(Path(tmp), 1, a.batch_size)
        many = run(Path(tmp), a.k, a.batch_size)
    t1, tk = one["timing"]["generate_s"], many["timing"]["generate_s"]
    print(f"K=1: {one['calls']['generations_made']} generations in {t1:.1f} s")
    print(f"K={a.k}: {many['calls']['generations_made']} generations in {tk:.1f} s")
    print(f"ratio K={a.k} / K=1: {tk / t1:.2f} (target <= {TARGET:g}; {a.k} sequential runs would be about {a.k})")
    row = next((m for m in many["metrics"] if m["scorer"] == "json_valid"), None)
    if row:
        print(f"json_valid with K={a.k}: pass@1 {row['pass_at']['1']:.3f}, pass@{a.k} {row['pass_at'][str(a.k)]:.3f}, "
              f"pass^{a.k} {row['pass_all'][str(a.k)]:.3f}, {row['flaky']} flaky items, {row['expected_flips']:.1f} expected flips")


if __name__ == "__main__":
    main()
