"""candidate.json: what a trained adapter is, where it came from, and how training went.

The run stage reads it with ``load_candidate(adapter_dir)`` to record the candidate's provenance and
``items_in_training_data(candidate, samples)`` to warn when a suite item was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._util.provenance import git_state, package_versions
from ..errors import DataError
from ..types import Sample

CANDIDATE_FILE = "candidate.json"
MANIFEST_VERSION = 1


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")


class BaseInfo(_Part):
    path: str
    hash: str = ""
    quantized_for_training: str | None = None
    architectures: list[str] = Field(default_factory=list)


class DataInfo(_Part):
    """The files trained on, their hashes and sizes, and the prompt hashes of every training example
    (the run stage warns when a suite item is among them).
    """

    train_path: str | None = None
    mix_path: str | None = None
    n_train: int = 0
    n_val: int = 0
    train_prompt_hashes: list[str] = Field(default_factory=list)


class TrainMetrics(_Part):
    train_loss: list[dict[str, Any]] = Field(default_factory=list)
    val_loss: list[dict[str, Any]] = Field(default_factory=list)
    final_train_loss: float | None = None
    best_val_loss: float | None = None
    best_step: int | None = None
    restored_best_from_step: int | None = None
    stopped_early: bool = False
    overfitting: bool = False
    steps: int = 0
    wall_time_s: float | None = None


class CandidateManifest(_Part):
    """candidate.json: what a trained adapter (or merged checkpoint) is and how it came to be.

    ``manifest_version`` counts incompatible changes; unknown keys are kept (a newer evalkit's
    manifest still loads).
    """

    kind: Literal["evalkit.candidate"] = "evalkit.candidate"
    manifest_version: int = MANIFEST_VERSION
    name: str = ""
    created_at: str = ""
    adapter: dict[str, Any] = Field(default_factory=dict)
    base: BaseInfo | None = None
    data: DataInfo = Field(default_factory=DataInfo)
    config: dict[str, Any] = Field(default_factory=dict)
    chat_template_hash: str | None = None  # the template training formatted the examples with (models.weights.template_text_hash)
    metrics: TrainMetrics = Field(default_factory=TrainMetrics)
    device: str | None = None
    # what decides the adapter's bits beyond the config and data: the trainer's numerics revision
    # (2: the adapter trains in the config's dtype, not TRL's bf16) and whether the CPU kernels
    # were pinned (evalkit._util.repro): a candidate is reused only when both match
    numerics: dict[str, Any] = Field(default_factory=dict)
    evalkit_version: str = ""
    git_commit: str | None = None
    libraries: dict[str, str] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The current commit of the repository around ``cwd`` (with ``-dirty`` when there are changes), or None."""
    commit, dirty = git_state(Path(cwd or ".").resolve())
    return f"{commit}-dirty" if commit and dirty else commit


def library_versions() -> dict[str, str]:
    return {k: v for k, v in package_versions(("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate")).items() if v}


def write_candidate(out_dir: Path, candidate: CandidateManifest | dict[str, Any]) -> Path:
    """Write candidate.json (checked against :class:`CandidateManifest` first)."""
    from .._util.fs import atomic_writer

    manifest = candidate if isinstance(candidate, CandidateManifest) else CandidateManifest.model_validate(candidate)
    path = Path(out_dir) / CANDIDATE_FILE
    with atomic_writer(path) as fh:
        fh.write(json.dumps(manifest.model_dump(mode="json"), indent=2, ensure_ascii=False, default=str) + "\n")
    return path


def load_candidate(adapter_dir: str | Path) -> dict[str, Any] | None:
    """The candidate.json beside an adapter (or merged checkpoint), or None when there is none."""
    path = Path(adapter_dir) / CANDIDATE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON: {e.msg}", where=path, line=e.lineno) from None
    if not isinstance(data, dict) or data.get("kind") != "evalkit.candidate":
        raise DataError("not an evalkit candidate manifest", where=path)
    try:
        manifest = CandidateManifest.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise DataError(f"candidate manifest: {'.'.join(str(x) for x in err['loc'])}: {err['msg']}", where=path) from None
    return manifest.model_dump(mode="json")


def candidate_record(candidate: dict[str, Any]) -> dict[str, Any]:
    """The manifest without its bulky per-example prompt hashes: what a run summary or report embeds."""
    out = dict(candidate)
    data = dict(out.get("data") or {})
    hashes = data.pop("train_prompt_hashes", None)
    if hashes is not None:
        data["train_prompt_hashes_count"] = len(hashes)
    out["data"] = data
    return out


def items_in_training_data(candidate: dict[str, Any], samples: Iterable[Sample]) -> list[str]:
    """Ids of samples whose prompt (all turns before the answer) is exactly a training example's prompt."""
    trained = set(candidate.get("data", {}).get("train_prompt_hashes", ()))
    return [s.id for s in samples if s.prompt_hash() in trained]
