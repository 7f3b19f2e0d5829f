"""The contract a gate metric is written against: what ``gates.metrics.*`` may import.

A metric is a function ``(gate: GateSpec, model: str, ctx: MetricContext) -> GateResult`` registered
with ``@metric("name")`` (and declared in ``evalkit.registries.GATE_METRICS``). Everything it needs from
the shared machinery in ``core`` -- selecting a gate's items, thresholds and their wording, paired
comparisons with the baseline or the last accepted run, "no decision" results, the noise floor --
is named here; ``core``'s own names stay private, and a test keeps metric modules on this surface.
"""

from __future__ import annotations

from .core import _all_validators_pass as all_validators_pass
from .core import _bound_text as bound_text
from .core import _broken as broken_reason
from .core import _calibrated_gate as calibrated_gate
from .core import _ci_straddles as ci_straddles
from .core import _ci_straddles_diff as ci_straddles_diff
from .core import _compare as compare_with_reference
from .core import _Ctx as MetricContext
from .core import _error_note as error_note
from .core import _fmt as format_number
from .core import _in_noise as noise_note
from .core import _names as name_list
from .core import _note_mde_mean as note_mde_mean
from .core import _note_mde_paired as note_mde_paired
from .core import _note_test as note_test
from .core import _result as gate_result
from .core import _scope as gate_scope
from .core import _score as score_of
from .core import _scored_passed as scored_passed
from .core import _select as select_items
from .core import _threshold as gate_threshold
from .core import _threshold_ok as threshold_met
from .core import _undecided as undecided
from .core import _value as value_of
from .core import item_label, metric, pairwise_length_diffs

__all__ = [
    "MetricContext",
    "all_validators_pass",
    "bound_text",
    "broken_reason",
    "calibrated_gate",
    "ci_straddles",
    "ci_straddles_diff",
    "compare_with_reference",
    "error_note",
    "format_number",
    "gate_result",
    "gate_scope",
    "gate_threshold",
    "item_label",
    "metric",
    "name_list",
    "noise_note",
    "note_mde_mean",
    "note_mde_paired",
    "note_test",
    "pairwise_length_diffs",
    "score_of",
    "scored_passed",
    "select_items",
    "threshold_met",
    "undecided",
    "value_of",
]
