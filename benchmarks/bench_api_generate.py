"""API candidates at the latency bound: 1,000 generations through the openai backend against a loopback
server answering in 50 ms, concurrency 32, beside the ideal (1,000 x 50 ms / 32 = 1.6 s); then a run
with 1,000 generations and 1,000 judge calls beside a bare aiohttp client sending the same requests.

The run commits a block at a time (the resume granularity); with the requests of the next blocks
already in flight, the pipe never drains at a block boundary. The server runs in its own process, so
its work never competes with the client's for the interpreter. Three alternating rounds; medians.

- generation alone: ``timing.generate_s`` of ``evalkit run`` vs the ideal (target <= 1.3 x);
- generation + judging: ``evalkit run``'s wall time (start to summary: store, scoring, gates and
  reports included) vs a bare aiohttp client that POSTs the same 1,000 chat completions, then 1,000
  judge requests with a JSON schema, 32 at a time, and parses the answers (target <= 1.5 x).

    python benchmarks/bench_api_generate.py [--n 1000] [--latency 0.05] [--concurrency 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

TARGET_GEN = 1.3
TARGET_JUDGED = 1.5


def bare_aiohttp(base_url: str, n: int, concurrency: int) -> float:
    """Wall seconds of N chat completions then N schema-constrained judge calls, raw aiohttp, no SDK."""
    import asyncio

    import aiohttp

    schema = {"type": "object", "properties": {"correctness": {"type": "integer"}}, "required": ["correctness"]}

    async def run() -> float:
        sem = asyncio.Semaphore(concurrency)
        headers = {"Authorization": "Bearer sk-bench"}
        async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=concurrency)) as session:

            async def post(body: dict) -> str:
                async with sem, session.post(f"{base_url}/chat/completions", json=body) as r:
                    r.raise_for_status()
                    return str((await r.json())["choices"][0]["message"]["content"])

            await post({"model": "m", "messages": [{"role": "user", "content": "warm-up"}]})
            t0 = time.perf_counter()
            replies = await asyncio.gather(*(post({"model": "m", "messages": [{"role": "user", "content": f"hello {i}"}], "max_tokens": 256,
                                                   "temperature": 0}) for i in range(n)))
            verdicts = await asyncio.gather(*(post({"model": "judge", "temperature": 0, "max_tokens": 200, "messages": [
                {"role": "user", "content": f"Question: hello {i}\nAnswer: {replies[i]}\nGrade it."}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "v", "schema": schema, "strict": True}}}) for i in range(n)))
            assert all("correctness" in json.loads(v) for v in verdicts)
            return time.perf_counter() - t0

    return asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    from bench_judges import _serve

    from evalkit.run import run_eval

    os.environ["EK_BENCH_KEY"] = "sk-bench"
    parent, child = mp.Pipe()
    proc = mp.Process(target=_serve, args=(child, a.latency, 0.0, 0), daemon=True)
    proc.start()
    base_url, _ = parent.recv()
    gen_s: list[float] = []
    judged: list[tuple[float, dict]] = []
    bare: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            d = root / "suites" / "s"
            d.mkdir(parents=True)
            (d / "suite.yaml").write_text("name: s\nkind: regression\nscorers:\n  - {max_chars: 1000}\n")
            (d / "samples.jsonl").write_text("".join(json.dumps({"id": f"i{i}", "messages": [{"role": "user", "content": f"hello {i}"}]}) + "\n"
                                                     for i in range(a.n)))
            model = f"{{backend: openai, model: m, base_url: '{base_url}', api_key_env: EK_BENCH_KEY, concurrency: {a.concurrency}}}"
            judge = f"judges:\n  - {{rubric: default, concurrency: {a.concurrency}, model: {{backend: openai, model: judge, base_url: '{base_url}', api_key_env: EK_BENCH_KEY}}}}\n"
            for r in range(a.rounds):
                cfg = root / f"gen{r}.yaml"
                cfg.write_text(f"models:\n  m: {model}\nsuites: ['{d}']\nstore: '{root / f'gen{r}.db'}'\n")
                res = run_eval(cfg, root / f"gen{r}", progress=False)
                gen_s.append(float(res.summary["timing"]["generate_s"]))
                cfg = root / f"judged{r}.yaml"
                cfg.write_text(f"models:\n  m: {model}\nsuites: ['{d}']\nstore: '{root / f'judged{r}.db'}'\n{judge}")
                t0 = time.perf_counter()
                res = run_eval(cfg, root / f"judged{r}", progress=False)
                judged.append((time.perf_counter() - t0, res.summary["timing"]))
                bare.append(bare_aiohttp(base_url, a.n, a.concurrency))
    finally:
        parent.send("stop")
        parent.recv()
        proc.join(timeout=5)
    import platform

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), None) \
        if Path("/proc/cpuinfo").is_file() else None
    ideal = a.n * a.latency / a.concurrency
    g = statistics.median(gen_s)
    print(f"machine: {cpu or platform.processor()}, {os.cpu_count()} cores; loopback server (own process) at {a.latency * 1000:.0f} ms, "
          f"concurrency {a.concurrency}; medians of {a.rounds} alternating rounds")
    print(f"  {a.n} generations (openai SDK): generate_s {g:.2f} s (rounds {', '.join(f'{t:.2f}' for t in gen_s)}); ideal {ideal:.2f} s; "
          f"{g / ideal:.2f}x ideal (target <= {TARGET_GEN})")
    j = statistics.median(t for t, _ in judged)
    b = statistics.median(bare)
    timing = judged[[t for t, _ in judged].index(j)][1] if j in [t for t, _ in judged] else judged[0][1]
    parts = ", ".join(f"{k} {v:.2f}" for k, v in timing.items() if isinstance(v, (int, float)) and k.endswith("_s"))
    print(f"  {a.n} generations + {a.n} judge calls: evalkit run {j:.2f} s wall (rounds {', '.join(f'{t:.2f}' for t, _ in judged)}; {parts}); "
          f"bare aiohttp {b:.2f} s (rounds {', '.join(f'{t:.2f}' for t in bare)}); {j / b:.2f}x bare (target <= {TARGET_JUDGED}); "
          f"ideal {2 * ideal:.2f} s")


if __name__ == "__main__":
    main()
