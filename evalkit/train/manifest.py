"""candidate.json: what a trained adapter is, where it came from, and how training went.

The run stage reads it with ``load_candidate(adapter_dir)`` to record the candidate's provenance and
``items_in_training_data(candidate, samples)`` to warn when a suite item was trained on.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Iterable

from ..errors import DataError
from ..types import Sample

CANDIDATE_FILE = "candidate.json"
MANIFEST_VERSION = 1


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The current commit of the repository around ``cwd`` (with ``-dirty`` when there are changes), or None."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev or None


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def write_candidate(out_dir: Path, candidate: dict[str, Any]) -> Path:
    path = Path(out_dir) / CANDIDATE_FILE
    path.write_text(json.dumps(candidate, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
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
    return data


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
