"""Judge scores calibrated by human labels: the prediction-powered mean (PPI++) of a judge scorer.

A team labels some items by hand (a CSV: ``model,sample_id,value``, optionally ``suite``); the judge
scored every item. Per model, the prediction-powered estimate (``stats.ppi_mean``) combines the two
into an estimate of the mean *human* label that is unbiased whatever the judge's bias, with a CI
narrower than the labels alone give whenever the judge tracks the humans. ``evalkit calibrate``
prints it beside the judge's own mean and the human-only mean.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from . import stats
from .errors import DataError, UserError
from .record import RunItem

MIN_LABELS = 10  # per model: fewer cannot estimate the judge-human covariance the power tuning needs
_COLUMNS = ("model", "sample_id", "value")


@dataclass(frozen=True)
class Label:
    model: str
    sample_id: str
    suite: str | None
    value: float
    line: int


@dataclass(frozen=True)
class Calibrated:
    """One model's judge scorer, calibrated: what ``evalkit calibrate --json`` prints per model."""

    model: str
    scorer: str
    judge_mean: float
    ppi: stats.PPIEstimate
    human: stats.Interval
    n_labeled: int
    n_unlabeled: int
    unscored_labels: int  # labels on items the judge could not score: left out (PPI needs both)

    def as_json(self) -> dict[str, Any]:
        return {
            "judge_mean": self.judge_mean, "ppi_mean": self.ppi.mean, "ci": [self.ppi.ci.low, self.ppi.ci.high],
            "human_mean": self.human.estimate, "human_ci": [self.human.low, self.human.high],
            "n_labeled": self.n_labeled, "n_unlabeled": self.n_unlabeled, "lambda": self.ppi.lam,
            **({"unscored_labels": self.unscored_labels} if self.unscored_labels else {}),
        }


def read_labels(path: str | Path) -> list[Label]:
    """The labels CSV, checked line by line: a bad line raises DataError naming FILE:LINE."""
    from .data._io import iter_raw_lines

    p = Path(path)
    if not p.is_file():
        raise DataError("labels file not found", where=p)
    lines = [(n, t.lstrip("\ufeff") if n == 1 else t) for n, t in iter_raw_lines(p)]  # strict UTF-8; a spreadsheet's BOM is fine
    header = next(csv.reader(io.StringIO(lines[0][1])), None) if lines else None
    if header is None:
        raise DataError("the labels file is empty (expected a header: model,sample_id,value)", where=p)
    cols = [h.strip() for h in header]
    missing = [c for c in _COLUMNS if c not in cols]
    unknown = [c for c in cols if c not in (*_COLUMNS, "suite")]
    if missing or unknown:
        raise DataError(f"header must name model, sample_id, value (and optionally suite); got {','.join(cols)}", where=p, line=1)
    at = {c: cols.index(c) for c in cols}
    out: list[Label] = []
    seen: dict[tuple[str, str | None, str], int] = {}
    for lineno, text in lines[1:]:
        row = next(csv.reader(io.StringIO(text)), [])
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(cols):
            raise DataError(f"{len(row)} fields, the header has {len(cols)}", where=p, line=lineno)
        raw = row[at["value"]].strip()
        try:
            value = float(raw)
        except ValueError:
            raise DataError(f"value {raw!r} is not a number", where=p, line=lineno) from None
        if not math.isfinite(value):
            raise DataError(f"value {raw!r} is not a finite number", where=p, line=lineno)
        label = Label(row[at["model"]].strip(), row[at["sample_id"]].strip(), row[at["suite"]].strip() if "suite" in at else None, value, lineno)
        key = (label.model, label.suite, label.sample_id)
        if key in seen:
            raise DataError(f"a second label for model '{label.model}', item '{label.sample_id}' (first on line {seen[key]})", where=p, line=lineno)
        seen[key] = lineno
        out.append(label)
    if not out:
        raise DataError("no labels (only a header)", where=p)
    return out


def calibrate(items: Sequence[RunItem], summary: dict[str, Any], scorer: str, labels: Sequence[Label], labels_path: str | Path,
              *, confidence: float = 0.95) -> list[Calibrated]:
    """Per model with labels: the judge mean, the PPI++ mean and CI, and the human-only mean and CI.

    Every label must name a model and an item of the run (and a value on the rubric's scale); each
    model needs at least :data:`MIN_LABELS` labels on items its judge scored. Errors name the line.
    """
    judged = {it.model for it in items if scorer in it.scores}
    if not judged:
        known = sorted({n for it in items for n, sc in it.scores.items() if sc.from_judge})
        raise UserError(f"--scorer: run has no judge scorer '{scorer}' (judge scorers: {', '.join(known) or 'none'})")
    models = sorted({it.model for it in items})
    by_item: dict[tuple[str, str], list[RunItem]] = {}
    for it in items:
        by_item.setdefault((it.model, it.sample_id), []).append(it)
    from .scoring.judge_rubric import scorer_scale

    scale = scorer_scale(summary.get("judges") or {}, scorer)
    labelled: dict[str, dict[tuple[str, str], float]] = {}
    for lab in labels:
        if lab.model not in models:
            raise DataError(f"model '{lab.model}' is not in this run (models: {', '.join(models)})", where=labels_path, line=lab.line)
        matches = [it for it in by_item.get((lab.model, lab.sample_id), []) if lab.suite in (None, it.suite)]
        if not matches:
            raise DataError(f"model '{lab.model}' has no item '{lab.sample_id}'" + (f" in suite '{lab.suite}'" if lab.suite else "") + " in this run",
                            where=labels_path, line=lab.line)
        if len(matches) > 1:
            raise DataError(f"item '{lab.sample_id}' is in several suites ({', '.join(sorted(m.suite for m in matches))}): add a suite column",
                            where=labels_path, line=lab.line)
        if scale is not None and not scale[0] <= lab.value <= scale[1]:
            raise DataError(f"value {lab.value:g} is outside the scale of {scorer} [{scale[0]:g}, {scale[1]:g}]", where=labels_path, line=lab.line)
        labelled.setdefault(lab.model, {})[(matches[0].suite, lab.sample_id)] = lab.value
    out: list[Calibrated] = []
    for model in sorted(labelled):
        scored = {(it.suite, it.sample_id): sc.value for it in items if it.model == model
                  if (sc := it.scores.get(scorer)) is not None and sc.error is None and sc.value is not None}
        labs = labelled[model]
        pairs = [(labs[k], v) for k, v in scored.items() if k in labs]
        unscored = sum(1 for k in labs if k not in scored)
        if len(pairs) < MIN_LABELS:
            raise DataError(f"model '{model}' has {len(pairs)} labels on items its judge scored; calibration needs at least {MIN_LABELS}"
                            + (f" ({unscored} more are on items the judge could not score)" if unscored else ""), where=labels_path)
        unlabeled = [v for k, v in scored.items() if k not in labs]
        y = [p[0] for p in pairs]
        est = stats.ppi_mean(y, [p[1] for p in pairs], unlabeled, confidence=confidence)
        out.append(Calibrated(model, scorer, sum(scored.values()) / len(scored), est, stats.classical_mean_ci(y, confidence),
                              len(pairs), len(unlabeled), unscored))
    return out


def render(rows: Sequence[Calibrated], scorer: str) -> str:
    """The terminal table: one line per model."""
    conf = int(round((rows[0].ppi.ci.confidence if rows else 0.95) * 100))
    lines = [f"{scorer}: the judge's mean, and the mean human label estimated from {MIN_LABELS}+ labels with the judge's scores (PPI++)",
             f"{'model':<16} {'judge':>7} {'calibrated':>11} {conf}% CI{'':<10} {'humans only':>12} {conf}% CI{'':<10} labeled  unlabeled"]
    for r in rows:
        lines.append(f"{r.model[:16]:<16} {r.judge_mean:>7.3f} {r.ppi.mean:>11.3f} [{r.ppi.ci.low:.3f}, {r.ppi.ci.high:.3f}]  "
                     f"{r.human.estimate:>10.3f} [{r.human.low:.3f}, {r.human.high:.3f}]  {r.n_labeled:>7} {r.n_unlabeled:>10}")
        if r.unscored_labels:
            lines.append(f"  {r.model}: {r.unscored_labels} labels on items the judge could not score were left out")
    return "\n".join(lines)
