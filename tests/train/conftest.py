"""Fixtures for the training tests: the shared tiny demo-recipe base and small chat JSONL files
from the demo recipe's own task generators.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.demo_model import extraction_examples, general_examples


@pytest.fixture(scope="session")
def train_base(tiny_base: Path) -> Path:
    """The base every training test fine-tunes: the shared ``tiny_base`` (evalkit's demo recipe,
    character tokenizer, chat template with ``{% generation %}`` markers).
    """
    return Path(tiny_base)


def extraction(n: int, seed: int) -> list[dict]:
    return [{"messages": x["messages"]} for x in extraction_examples(n, seed=seed)]


def general(n: int, seed: int) -> list[dict]:
    return [{"messages": x["messages"]} for x in general_examples(n, seed=seed)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
