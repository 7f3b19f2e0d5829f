"""A run's verdict: its gates evaluated on its items (``regate_run``), early_stop's sequential
decisions applied when the run stopped early. The one way a run gets its verdict.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import GateSpec
from ..record import GateRecord, RunItem, RunSummary
from ..scoring.judge_rubric import scorer_scale
from . import sequential
from .core import all_passed, candidate_verdicts, evaluate_gates

if TYPE_CHECKING:
    from ..store import Store


def regate_run(gates: list[GateSpec], record: RunSummary, items: list[RunItem], *, store: Store | None) -> RunSummary:
    """``record`` with its gates evaluated (again) on ``items``: verdict, exit code and results.

    The one way a run gets its verdict, at the end of ``evalkit run`` and in ``evalkit report
    --regate``: the same models block, baseline, candidates and judge statistics (the judge-noise
    band) either way, so a re-gated run decides as the run did unless the data changed (blinded
    review results, a newer accepted run).
    """
    results = evaluate_gates(
        gates, items=items, models={n: m.model_dump() for n, m in record.models.items()}, baseline=record.baseline,
        candidates=list(record.candidates), store=store, run_name=record.name, run_id=record.run_id, judge_stats=record.judges,
    )
    if record.early_stop is not None:  # early_stop: tested gates are decided by their anytime-valid test
        es = record.early_stop
        judges = {n: j.model_dump() for n, j in record.judges.items()}
        statuses = sequential.evaluate(
            gates, items, seed=es.seed, block_ends=es.block_ends, totals={(s, t): n for s, t, n in es.scopes},
            complete=es.items_used >= es.items_total, candidates=list(record.candidates), baseline=record.baseline,
            scale_of=lambda scorer: scorer_scale(judges, scorer), golden_total=es.golden,
        )
        results = sequential.apply(results, gates, statuses)
    # must-pass results lead (a golden item failing is the first thing a reader should see)
    results = sorted(results, key=lambda r: r.metric != "must_pass")
    passed = all_passed(results)  # an undecided gate blocks unless it says on_no_decision: warn/pass
    return record.model_copy(update={
        "gates": [GateRecord.model_validate(r.as_dict()) for r in results], "passed": passed, "exit_code": 0 if passed else 1,
        "candidate_verdicts": candidate_verdicts(results, record.candidates),
    })
