"""Helpers for the data-pipeline tests: write JSONL files line by line, exactly as given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def chat(user: str, assistant: str | None = "ok", system: str | None = None, **extra: Any) -> dict:
    msgs = []
    if system is not None:
        msgs.append({"role": "system", "content": system})
    msgs.append({"role": "user", "content": user})
    if assistant is not None:
        msgs.append({"role": "assistant", "content": assistant})
    return {**extra, "messages": msgs}


def write_lines(path: Path, lines: list[Any]) -> Path:
    """Objects are dumped as JSON; strings are written verbatim (to plant broken lines)."""
    with path.open("w", encoding="utf-8") as fh:
        for x in lines:
            fh.write((x if isinstance(x, str) else json.dumps(x)) + "\n")
    return path


@pytest.fixture
def jsonl(tmp_path: Path):
    def make(name: str, lines: list[Any]) -> Path:
        return write_lines(tmp_path / name, lines)

    return make
