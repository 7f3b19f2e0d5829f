"""Benchmark: 2,000 judgments through a provider batch API against the loopback server, beside the direct path.

    python benchmarks/bench_batch.py                    # OpenAI files + batches, 2,000 judgments
    python benchmarks/bench_batch.py --api anthropic --n 5000

The server runs in its own process (it answers the batch when it is polled the second time), so the
client's own cost is what is measured: wall and CPU for building the requests, uploading them,
polling and parsing every answer (rendering, validation and the store included), and the number of
HTTP requests the client made. The direct path (concurrency 32, no latency) is printed beside it.
Target (ISSUE 16): <= 2 s of client CPU for 2,000 judgments, a handful of requests.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VERDICT = {"correctness": 4, "format": 5, "completeness": 4, "notes": "fine"}


def _serve(conn) -> None:
    from tests.support.loopback import LoopbackAPI

    srv = LoopbackAPI(responder=lambda api, req: VERDICT).start()
    srv.batch_polls = 2
    conn.send((srv.base_url, srv.anthropic_base_url))
    while True:
        msg = conn.recv()
        if msg == "stats":
            conn.send({"requests": len(srv.requests), "creates": sum(1 for a in srv.batch_log if a[0] == "create")})
            srv.reset_stats()
            srv.batch_log.clear()
        else:
            break
    srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--api", choices=["openai", "anthropic"], default="openai")
    args = ap.parse_args()

    from evalkit.config import BatchConfig, JudgeEntry, ModelEntry
    from evalkit.scoring.judges import JudgeInput, run_judges
    from evalkit.store import Store
    from evalkit.types import Message, Sample

    parent, child = mp.Pipe()
    proc = mp.Process(target=_serve, args=(child,), daemon=True)
    proc.start()
    openai_url, anthropic_url = parent.recv()
    url = openai_url if args.api == "openai" else anthropic_url
    items = [JudgeInput("cand", "bench", Sample(f"s{i:05d}", (Message("user", f"Question {i}: summarise the ticket."),)), f"Answer {i}.") for i in range(args.n)]
    rows = {}
    for label, batch in (("batch", BatchConfig(poll_s=0.2)), ("direct", None)):
        judge = JudgeEntry(rubric="default", model=ModelEntry(backend=args.api, model="judge", base_url=url, timeout_s=30, batch=batch), concurrency=32)
        with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "store.db") as store:
            run_judges([judge], config_dir=ROOT, store=store, items=[JudgeInput("w", "w", items[0].sample, "warm-up")], progress=False)
            parent.send("stats")
            parent.recv()
            t0, c0 = time.perf_counter(), time.process_time()
            out = run_judges([judge], config_dir=ROOT, store=store, items=items, progress=False)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            parent.send("stats")
            server = parent.recv()
        rows[label] = (wall, cpu, server, out)
    parent.send("stop")
    proc.join(timeout=5)
    print(f"bench_batch: {args.n} judgments, {args.api} SDK, loopback server (batch answered on the 2nd poll, polled every 0.2 s)")
    print(f"{'path':<8}{'wall s':>9}{'client CPU s':>14}{'ms CPU/judgment':>17}{'HTTP requests':>15}{'batches':>9}{'judged':>8}{'errors':>8}")
    for label, (wall, cpu, server, out) in rows.items():
        judged = out.stats["default"]["judged"]
        print(f"{label:<8}{wall:>9.2f}{cpu:>14.2f}{cpu / args.n * 1000:>17.2f}{server['requests']:>15}{server['creates']:>9}{judged:>8}{out.errors:>8}")
    b, d = rows["batch"], rows["direct"]
    print(f"batch / direct: client CPU {b[1] / d[1]:.2f}x, HTTP requests {b[2]['requests']} vs {d[2]['requests']}; "
          f"target <= 2 s client CPU for 2,000: {'met' if b[1] <= 2.0 * args.n / 2000 else 'NOT met'}")


if __name__ == "__main__":
    main()
