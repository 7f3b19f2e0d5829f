"""Gates: eval.yaml's ``gates:`` rules turned into ``GateResult``s with a reason and the items to blame.

``core`` holds the shared machinery (selection, "no decision", comparisons, the registry);
``metrics`` has one module per metric, each registering itself; ``verdict`` turns a run's items into
its verdict (``regate_run``), with ``sequential`` deciding gates early on anytime-valid bounds. What the rest of evalkit uses:
"""

from . import metrics  # noqa: F401  (registers every metric)
from .core import (
    all_passed,
    blocks,
    evaluate_gates,
    item_label,
    metric_names,
    pairwise_length_diffs,
    unknown_names,
)
from .verdict import regate_run

__all__ = [
    "all_passed", "blocks", "evaluate_gates", "item_label", "metric_names",
    "pairwise_length_diffs", "regate_run", "unknown_names",
]
