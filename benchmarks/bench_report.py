"""Benchmark: gate evaluation and report generation on a large run.

N items (default 10,000) per model for a baseline and a candidate, 5 scorers each (3 validators,
2 judge criteria with repeats noise) plus a pairwise judge score on the candidate, tags, and outputs
of a few hundred characters. Gates: pass rate with a bootstrap CI, a judge mean, regressions with
McNemar, a win rate with the sign test, an error rate. Measures evaluate_gates, write_reports (all
five files), the rebuild from the store (`evalkit report`), and the file sizes.

    python benchmarks/bench_report.py              # 10,000 items x 5 scorers
    python benchmarks/bench_report.py --n 1000 --json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evalkit.config import GateSpec  # noqa: E402
from evalkit.gates import all_passed, evaluate_gates  # noqa: E402
from evalkit.report import write_reports  # noqa: E402
from evalkit.store import RunItem, Store  # noqa: E402

TAGS = ["extraction", "dates", "names", "numbers", "long", "short", "unicode", "nested"]


def make_items(n: int, run_id: str, seed: int = 0) -> list[RunItem]:
    rng = random.Random(seed)
    items = []
    for i in range(n):
        sid = f"item-{i:05d}"
        suite = "regression" if i % 3 else "heldout"
        tags = rng.sample(TAGS, 2)
        sample = {"id": sid, "messages": [{"role": "user", "content": f"Extract the fields from record {i}: " + "lorem ipsum " * 8}],
                  "reference": json.dumps({"id": i, "name": f"n{i}"}), "tags": tags, "metadata": {}}
        for model, p_ok, q in (("base", 0.90, 3.6), ("cand", 0.93, 3.9)):
            def v(p: float) -> dict:
                ok = rng.random() < p
                return {"value": 1.0 if ok else 0.0, "passed": ok}

            scores = {
                "json_valid": v(p_ok + 0.04),
                "json_schema": v(p_ok),
                "max_chars": v(0.99),
                "judge.correctness": {"value": max(1.0, min(5.0, round(rng.gauss(q, 0.9)))), "passed": None,
                                      "details": {"judge": "default", "std": 0.3, "repeats": 3}},
                "judge.format": {"value": max(1.0, min(5.0, round(rng.gauss(q + 0.3, 0.7)))), "passed": None,
                                 "details": {"judge": "default", "std": 0.2, "repeats": 3}},
            }
            if model == "cand":
                r = rng.random()
                scores["pairwise"] = {"value": 1.0 if r < 0.5 else 0.5 if r < 0.7 else 0.0, "passed": None,
                                      "details": {"judge": "pairwise", "winner": "candidate", "vs": "base"}}
            if rng.random() < 0.002:
                scores["json_schema"] = {"value": None, "passed": None, "error": "schema file unreadable"}
            output = json.dumps({"id": i, "name": f"n{i}", "note": "x" * rng.randint(50, 300)})
            items.append(RunItem(run_id, model, f"id-{model}", suite, "v1", sid, sample, f"g-{model}-{sid}", output, None, scores))
    return items


GATES = [
    GateSpec(name="schema", metric="pass_rate", scorer="json_schema", min=0.9, ci=0.95),
    GateSpec(name="quality", metric="mean", scorer="judge.correctness", min=3.5),
    GateSpec(name="no-regressions", metric="regressions", scorer="json_schema", max=800, significant=0.05),
    GateSpec(name="beats-base", metric="win_rate", judge="pairwise", min=0.5, significant=0.05),
    GateSpec(name="errors", metric="error_rate", scorer="json_schema", max=0.01),
    GateSpec(name="dates", metric="pass_rate", scorer="json_valid", tag="dates", min=0.9),
]
MODELS = {"base": {"backend": "hf", "path": "/m", "adapter": None}, "cand": {"backend": "hf", "path": "/m", "adapter": "/a"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="items per model")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = Path(tmp)
        store = Store(tmp_p / "store.db")
        run_id = store.begin_run(name="bench", config_path=None, config={}, out_dir=None)
        t0 = time.perf_counter()
        items = make_items(args.n, run_id)
        t_make = time.perf_counter() - t0

        import scipy.stats  # noqa: F401  (imported once by any run; keep its import time out of the gate timing)

        c0 = time.process_time()
        t0 = time.perf_counter()
        results = evaluate_gates(GATES, items=items, models=MODELS, baseline="base", candidates=["cand"], store=store, run_name="bench", run_id=run_id)
        t_gates = time.perf_counter() - t0
        c_gates = time.process_time() - c0

        summary = {
            "run_id": run_id, "name": "bench", "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "config_path": "eval.yaml",
            "passed": all_passed(results), "exit_code": 0 if all_passed(results) else 1, "models": MODELS, "baseline": "base",
            "candidates": ["cand"], "suites": [{"name": "regression", "kind": "regression", "version": "v1", "n": args.n}],
            "metrics": [], "gates": [r.as_dict() for r in results], "calls": {}, "errors": {}, "warnings": [], "timing": {}, "judges": {},
        }
        c0 = time.process_time()
        t0 = time.perf_counter()
        paths = write_reports(tmp_p / "out", summary, items, store=store, step_summary=False)
        t_reports = time.perf_counter() - t0
        c_reports = time.process_time() - c0

        store.save_run_items(run_id, items)
        store.finish_run(run_id, summary, "passed")
        c0 = time.process_time()
        t0 = time.perf_counter()
        rebuilt_items = store.run_items(run_id)
        write_reports(tmp_p / "again", store.get_run(run_id).summary or {}, rebuilt_items, store=store, step_summary=False)
        t_rebuild = time.perf_counter() - t0
        c_rebuild = time.process_time() - c0
        store.close()

        sizes = {p.name: p.stat().st_size for p in paths}
        out = {
            "items": len(items), "items_per_model": args.n, "scorers": 5, "gate_results": len(results),
            "make_items_s": round(t_make, 3), "evaluate_gates_s": round(t_gates, 3), "write_reports_s": round(t_reports, 3),
            "rebuild_from_store_s": round(t_rebuild, 3), "cpu_s": {"gates": round(c_gates, 3), "reports": round(c_reports, 3), "rebuild": round(c_rebuild, 3)},
            "sizes_bytes": sizes,
            "outcomes": {r.name: r.outcome for r in results},
        }
    if args.json:
        print(json.dumps(out))
        return
    print(f"{out['items']:,} run items ({args.n:,} per model) x 5 scorers (+ pairwise), {len(results)} gate results")
    print("                        wall      cpu")
    print(f"  evaluate_gates      {t_gates:7.2f} s {c_gates:7.2f} s")
    print(f"  write_reports       {t_reports:7.2f} s {c_reports:7.2f} s   (summary.json, items.jsonl, report.md, report.html, junit.xml)")
    print(f"  rebuild from store  {t_rebuild:7.2f} s {c_rebuild:7.2f} s   (read run_items + write_reports, as `evalkit report`)")
    for name, size in sizes.items():
        print(f"  {name:<14} {size / 1024:9.1f} KiB")
    print("  outcomes: " + ", ".join(f"{k}={v}" for k, v in out["outcomes"].items()))


if __name__ == "__main__":
    main()
