"""Benchmark: `evalkit data validate` and `evalkit data audit` (no embeddings) on a generated file.

    python benchmarks/bench_data.py              # 1,000,000 lines (about 300 MB), generated in a temp dir
    python benchmarks/bench_data.py --lines 100000

Prints lines per second (wall clock, and per CPU-second, which is steadier on a shared machine)
and the peak RSS of each stage, and validate's speed against the yardstick: a plain ``json.loads``
loop with the same role checks, run side by side (best of --repeat runs each). Each stage runs in its own process, so its
peak RSS is its own (a bare `python -c "import evalkit.data.audit"` is printed for reference).
The audit checks against a 1,000-item eval file with 10 items planted in the training data, and the
file has planted duplicates, so every check has work to do.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "the a of to and in is for on with that this by from at as be are was it an or not which but all can has "
    "river stone cloud paper lamp garden silver window orange tiger market pencil summer forest bridge engine "
    "candle violin planet harbor data model train value name city number report table list order price "
    "customer invoice total amount date address email phone status result error field record query answer"
).split()
SYSTEMS = ["You are a helpful assistant.", "You extract fields as JSON.", "Answer briefly."]


def generate(path: Path, lines: int, eval_path: Path, seed: int = 0) -> None:
    r = random.Random(seed)
    eval_items = []
    for i in range(1000):
        q = " ".join(r.choice(WORDS) for _ in range(30))
        eval_items.append({"id": f"e{i}", "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "x"}]})
    with eval_path.open("w") as fh:
        for it in eval_items:
            fh.write(json.dumps(it) + "\n")
    planted = {r.randrange(lines): eval_items[k]["messages"][0]["content"] for k in range(10)}
    with path.open("w") as fh:
        prev = None
        for i in range(lines):
            if prev is not None and i % 1000 == 1:
                fh.write(prev)  # an exact duplicate every 1000 lines
                continue
            n = r.randrange(15, 45)
            q = " ".join(r.choice(WORDS) for _ in range(n))
            if i in planted:
                q = "Please consider: " + planted[i]
            if i % 3 == 1:
                a = json.dumps({"customer_name": r.choice(WORDS), "total_amount": r.randrange(1000)})
            else:
                a = " ".join(r.choice(WORDS) for _ in range(r.randrange(5, 25)))
            obj = {"id": f"x{i}", "messages": [{"role": "system", "content": SYSTEMS[i % 3]}, {"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            prev = json.dumps(obj) + "\n"
            fh.write(prev)


STAGE = r"""
import json, resource, sys, time
from pathlib import Path
stage, path, eval_path = sys.argv[1], sys.argv[2], sys.argv[3]
# imports first, outside the timed part (a fixed cost, printed as the baseline's own line)
if stage == "validate":
    from evalkit.data.validate import validate_files
elif stage == "audit":
    from evalkit.data.audit import audit_file
t = time.perf_counter()
cpu0 = time.process_time()
if stage == "validate":
    res = validate_files([Path(path)])
    info = {"problems": len(res.problems), "examples": res.summaries[0].examples}
elif stage == "audit":
    rep = audit_file(Path(path), against=[Path(eval_path)])
    ch = rep.data["checks"]
    info = {"examples": rep.data["examples"], "exact_dup_groups": ch["exact_duplicates"]["groups"],
            "near_dup_groups": ch["near_duplicates"]["groups"], "contradictions": ch["contradictions"]["groups"],
            "contaminated": ch["contamination"]["contaminated_items"]}
elif stage == "plain":
    # the yardstick: a plain json.loads loop with the same role checks (what a user would write by hand)
    roles = {"system", "user", "assistant"}
    bad = n = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            n += 1
            try:
                obj = json.loads(line)
            except ValueError:
                bad += 1
                continue
            msgs = obj.get("messages") if isinstance(obj, dict) else None
            if not isinstance(msgs, list) or not msgs or not all(
                isinstance(m, dict) and m.get("role") in roles and isinstance(m.get("content"), str) for m in msgs
            ):
                bad += 1
    info = {"examples": n, "bad": bad}
else:
    import evalkit.data.audit, evalkit.data.validate
    info = {}
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "cpu_seconds": time.process_time() - cpu0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **info}))
"""


def run_stage(stage: str, path: Path, eval_path: Path, repeat: int = 1) -> dict:
    """The best of ``repeat`` runs (each in a fresh process): on a shared machine the minimum is the
    steadiest estimate of what the code costs.
    """
    best: dict | None = None
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", STAGE, stage, str(path), str(eval_path)], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{stage} failed:\n{out.stderr}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        if best is None or r["seconds"] < best["seconds"]:
            best = r
    assert best is not None
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--stages", default="plain,validate,audit", help="Comma-separated: plain (a json.loads + role-check loop, the yardstick), validate, audit.")
    ap.add_argument("--repeat", type=int, default=3, help="Runs per stage; the fastest is reported (default 3).")
    ap.add_argument("--dir", type=Path, default=None, help="Where to generate (default: a temp dir, removed after).")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path, eval_path = Path(tmp) / "train.jsonl", Path(tmp) / "eval.jsonl"
        t = time.perf_counter()
        generate(path, args.lines, eval_path)
        size = path.stat().st_size / 1e6
        print(f"generated {args.lines:,} lines ({size:.0f} MB) in {time.perf_counter() - t:.1f}s")
        base = run_stage("imports", path, eval_path)
        print(f"baseline (python + evalkit.data imports): peak RSS {base['peak_rss_mb']:.0f} MB")
        results = {}
        for stage in [x.strip() for x in args.stages.split(",") if x.strip()]:
            r = results[stage] = run_stage(stage, path, eval_path, args.repeat if stage in ("plain", "validate") else 1)
            extra = {k: v for k, v in r.items() if k not in ("seconds", "cpu_seconds", "peak_rss_mb")}
            print(
                f"{stage:>8}: {r['seconds']:.1f}s wall, {args.lines / r['seconds']:,.0f} lines/s "
                f"({args.lines / r['cpu_seconds']:,.0f} lines per CPU-second)  peak RSS {r['peak_rss_mb']:.0f} MB  {extra}"
            )
        if "plain" in results and "validate" in results:
            p, v = results["plain"], results["validate"]
            print(f"validate vs the plain json.loads loop: {p['seconds'] / v['seconds']:.2f}x wall, "
                  f"{p['cpu_seconds'] / v['cpu_seconds']:.2f}x CPU (target >= 1.2x; above 1 means validate is faster)")


if __name__ == "__main__":
    main()
