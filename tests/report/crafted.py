"""Hand-made run items and summaries for gate and report tests (no models involved)."""

from __future__ import annotations

from typing import Any

from evalkit.config import EvalConfig, GateSpec
from evalkit.store import RunItem


def item(
    model: str,
    sid: str,
    scores: dict[str, Any] | None = None,
    *,
    suite: str = "s",
    version: str = "v1",
    output: str | None = "out",
    error: str | None = None,
    tags: tuple[str, ...] = (),
    prompt: str = "prompt",
    reference: str | None = "ref",
    run_id: str = "r1",
) -> RunItem:
    return RunItem(
        run_id=run_id,
        model=model,
        model_id=f"id-{model}",
        suite=suite,
        suite_version=version,
        sample_id=sid,
        sample={"id": sid, "messages": [{"role": "user", "content": prompt}], "reference": reference, "tags": list(tags), "metadata": {}},
        generation_key=f"g-{model}-{sid}",
        output=output,
        error=error,
        scores=scores or {},
    )


def ok(passed: bool | None, value: float | None = None, error: str | None = None, **details: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"value": (1.0 if passed else 0.0) if value is None and passed is not None else value, "passed": passed}
    if error:
        d["error"] = error
        d["value"] = None
        d["passed"] = None
    if details:
        d["details"] = details
    return d


def gate(**kw: Any) -> GateSpec:
    return GateSpec(**kw)


MODELS = {
    "base": {"backend": "hf", "path": "/m/base", "model": None, "adapter": None, "model_id": "id-base", "role": "baseline", "candidate": None},
    "cand": {"backend": "hf", "path": "/m/base", "model": None, "adapter": "/m/lora", "model_id": "id-cand", "role": "candidate", "candidate": None},
}


def two_model_items(base_pass: list[bool], cand_pass: list[bool], scorer: str = "fmt", **kw: Any) -> list[RunItem]:
    out = []
    for i, (b, c) in enumerate(zip(base_pass, cand_pass)):
        out.append(item("base", f"x{i}", {scorer: ok(b)}, output=f"b{i}", **kw))
        out.append(item("cand", f"x{i}", {scorer: ok(c)}, output=f"c{i}", **kw))
    return out


def summary_for(items: list[RunItem], gates: list[dict[str, Any]], passed: bool, **extra: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "run_id": "20261123-000000-abcdef",
        "name": "crafted",
        "created": "2026-11-23T00:00:00",
        "config_path": "eval.yaml",
        "passed": passed,
        "exit_code": 0 if passed else 1,
        "models": MODELS,
        "baseline": "base",
        "candidates": ["cand"],
        "suites": [{"name": "s", "kind": "regression", "version": "v1", "n": len({i.sample_id for i in items}), "path": "suites/s"}],
        "metrics": [],
        "gates": gates,
        "calls": {"generations_made": 4, "generations_cached": 0, "judge_calls_made": 0, "judge_calls_cached": 0},
        "errors": {"generation": 0, "scorer": 0, "judge": 0},
        "warnings": [],
        "timing": {"wall_s": 1.5, "generate_s": 1.0, "score_s": 0.2},
        "judges": {},
    }
    s.update(extra)
    return s


def config_with(gates: list[dict[str, Any]]) -> EvalConfig:
    return EvalConfig.model_validate(
        {"models": {"base": {"backend": "hf", "path": "/m/base"}, "cand": {"backend": "hf", "path": "/m/base", "adapter": "/m/lora"}},
         "baseline": "base", "suites": ["s"], "gates": gates}
    )
