"""Review stage: blinded side-by-side sessions over a run's outputs, a local review page, unblinding.

What it offers:
- ``create_session(store, run, model_a=, model_b=, n=, seed=, stratify=, suites=, prefer_different=)``
- ``ReviewServer(store, session_id, port=, reviewer=)``: the page (``start()`` / ``serve_forever()``)
- ``unblind(store, session_id, max_unshippable=2, per=20)`` -> result dict (stored), ``render_markdown``
- ``export_csv`` / ``import_csv``: the same session as a spreadsheet, still blinded
- for reports and gates: ``review_summary(store, run_id)``, ``unshippable_counts(store, run_id)``,
  ``unshippable_details``, ``human_unshippable_gate(store, run_id, name=, model=, max_count=, per=20)``

The A/B key lives in the store only (table ``review_pairs``); pages and exports never carry it.
"""

from .csvio import export_csv, import_csv
from .server import ReviewServer
from .sessions import (
    BlindPair,
    NewSession,
    ReviewSession,
    blind_pairs,
    create_session,
    get_session,
    list_sessions,
    reviewer_verdicts,
    session_pairs,
)
from .unblind import (
    cohen_kappa,
    human_unshippable_gate,
    render_markdown,
    review_summary,
    stored_results,
    unblind,
    unshippable_counts,
    unshippable_details,
    win_rate,
)

__all__ = [
    "BlindPair",
    "NewSession",
    "ReviewServer",
    "ReviewSession",
    "blind_pairs",
    "cohen_kappa",
    "create_session",
    "export_csv",
    "get_session",
    "human_unshippable_gate",
    "import_csv",
    "list_sessions",
    "render_markdown",
    "review_summary",
    "reviewer_verdicts",
    "session_pairs",
    "stored_results",
    "unblind",
    "unshippable_counts",
    "unshippable_details",
    "win_rate",
]
