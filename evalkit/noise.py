"""``evalkit noise``: how many items flip when the same model runs again under changes that should not
matter (batch size, request order, seed) — greedy outputs move with the batch and the hardware, and a
regression count means little until that floor is known.

The first run is the model's stored (or newly generated and stored) outputs, as ``evalkit run`` has
them; each further run regenerates every item past the cache, in another order with another batch
size and seed, and is scored by the same validators. Items whose verdict differs between any two runs
flipped. The result is stored as a run named ``noise:<config name>`` and shown beside later
comparison gates of that config on the measured model and suite.
"""

from __future__ import annotations

import dataclasses
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .store import NOISE_PREFIX, Store, latest_noise

__all__ = ["NoiseReport", "latest_noise", "measure_noise", "render"]


@dataclass
class NoiseReport:
    model: str
    runs: int
    perturbations: list[str]
    # suite -> scorer -> {"n": items compared, "flipped": [item ids], "rate": share flipped}
    suites: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    run_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def measure_noise(config_path: str | Path, *, model: str | None = None, runs: int = 2, store_path: str | Path | None = None,
                  progress: bool = True) -> NoiseReport:
    """Run ``model`` ``runs`` times (the stored outputs first) and count the items whose verdicts flip."""
    from .models import GenerationRequest, open_backend
    from .run import api_secrets, generate_all, plan_run

    if runs < 2:
        raise UserError(f"needs at least 2 runs to compare, got {runs}", where="--runs")
    with tempfile.TemporaryDirectory(prefix="evalkit-noise-") as scratch:  # plan_run checks an output folder; noise writes none
        plan = plan_run(config_path, Path(scratch) / "out", store_path=store_path)
    name = model or plan.baseline or plan.specs[0].name
    spec = next((s for s in plan.specs if s.name == name), None)
    if spec is None:
        raise UserError(f"no model '{name}' in {config_path} (models: {', '.join(s.name for s in plan.specs)})", where="--model")
    store = Store(plan.store_location)
    store.secrets = tuple(api_secrets([spec]))
    try:
        first, *_ = generate_all(store, [spec], plan.suites, progress=progress, secrets=store.secrets)
        from .run import generation_key

        outputs = [{(suite.name, s.id): first[generation_key(spec, s)] for suite in plan.suites for s in suite.samples}]
        perturbations = ["the stored run"]
        rng = random.Random(0)
        from ._util.hf_bars import library_progress_bars

        with library_progress_bars(progress):
            backend = open_backend([spec])
        try:
            batch = getattr(backend, "batch_size", None) or 8  # the size the model runs at (auto: the one it found)
            batch = int(batch) if isinstance(batch, int) else 8
            for r in range(1, runs):
                size = max(1, batch // 2) if r % 2 else batch * 2
                perturbed = dataclasses.replace(spec, options={**dict(spec.options), "batch_size": size},
                                                generation=dataclasses.replace(spec.generation, seed=spec.generation.seed + 1000 * r))
                keys = [(suite.name, s) for suite in plan.suites for s in suite.samples]
                rng.shuffle(keys)
                reqs = [GenerationRequest(key=f"{sn}/{s.id}", model=perturbed, messages=s.messages) for sn, s in keys]
                outs = backend.generate(reqs)
                outputs.append({(sn, s.id): c for (sn, s), c in zip(keys, outs)})
                perturbations.append(f"batch size {size}, shuffled order, seed +{1000 * r}")
        finally:
            backend.close()
        report = NoiseReport(name, runs, perturbations)
        for suite in plan.suites:
            per: dict[str, dict[str, Any]] = {}
            for scorer, check, only_tags in plan.validators[suite.name]:
                flipped, n = [], 0
                for s in suite.samples:
                    if only_tags and not only_tags.intersection(s.tags):
                        continue
                    verdicts = set()
                    for run in outputs:
                        c = run[(suite.name, s.id)]
                        sc = check(s, c) if c.error is None else None
                        verdicts.add(None if sc is None or sc.error else sc.passed)
                    if None in verdicts:
                        continue  # a failed generation or scorer: not evidence of a flip
                    n += 1
                    if len(verdicts) > 1:
                        flipped.append(s.id)
                per[scorer] = {"n": n, "flipped": flipped, "rate": (len(flipped) / n) if n else None}
            report.suites[suite.name] = per
        report.run_id = _store(store, plan, report)
        return report
    finally:
        store.close()


def _store(store: Store, plan: Any, report: NoiseReport) -> str:
    run_id = store.begin_run(name=NOISE_PREFIX + plan.name, config_path=str(plan.config_path), config={"noise": {"model": report.model, "runs": report.runs}},
                             out_dir=None)
    store.finish_run(run_id, {"run_id": run_id, "name": NOISE_PREFIX + plan.name, "passed": True, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "noise": {k: v for k, v in report.as_json().items() if k != "run_id"}}, "passed")
    return run_id


def render(report: NoiseReport) -> str:
    lines = [f"{report.model}: {report.runs} runs ({'; '.join(report.perturbations)}); stored as run {report.run_id}"]
    rows = [("suite", "scorer", "items", "flipped", "rate")]
    for suite, per in report.suites.items():
        for scorer, v in per.items():
            rows.append((suite, scorer, str(v["n"]), str(len(v["flipped"])), "–" if v["rate"] is None else f"{v['rate']:.3f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    for suite, per in report.suites.items():
        for scorer, v in per.items():
            if v["flipped"]:
                lines.append(f"flipped on {suite} / {scorer}: {', '.join(v['flipped'][:20])}" + (f" and {len(v['flipped']) - 20} more" if len(v["flipped"]) > 20 else ""))
    return "\n".join(lines)
