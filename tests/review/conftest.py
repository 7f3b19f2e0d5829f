"""A store with one finished run of two models (no real model needed: review reads only the store)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from evalkit.store import RunItem, Store

# Distinctive identities, so a leak scan can look for every one of them.
CAND = "cand-qlora-zebra"
BASE = "base-llama-walrus"
CAND_PATH = "/models/secret-adapter-dir-zebra"
BASE_PATH = "/models/base-checkpoint-walrus"
CAND_ID = "c0ffee1234abcd99"
BASE_ID = "deadbeef5678ef01"


def make_run(
    store: Store,
    n: int = 20,
    *,
    cand_output: Callable[[int], str | None] = lambda i: f"GOOD answer {i}",
    base_output: Callable[[int], str | None] = lambda i: f"BAD answer {i}",
    tags: Callable[[int], list[str]] = lambda i: [],
    cand_scores: Callable[[int], dict[str, Any]] = lambda i: {},
    suite: str = "regression",
    models: tuple[str, str] = (CAND, BASE),
    model_ids: tuple[str, str] = (CAND_ID, BASE_ID),
) -> str:
    cand, base = models
    summary_models = {
        cand: {"backend": "hf", "path": CAND_PATH, "adapter": CAND_PATH, "model_id": model_ids[0], "role": "candidate"},
        base: {"backend": "hf", "path": BASE_PATH, "adapter": None, "model_id": model_ids[1], "role": "baseline"},
    }
    run_id = store.begin_run(name="t", config_path="eval.yaml", config={"models": summary_models}, out_dir=None)
    items: list[RunItem] = []
    for i in range(n):
        sample = {
            "id": f"s{i:03d}",
            "messages": [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": f"Question number {i}?"}],
            "reference": f"reference {i}",
            "tags": tags(i),
            "metadata": {},
        }
        for model, mid, out, scores in (
            (cand, model_ids[0], cand_output(i), cand_scores(i)),
            (base, model_ids[1], base_output(i), {}),
        ):
            items.append(
                RunItem(run_id, model, mid, suite, "v1", sample["id"], sample, f"gk-{model}-{i}", out,
                        None if out is not None else "boom", scores)
            )
    store.save_run_items(run_id, items)
    store.finish_run(
        run_id,
        {"run_id": run_id, "baseline": base, "candidates": [cand], "models": summary_models, "passed": True},
        "passed",
    )
    return run_id


@pytest.fixture
def store(tmp_path: Path) -> Store:
    st = Store(tmp_path / ".evalkit" / "store.db")
    yield st
    st.close()
