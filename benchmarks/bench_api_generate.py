"""API candidates at the latency bound: 1,000 generations through the openai backend against a loopback
server answering in 50 ms, concurrency 32, beside the ideal (1,000 x 50 ms / 32 = 1.6 s).

The run commits a block at a time (the resume granularity); with the requests of the next blocks
already in flight, the pipe never drains at a block boundary. Prints ``timing.generate_s`` of
``evalkit run`` (best of ``--repeats``) and its ratio to the ideal (target <= 1.3).

    python benchmarks/bench_api_generate.py [--n 1000] [--latency 0.05] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET = 1.3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    from evalkit.run import run_eval
    from tests.support.loopback import LoopbackAPI

    os.environ["EK_BENCH_KEY"] = "sk-bench"
    server = LoopbackAPI(latency_s=a.latency).start()
    times = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            d = root / "suites" / "s"
            d.mkdir(parents=True)
            (d / "suite.yaml").write_text("name: s\nkind: regression\nscorers:\n  - {max_chars: 1000}\n")
            (d / "samples.jsonl").write_text("".join(json.dumps({"id": f"i{i}", "messages": [{"role": "user", "content": f"hello {i}"}]}) + "\n"
                                                     for i in range(a.n)))
            for r in range(a.repeats):
                cfg = root / f"eval{r}.yaml"
                cfg.write_text(f"models:\n  m: {{backend: openai, model: m, base_url: '{server.base_url}', api_key_env: EK_BENCH_KEY, "
                               f"concurrency: {a.concurrency}}}\nsuites: ['{d}']\nstore: '{root / f'store{r}.db'}'\n")
                res = run_eval(cfg, root / f"out{r}", progress=False)
                times.append(float(res.summary["timing"]["generate_s"]))
    finally:
        server.stop()
    ideal = a.n * a.latency / a.concurrency
    best = min(times)
    print(f"{a.n} generations, openai SDK, loopback server at {a.latency * 1000:.0f} ms, concurrency {a.concurrency}: "
          f"generate_s {', '.join(f'{t:.2f}' for t in times)} s; ideal {ideal:.2f} s; best/ideal {best / ideal:.2f} (target <= {TARGET})")


if __name__ == "__main__":
    main()
