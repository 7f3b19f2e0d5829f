"""The store on SQLite and on PostgreSQL, side by side in one run: 10,000 items x 2 models.

For each store it measures, through evalkit's own Store:

* write: the generations of a first run, committed block after block (as `evalkit run` does);
* cached rerun: what a fully cached rerun asks of the store: open it, look up all 20,000 generation
  keys (every one a hit), record the run, save its 20,000 run items, finish it;
* 4 writers: four processes at once, each writing 10,000 x 2 generations whose keys overlap half of
  the next writer's (a team's CI runners on overlapping models), then the rows are counted: every key
  exactly once.

PostgreSQL is the machine's server (127.0.0.1:5432, or EVALKIT_BENCH_PG=postgresql://user@host:port);
the benchmark makes its own database and drops it. Target: the cached rerun on PostgreSQL <= 3 s and
<= 2 x SQLite's.

    python benchmarks/bench_store.py [--items 10000] [--block 64]
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evalkit.store import RunItem, Store  # noqa: E402
from evalkit.types import Completion  # noqa: E402

SERVER = os.environ.get("EVALKIT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
MODELS = ("base", "cand")


def key(model: str, i: int) -> str:
    return hashlib.sha256(f"{model}:{i}".encode()).hexdigest()


def output(model: str, i: int) -> str:
    return f'{{"name": "Person {i}", "age": {20 + i % 60}, "city": "City {i % 97}", "model": "{model}"}}'


def write_generations(location: str, n: int, block: int, models=MODELS, offset: int = 0) -> float:
    t = time.perf_counter()
    with Store(location) as st:
        rows = [(key(m, i), m, f"p{i}", Completion(text=output(m, i), finish_reason="stop", tokens_in=40, tokens_out=20, latency_s=0.1))
                for i in range(offset, offset + n) for m in models]
        for j in range(0, len(rows), block):
            st.put_generations(rows[j : j + block])
    return time.perf_counter() - t


def cached_rerun(location: str, n: int) -> tuple[float, int]:
    t = time.perf_counter()
    with Store(location) as st:
        keys = [key(m, i) for i in range(n) for m in MODELS]
        got = st.get_generations(keys)
        run_id = st.begin_run(name="bench", config_path="eval.yaml", config={"models": list(MODELS)}, out_dir=None)
        items = [RunItem(run_id, m, m + "-id", "extract", "v1", f"s{i:05d}",
                         {"id": f"s{i:05d}", "messages": [{"role": "user", "content": f"Extract person {i}"}], "tags": []},
                         key(m, i), got[key(m, i)].text, None, {"json_valid": {"value": 1.0, "passed": True}})
                 for i in range(n) for m in MODELS]
        st.save_run_items(run_id, items)
        st.finish_run(run_id, {"run_id": run_id, "passed": True}, "passed")
    return time.perf_counter() - t, len(got)


def _writer(args: tuple[str, int, int, int]) -> float:
    location, n, block, offset = args
    return write_generations(location, n, block, offset=offset)


def four_writers(location: str, n: int, block: int) -> tuple[float, list[float], int]:
    Store(location).close()  # the schema first, as a team's first run would
    offsets = [w * n // 2 for w in range(4)]  # each writer overlaps half of the next one's keys
    t = time.perf_counter()
    with mp.get_context("spawn").Pool(4) as pool:
        each = pool.map(_writer, [(location, n, block, off) for off in offsets])
    wall = time.perf_counter() - t
    with Store(location) as st:
        rows = next(st.execute("SELECT COUNT(*) FROM generations"))[0]
        distinct = next(st.execute("SELECT COUNT(DISTINCT key) FROM generations"))[0]
    expected = (offsets[-1] + n) * len(MODELS)
    assert rows == distinct == expected, (rows, distinct, expected)
    return wall, each, rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--block", type=int, default=64, help="generations committed per transaction (a run's block)")
    args = ap.parse_args()
    import psycopg

    dbname = f"evalkit_bench_{secrets.token_hex(3)}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{dbname}"')
    n, rows = args.items, args.items * len(MODELS)
    results: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for kind in ("sqlite", "postgres"):
                def loc(schema: str, kind: str = kind) -> str:
                    if kind == "sqlite":
                        return str(Path(tmp) / f"{schema}.db")
                    with psycopg.connect(f"{SERVER}/{dbname}", autocommit=True) as con:
                        con.execute(f'CREATE SCHEMA "{schema}"')
                    return f"{SERVER}/{dbname}?options=-csearch_path%3D{schema}"

                main_loc = loc("main")
                w = write_generations(main_loc, n, args.block)
                rerun, hits = cached_rerun(main_loc, n)
                assert hits == rows, hits
                wall, each, stored = four_writers(loc("four"), n, args.block)
                results[kind] = {"write": w, "rerun": rerun, "4w_wall": wall, "4w_rows": stored, "4w_each": sum(each) / len(each)}
                print(f"{kind:>8}: write {rows} generations in blocks of {args.block}: {w:6.2f} s ({rows / w:8.0f} items/s) | "
                      f"cached rerun of {n} items x 2 models: {rerun:5.2f} s | 4 writers at once: {wall:5.2f} s wall, "
                      f"{stored} rows, each {rows / results[kind]['4w_each']:7.0f} items/s, together {4 * rows / wall:7.0f} items/s",
                      flush=True)
    finally:
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    s, p = results["sqlite"], results["postgres"]
    print(f"ratio postgres/sqlite: write {p['write'] / s['write']:.2f}x, cached rerun {p['rerun'] / s['rerun']:.2f}x, "
          f"4 writers (wall) {p['4w_wall'] / s['4w_wall']:.2f}x")
    ok = p["rerun"] <= 3.0 and p["rerun"] <= 2 * s["rerun"]
    print(f"target (cached rerun on postgres <= 3 s and <= 2 x sqlite): {'met' if ok else 'NOT met'} "
          f"({p['rerun']:.2f} s vs {s['rerun']:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
