"""Training data: read chat JSONL, hold out a validation split, mix in general examples, hash files.

No heavy imports here: this module is what the CLI and tests use to check data before any model loads.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..data._io import file_sha256
from ..data.jsonl import iter_jsonl, parse_messages
from ..errors import DataError
from ..types import stable_hash

Conversation = tuple[dict[str, str], ...]


def read_conversations(path: str | Path, *, what: str = "training") -> list[Conversation]:
    """Every line's ``messages``; each must end with the assistant turn to learn. Errors name FILE:LINE."""
    out: list[Conversation] = []
    for lineno, obj in iter_jsonl(path):
        if not isinstance(obj, dict) or "messages" not in obj:
            raise DataError("each line must be an object with 'messages'", where=path, line=lineno)
        try:
            msgs = parse_messages(obj["messages"])
        except ValueError as e:
            raise DataError(str(e), where=path, line=lineno) from None
        if msgs[-1].role != "assistant":
            raise DataError(
                f"{what} examples must end with an assistant turn (the text to learn); this one ends with '{msgs[-1].role}'",
                where=path,
                line=lineno,
            )
        if not any(m.role == "user" for m in msgs):
            raise DataError(f"{what} example has no user turn", where=path, line=lineno)
        out.append(tuple(m.as_dict() for m in msgs))
    if not out:
        raise DataError(f"no {what} examples (the file is empty)", where=path)
    return out




def prompt_hash(conv: Sequence[dict[str, str]]) -> str:
    """The hash an eval Sample built from this line would have (``Sample.prompt_hash``): prompt turns only."""
    prompt = list(conv[:-1]) if conv and conv[-1]["role"] == "assistant" else list(conv)
    return stable_hash([{"role": m["role"], "content": m["content"]} for m in prompt])


@dataclass(frozen=True)
class TrainingData:
    """The examples a run trains and validates on, and where they came from."""

    train: tuple[Conversation, ...]  # task + mixed general examples, shuffled
    val: tuple[Conversation, ...]
    n_task: int  # task examples in ``train``
    n_general: int  # general (mixed-in) examples in ``train``
    sources: dict[str, Any]  # per file: path, sha256, examples read

    @property
    def general_fraction(self) -> float:
        return self.n_general / len(self.train) if self.train else 0.0


def general_count(n_task: int, fraction: float) -> int:
    """How many general examples make them ``fraction`` of the final set: n_g / (n_task + n_g) = fraction."""
    return round(n_task * fraction / (1.0 - fraction))


def prepare_data(
    train_path: str | Path,
    *,
    val_path: str | Path | None = None,
    val_fraction: float = 0.1,
    mix_path: str | Path | None = None,
    mix_fraction: float = 0.0,
    seed: int = 42,
    warn=None,
) -> TrainingData:
    """Read, split and mix. Deterministic for a given seed. ``warn(msg)`` receives data warnings."""
    rng = random.Random(seed)
    task = read_conversations(train_path)
    sources: dict[str, Any] = {"train": {"path": str(train_path), "sha256": file_sha256(train_path), "examples": len(task)}}
    if val_path is not None:
        val = read_conversations(val_path, what="validation")
        sources["val"] = {"path": str(val_path), "sha256": file_sha256(val_path), "examples": len(val)}
    elif val_fraction > 0:
        if len(task) < 2:
            raise DataError("too few examples to hold out a validation split (set val_fraction: 0 or give 'val')", where=train_path)
        order = list(range(len(task)))
        rng.shuffle(order)
        n_val = max(1, round(len(task) * val_fraction))
        val_idx = set(order[:n_val])
        val = [c for i, c in enumerate(task) if i in val_idx]
        task = [c for i, c in enumerate(task) if i not in val_idx]
        sources["val"] = {"split_from": "train", "fraction": val_fraction, "seed": seed, "examples": len(val)}
    else:
        val = []

    general: list[Conversation] = []
    if mix_path is not None and mix_fraction > 0:
        pool = read_conversations(mix_path, what="general")
        want = general_count(len(task), mix_fraction)
        if want > len(pool):
            if warn:
                warn(
                    f"mix: {mix_path} has {len(pool)} examples, {want} wanted for fraction {mix_fraction}: "
                    f"using all {len(pool)} (fraction {len(pool) / (len(task) + len(pool)):.3f})"
                )
            want = len(pool)
        general = rng.sample(pool, want)
        sources["mix"] = {
            "path": str(mix_path),
            "sha256": file_sha256(mix_path),
            "examples": len(pool),
            "used": len(general),
            "fraction": mix_fraction,
        }

    train = [*task, *general]
    rng.shuffle(train)
    val_prompts = {prompt_hash(c) for c in val}
    leaked = sum(1 for c in task if prompt_hash(c) in val_prompts)
    if leaked and warn:
        warn(f"{leaked} training example(s) have the same prompt as a validation example: validation loss will look better than it is")
    return TrainingData(
        train=tuple(train), val=tuple(val), n_task=len(task), n_general=len(general), sources=sources
    )
