"""Benchmark: LLM-as-judge throughput against the loopback API server.

N judgments (default 2,000) with the default rubric, a simulated judge latency (default 50 ms) and
bounded concurrency (default 32). The ideal wall time is N x latency / concurrency; the benchmark
reports the measured wall time and its ratio to that limit, then the cached rerun (no calls).
Optionally a share of requests fails (429 with Retry-After, 500, dropped connections, verdicts that
break the schema) to show retries keep every item.

The server runs in a separate process so the client's own overhead is what gets measured.

    python benchmarks/bench_judges.py                       # 2,000 x 50 ms at concurrency 32, OpenAI SDK
    python benchmarks/bench_judges.py --api anthropic --n 500
    python benchmarks/bench_judges.py --fault-rate 0.05     # 5% of requests fail once
    python benchmarks/bench_judges.py --json                # one JSON line

Beside evalkit's run it prints the bare SDK twice: the same number of structured calls through the
SDK's typed ``create()`` with no evalkit (what a hand-written script costs), on its default httpx
transport and on the aiohttp transport it ships (the one evalkit uses), so the comparison is like for
like. The request count is the server's count for evalkit's timed run alone.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VERDICT = {"correctness": 4, "format": 5, "completeness": 4, "notes": "fine"}


def _serve(conn, latency_s: float, fault_rate: float, seed: int) -> None:
    from tests.support.loopback import Fault, LoopbackAPI

    rng = random.Random(seed)
    lock = __import__("threading").Lock()
    kinds = [Fault.rate_limit(retry_after=0.2, times=None), Fault.server_error(500, times=None), Fault.drop(times=None), Fault.content({"correctness": 9}, times=None)]
    state = {"faulted": set()}

    def pick(rec) -> bool:
        # each distinct prompt fails at most once, so every item can succeed on retry
        key = json.dumps((rec.body or {}).get("messages"), sort_keys=True)
        with lock:
            if key in state["faulted"] or rng.random() >= fault_rate:
                return False
            state["faulted"].add(key)
            return True

    srv = LoopbackAPI(responder=lambda api, req: VERDICT, latency_s=latency_s).start()
    if fault_rate > 0:
        chosen: dict[int, int] = {}

        def make(i: int):
            def when(rec) -> bool:
                if rec.index not in chosen:
                    chosen[rec.index] = rng.randrange(len(kinds)) if pick(rec) else -1
                return chosen[rec.index] == i

            return when

        for i, f in enumerate(kinds):
            f.when = make(i)
        srv.add_faults(kinds)
    conn.send((srv.base_url, srv.anthropic_base_url))
    while conn.recv() == "count":  # until "stop": how many requests so far (each phase counts its own)
        conn.send(len(srv.requests))
    conn.send({"requests": len(srv.requests), "max_concurrency": srv.max_concurrency})
    srv.stop()


def bare_sdk(api: str, base_url: str, n: int, concurrency: int, *, aiohttp: bool = False) -> tuple[float, float]:
    """(wall s, CPU s) of N structured calls through the SDK as a user writes them: typed
    ``create()``, an asyncio.Semaphore for concurrency, no evalkit; the SDK's default httpx transport,
    or (``aiohttp``) the aiohttp transport it ships (``DefaultAioHttpClient``), which evalkit uses.
    """
    import asyncio

    async def run() -> None:
        sem = asyncio.Semaphore(concurrency)
        schema = {"type": "object", "properties": {"correctness": {"type": "integer"}}, "required": ["correctness"]}
        if api == "openai":
            import openai

            extra = {"http_client": openai.DefaultAioHttpClient()} if aiohttp else {}
            client = openai.AsyncOpenAI(api_key="bench", base_url=base_url, max_retries=0, **extra)

            async def one(i: int) -> None:
                async with sem:
                    r = await client.chat.completions.create(
                        model="judge", messages=[{"role": "user", "content": f"Question {i}: grade this."}], temperature=0, max_tokens=200,
                        response_format={"type": "json_schema", "json_schema": {"name": "v", "schema": schema, "strict": True}})
                    json.loads(r.choices[0].message.content or "{}")
        else:
            import anthropic

            extra_a = {"http_client": anthropic.DefaultAioHttpClient()} if aiohttp else {}
            client = anthropic.AsyncAnthropic(api_key="bench", base_url=base_url, max_retries=0, **extra_a)  # type: ignore[assignment]

            async def one(i: int) -> None:
                async with sem:
                    r = await client.messages.create(  # type: ignore[attr-defined]
                        model="judge", max_tokens=200, messages=[{"role": "user", "content": f"Question {i}: grade this."}],
                        tools=[{"name": "verdict", "description": "grade", "input_schema": schema}], tool_choice={"type": "tool", "name": "verdict"})
                    [b for b in r.content if b.type == "tool_use"]

        await one(-1)  # warm-up: connection pool
        await asyncio.gather(*(one(i) for i in range(n)))
        await client.close()

    t0, c0 = time.perf_counter(), time.process_time()
    asyncio.run(run())
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="judgments (default 2000)")
    ap.add_argument("--latency", type=float, default=0.05, help="simulated judge latency in seconds (default 0.05)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--api", choices=["openai", "anthropic"], default="openai")
    ap.add_argument("--fault-rate", type=float, default=0.0, help="share of prompts whose first request fails")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    ap.add_argument("--no-bare", action="store_true", help="skip the bare-SDK line (the same calls without evalkit)")
    args = ap.parse_args(argv)

    from evalkit.config import JudgeEntry, ModelEntry
    from evalkit.models import structured as judge_client
    from evalkit.scoring.judges import JudgeInput, run_judges
    from evalkit.store import Store
    from evalkit.types import Message, Sample

    judge_client.BACKOFF_BASE_S = 0.05
    parent, child = mp.Pipe()
    proc = mp.Process(target=_serve, args=(child, args.latency, args.fault_rate, 0), daemon=True)
    proc.start()
    openai_url, anthropic_url = parent.recv()
    if args.api == "openai":
        model = ModelEntry(backend="openai", model="judge", base_url=openai_url, timeout_s=10)
    else:
        model = ModelEntry(backend="anthropic", model="judge", base_url=anthropic_url, timeout_s=10)
    judge = JudgeEntry(rubric="default", model=model, concurrency=args.concurrency)
    items = [JudgeInput("cand", "bench", Sample(f"s{i:05d}", (Message("user", f"Question {i}: summarise the ticket."),)), f"Answer {i}.") for i in range(args.n)]

    def server_count() -> int:
        parent.send("count")
        return int(parent.recv())

    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "store.db") as store:
        # warm-up: import the SDK and open the connection pool outside the timing
        run_judges([judge], config_dir=ROOT, store=store, items=[JudgeInput("w", "w", items[0].sample, "warm-up")], progress=False)
        before = server_count()
        t0, c0 = time.perf_counter(), time.process_time()
        first = run_judges([judge], config_dir=ROOT, store=store, items=items, progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        evalkit_requests = server_count() - before  # evalkit's timed run only: no warm-up, no bare-SDK call
        t1 = time.perf_counter()
        cached = run_judges([judge], config_dir=ROOT, store=store, items=items, progress=False)
        wall_cached = time.perf_counter() - t1
    url = openai_url if args.api == "openai" else anthropic_url
    bare = None if args.no_bare else bare_sdk(args.api, url, args.n, args.concurrency)
    bare_aio = None if args.no_bare else bare_sdk(args.api, url, args.n, args.concurrency, aiohttp=True)
    parent.send("stop")
    server = parent.recv()
    proc.join(timeout=5)

    ideal = args.n * args.latency / args.concurrency
    st = first.stats["default"]
    prov = next(iter(st.get("providers", {}).values()), {})
    result = {
        "api": args.api,
        "n": args.n,
        "latency_s": args.latency,
        "concurrency": args.concurrency,
        "fault_rate": args.fault_rate,
        "wall_s": round(wall, 3),
        "ideal_s": round(ideal, 3),
        "ratio": round(wall / ideal, 3),
        "serial_s": round(args.n * args.latency, 1),
        "client_cpu_s": round(cpu, 3),
        "client_cpu_ms_per_judgment": round(cpu / args.n * 1000, 2),
        "judged": st["judged"],
        "errors": first.errors,
        "calls_made": first.calls_made,
        "retries": prov.get("retries", 0),
        "retry_reasons": prov.get("retry_reasons", {}),
        "verdict_retries": st["verdict_retries"],
        "server_requests": evalkit_requests,
        "server_max_concurrency": server["max_concurrency"],
        "cached_wall_s": round(wall_cached, 3),
        "cached_calls_made": cached.calls_made,
        "cached_calls_cached": cached.calls_cached,
        "bare_sdk_wall_s": round(bare[0], 3) if bare else None,
        "bare_sdk_ratio": round(bare[0] / ideal, 3) if bare else None,
        "bare_sdk_cpu_ms_per_call": round(bare[1] / args.n * 1000, 2) if bare else None,
        "bare_sdk_aiohttp_wall_s": round(bare_aio[0], 3) if bare_aio else None,
        "bare_sdk_aiohttp_ratio": round(bare_aio[0] / ideal, 3) if bare_aio else None,
        "bare_sdk_aiohttp_cpu_ms_per_call": round(bare_aio[1] / args.n * 1000, 2) if bare_aio else None,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"judges benchmark ({args.api} SDK, loopback server, {args.n} judgments, {args.latency * 1000:.0f} ms latency, concurrency {args.concurrency})")
        print(f"  first run : {wall:7.2f} s   ideal N x latency / concurrency = {ideal:.2f} s   ratio {wall / ideal:.2f}   (serial: {args.n * args.latency:.0f} s)")
        print(f"              client CPU {cpu:.2f} s ({cpu / args.n * 1000:.1f} ms per judgment: SDK + rendering + validation + store)")
        print(f"              judged {st['judged']}/{args.n}, judge errors {first.errors}, retries {result['retries']} {result['retry_reasons']}, verdict retries {st['verdict_retries']}, "
              f"requests the server saw from this run {evalkit_requests}, max in flight {server['max_concurrency']}")
        print(f"  cached    : {wall_cached:7.2f} s   calls made {cached.calls_made}, served from cache {cached.calls_cached}")
        if bare:
            print(f"  bare SDK  : {bare[0]:7.2f} s   ratio {bare[0] / ideal:.2f}   client CPU {bare[1] / args.n * 1000:.1f} ms per call "
                  f"(the same {args.n} structured calls through the {args.api} SDK's default transport and typed create(), no evalkit)")
        if bare_aio:
            print(f"  bare SDK, aiohttp: {bare_aio[0]:7.2f} s   ratio {bare_aio[0] / ideal:.2f}   client CPU {bare_aio[1] / args.n * 1000:.1f} ms per call "
                  f"(the same calls on the SDK's aiohttp transport, DefaultAioHttpClient: evalkit's transport, without evalkit)")
        print(f"  targets   : ratio <= 1.3 ({'met' if wall / ideal <= 1.3 else 'NOT met'}), client CPU <= 1.5 ms per judgment "
              f"({'met' if cpu / args.n * 1000 <= 1.5 else 'NOT met'})")
    return result


if __name__ == "__main__":
    main()
