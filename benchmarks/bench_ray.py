"""Benchmark: the same eval locally in one process and on a local Ray cluster with 1 and 2 replicas.

    python benchmarks/bench_ray.py                  # 140 samples x (base + 2 adapters) = 420 items
    python benchmarks/bench_ray.py --samples 200 --max-new-tokens 64

The tiny demo-recipe base with two LoRA adapters (hf backend), every run on a fresh store so every
item is generated. The cluster is started once (one head node with 2 CPUs, token auth) and every
`evalkit run --ray ADDRESS` connects to it, as a CI job connects to a running cluster. Configurations:

- local: `evalkit run` in one process (torch's default threads: every core);
- ray 1x2: one replica given both CPUs (num_cpus 2): the Ray overhead against local;
- ray 1x1, ray 2x1: one and two replicas of one CPU each (torch threads pinned to the replica's
  CPUs): the scaling ratio.

Prints, side by side: whole-run wall (process start to exit: cluster connect, model loads, scoring,
reports), generation throughput (items / seconds the replicas' blocks took, from summary.json's
engine entry; local: generate_s), and the ratios. Targets (ISSUE 15, this 2-core machine): 2x1 / 1x1
generation throughput >= 1.6; the overhead of 1x2 against local <= 15 % of wall.

Ray's traffic stays on loopback: the script re-runs itself inside a fresh network namespace
(`unshare -n`, root) unless it is already in one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = {"scaling": 1.6, "overhead": 0.15}


def build(work: Path, samples: int, max_new_tokens: int) -> None:
    from evalkit.demo_model import build_base
    from tests.support.models import TINY_ADAPTER_SEEDS, TINY_BASE_BUILD, make_tiny_adapter
    from tests.support.ray_cluster import write_adapter_eval

    base = build_base(work / "base", progress=False, **TINY_BASE_BUILD)
    adapters = {n: make_tiny_adapter(base, work / n, seed) for n, seed in TINY_ADAPTER_SEEDS.items()}
    common = write_adapter_eval(work, base, adapters, samples=samples, max_new_tokens=max_new_tokens, batch_size=8)
    (work / "local.yaml").write_text(common)
    for name, (replicas, cpus) in {"r1x2": (1, 2), "r1x1": (1, 1), "r2x1": (2, 1)}.items():
        (work / f"{name}.yaml").write_text(common + f"ray: {{replicas: {replicas}, num_cpus: {cpus}}}\n")


def run(work: Path, config: str, env: dict[str, str], *extra: str) -> dict[str, float]:
    out = work / f"o_{config}"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "evalkit.cli", "run", f"{config}.yaml", "--no-progress", "--store", f"{config}.db",
                        "--out", str(out), *extra], cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"evalkit run {config} failed (exit {r.returncode}): {r.stderr[-2000:]}")
    s = json.loads((out / "summary.json").read_text())
    items = s["calls"]["generations_made"]
    eng = s.get("engine", {})
    if eng.get("kind") == "ray":
        gen_s = sum(g["wall_s"] for g in eng["groups"])
        startup = sum(g["startup_s"] for g in eng["groups"])
    else:
        gen_s, startup = s["timing"]["generate_s"], 0.0
    return {"items": items, "wall_s": wall, "gen_s": gen_s, "gen_items_per_s": items / gen_s, "startup_s": startup,
            "outputs": [json.loads(l)["output"] for l in (out / "items.jsonl").read_text().splitlines()]}  # type: ignore[dict-item]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=140)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()
    if os.environ.get("EVALKIT_BENCH_NETNS") != "1":
        env = dict(os.environ, EVALKIT_BENCH_NETNS="1")
        cmd = ["unshare", "-n", "bash", "-c", 'ip link set lo up && exec "$@"', "netns", sys.executable, *sys.argv]
        raise SystemExit(subprocess.call(cmd, env=env))

    from tests.support.ray_cluster import LocalCluster, ray_env

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        work = Path(tmp)
        build(work, args.samples, args.max_new_tokens)
        env = ray_env()
        env["EVALKIT_CACHE"] = str(work / "cache")
        res = {"local": run(work, "local", env)}
        with LocalCluster(workers=0, cpus=2, env=env, port=6393) as cluster:
            for name in ("r1x2", "r1x1", "r2x1"):
                res[name] = run(work, name, env, "--ray", cluster.address)
        same = all(res[k]["outputs"] == res["local"]["outputs"] for k in res)
        print(f"bench_ray: {args.samples} samples x 3 models = {res['local']['items']:.0f} items, max_new_tokens {args.max_new_tokens}, "
              f"{os.cpu_count()} CPUs; outputs identical to local in every configuration: {same}")
        print(f"{'config':<28}{'wall s':>9}{'generate s':>12}{'items/s (gen)':>15}{'replica start s':>17}")
        labels = {"local": "local (one process)", "r1x2": "ray: 1 replica x 2 CPUs", "r1x1": "ray: 1 replica x 1 CPU", "r2x1": "ray: 2 replicas x 1 CPU"}
        for k, lab in labels.items():
            r = res[k]
            print(f"{lab:<28}{r['wall_s']:>9.2f}{r['gen_s']:>12.2f}{r['gen_items_per_s']:>15.1f}{r['startup_s']:>17.2f}")
        scaling = res["r2x1"]["gen_items_per_s"] / res["r1x1"]["gen_items_per_s"]
        overhead = (res["r1x2"]["wall_s"] - res["local"]["wall_s"]) / res["r1x2"]["wall_s"]
        gen_overhead = (res["r1x2"]["gen_s"] - res["local"]["gen_s"]) / res["r1x2"]["gen_s"]
        print(f"scaling 2 replicas / 1 replica (generation items/s): {scaling:.2f}x (target >= {TARGETS['scaling']})")
        print(f"Ray overhead, 1 replica x 2 CPUs vs local: {overhead:+.1%} of wall (target <= {TARGETS['overhead']:.0%}); "
              f"generation alone {gen_overhead:+.1%}")
        if not same:
            raise SystemExit("outputs differ between configurations")


if __name__ == "__main__":
    main()
