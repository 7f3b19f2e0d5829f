"""Judge scores calibrated by human labels: the prediction-powered mean (PPI++) of a judge scorer.

A team labels some items by hand (a CSV: ``model,sample_id,value``, optionally ``suite``); the judge
scored every item. Per model, the prediction-powered estimate (``stats.ppi_mean``) combines the two
into an estimate of the mean *human* label that is unbiased whatever the judge's bias, with a CI
narrower than the labels alone give whenever the judge tracks the humans. ``evalkit calibrate``
prints it beside the judge's own mean and the human-only mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from . import stats
from .errors import DataError, UserError
from .record import RunItem
from .scoring.labels import MIN_LABELS, Label, read_labels

__all__ = ["MIN_LABELS", "Calibrated", "Label", "calibrate", "read_labels", "render"]



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


def session_labels(store: Any, session_id: str, run_id: str) -> tuple[str, str, list[Label]]:
    """A blinded review's verdicts as win labels for its model A against its model B: 1 when the
    reviewers preferred A, 0 when B, 0.5 for a tie or both bad; several reviewers of a pair averaged.
    Returns (model A, model B, labels); pairs nobody judged are left out.
    """
    from .review.sessions import get_session, reviewer_verdicts, session_pairs

    session = get_session(store, session_id)
    if session.run_id != run_id:
        raise UserError(f"review session {session_id} is of run {session.run_id}, not {run_id}", where="--session")
    pairs = {p.token: p for p in session_pairs(store, session_id)}
    votes: dict[str, list[float]] = {}
    for v in reviewer_verdicts(store, session_id):
        p = pairs.get(v.token)
        if p is None or v.verdict is None:
            continue
        if v.verdict in ("tie", "both_bad"):
            value = 0.5
        else:
            winner = p.left_model if v.verdict == "left" else ("b" if p.left_model == "a" else "a")
            value = 1.0 if winner == "a" else 0.0
        votes.setdefault(v.token, []).append(value)
    labels = [Label(session.model_a, pairs[t].sample_id, pairs[t].suite, sum(vs) / len(vs), 0) for t, vs in sorted(votes.items())]
    return session.model_a, session.model_b, labels


def calibrate(items: Sequence[RunItem], summary: dict[str, Any], scorer: str, labels: Sequence[Label], labels_path: str | Path,
              *, confidence: float = 0.95, vs: str | None = None) -> list[Calibrated]:
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
                  if (sc := it.scores.get(scorer)) is not None and sc.error is None and sc.value is not None
                  and (vs is None or sc.details.get("vs") == vs)}
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
