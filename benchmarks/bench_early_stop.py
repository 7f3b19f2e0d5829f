"""early_stop on a 400-item suite: a candidate at 0.95 against `min: 0.6`, items used and wall time
side by side with a full run (the target: early_stop generates at most 160 items).

Both runs call an OpenAI-compatible loopback server (real HTTP on 127.0.0.1, the openai SDK) that
echoes the prompt after ``--latency`` seconds, on a fresh store each; 20 of the 400 items have another
reference, so the candidate's exact-match pass rate is 0.95.

    python benchmarks/bench_early_stop.py [--latency 0.05] [--block 40]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET = 160
N, WRONG = 400, 20


def write_suite(root: Path) -> None:
    d = root / "suites" / "echo"
    d.mkdir(parents=True)
    (d / "suite.yaml").write_text("name: echo\nkind: regression\nscorers:\n  - exact_match\n")
    step = N // WRONG
    rows = [{"id": f"e{i:03d}", "messages": [{"role": "user", "content": f"item {i}"}], "reference": f"item {i}" if i % step else "other"}
            for i in range(N)]
    (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def run(root: Path, url: str, early: str, name: str) -> tuple[dict, float]:
    from evalkit.run import run_eval

    cfg = root / f"{name}.yaml"
    cfg.write_text(f"models:\n  cand: {{backend: openai, model: cand, base_url: '{url}', api_key_env: EK_BENCH_KEY, concurrency: 8}}\n"
                   f"suites: [suites/echo]\nstore: {name}.db\n{early}"
                   "gates:\n  - {name: accuracy, metric: pass_rate, scorer: exact_match, min: 0.6}\n")
    t0 = time.perf_counter()
    result = run_eval(cfg, root / f"out-{name}", progress=False)
    return result.summary, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.05, help="seconds the loopback server waits per request")
    ap.add_argument("--block", type=int, default=40)
    a = ap.parse_args()
    from tests.support.loopback import LoopbackAPI

    os.environ["EK_BENCH_KEY"] = "sk-bench"
    server = LoopbackAPI(latency_s=a.latency).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            write_suite(root)
            os.chdir(root)
            full, t_full = run(root, server.base_url, "", "full")
            early, t_early = run(root, server.base_url, f"early_stop: {{block: {a.block}}}\n", "early")
    finally:
        server.stop()
    es = early["early_stop"]
    print(f"{N} items, candidate pass rate 0.95, gate min 0.6, block {a.block}, {a.latency * 1000:.0f} ms per request (loopback)")
    print(f"  full run:       {full['calls']['generations_made']:>4} items generated, {t_full:6.2f} s, gate {full['gates'][0]['outcome']}")
    print(f"  early_stop run: {early['calls']['generations_made']:>4} items generated, {t_early:6.2f} s, gate {early['gates'][0]['outcome']} "
          f"(decided after {es['items_used']} of {es['items_total']} in {es['blocks']} block(s); bound {early['gates'][0]['bound']:.3f})")
    print(f"  items {es['items_used'] / N:.0%} of the full run's, wall time {t_early / t_full:.0%}; target <= {TARGET} items: "
          f"{'met' if es['items_used'] <= TARGET else 'MISSED'}")


if __name__ == "__main__":
    main()
