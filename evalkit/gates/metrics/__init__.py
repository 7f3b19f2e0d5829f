"""The gate metrics, one module each; importing this package registers them all (``core.metric``)."""

from . import (
    adapter_applied,
    error_rate,
    human_unshippable,
    mean,
    must_pass,
    pass_at_k,
    pass_rate,
    perplexity_ratio,
    regressions,
    template_match,
    truncation_rate,
    win_rate,
)

__all__ = ["adapter_applied", "error_rate", "human_unshippable", "mean", "must_pass", "pass_at_k", "pass_rate", "perplexity_ratio", "regressions", "template_match", "truncation_rate", "win_rate"]
