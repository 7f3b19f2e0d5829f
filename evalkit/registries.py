"""The names evalkit's config may use, declared once, at the bottom of the package.

Config validation (``backend:``, ``metric:``) and ``--help`` read these; the stages implement them:
``evalkit.models`` registers a factory for every declared backend kind (``register_backend``),
``evalkit.gates.metrics`` a function for every declared gate metric (``gates.core.metric``), and a
test checks that the declarations and the implementations name the same things. Keeping the names
here is what lets ``config`` validate a file without importing a stage (the layers point down only).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BackendKind", "BACKENDS", "GATE_METRICS", "backend_kind", "backend_names", "metric_names"]


@dataclass(frozen=True)
class BackendKind:
    """What config validation and the run stage may know of a backend kind without opening one.

    ``local_weights``: it loads a checkpoint folder (``path``; adapters; fingerprinted weights), else
    it calls an API model by name (``model``); ``key_env``: the API key's default environment
    variable; ``shares_base``: several specs on one base share one opened backend; ``wire``: the API
    protocol its servers speak (structured requests, judges), None for a model run in this process;
    ``batch_api``: the provider has a batch API (``batch:`` on a model entry).
    """

    name: str
    local_weights: bool
    key_env: str | None = None
    shares_base: bool = False
    wire: str | None = None
    batch_api: bool = False
    no_batch_why: str = ""  # said when batch: is set on a kind without a batch API
    # why it cannot score multiple-choice and perplexity suites (log-probabilities of given text); "" when it can
    no_loglikelihood_why: str = ""


BACKENDS: dict[str, BackendKind] = {k.name: k for k in (
    BackendKind("anthropic", local_weights=False, key_env="ANTHROPIC_API_KEY", wire="anthropic", batch_api=True,
                no_loglikelihood_why="the Anthropic API returns no log-probabilities"),
    BackendKind("hf", local_weights=True, shares_base=True),
    BackendKind("openai", local_weights=False, key_env="OPENAI_API_KEY", wire="openai", batch_api=True,
                no_loglikelihood_why="the OpenAI API gives log-probabilities of generated tokens only, not of a given prompt or choice"),
    BackendKind("vllm", local_weights=True, shares_base=True, wire="openai",  # its server speaks the OpenAI API
                no_batch_why="vLLM's server does not implement /v1/files + /v1/batches"),
)}

# eval.yaml's gate ``metric:`` values, one module each in evalkit/gates/metrics/
GATE_METRICS: tuple[str, ...] = (
    "adapter_applied", "error_rate", "human_unshippable", "mean", "must_pass", "pass_all_k", "pass_at_k", "pass_rate", "perplexity_ratio",
    "regressions", "template_match", "truncation_rate", "win_rate",
)


def backend_names() -> list[str]:
    """The backend kinds eval.yaml's ``backend:`` may name."""
    return sorted(BACKENDS)


def backend_kind(name: str) -> BackendKind:
    """The declared kind ``name``; KeyError when there is none."""
    return BACKENDS[name]


def metric_names() -> list[str]:
    """The gate metrics eval.yaml's ``metric:`` may name."""
    return sorted(GATE_METRICS)
