"""Line-by-line JSONL reading with errors that name FILE:LINE, and chat-sample parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from ..errors import DataError
from ..types import ROLES, Message, Sample, stable_hash


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, object)`` for every non-blank line; a bad line raises DataError."""
    from ._io import iter_raw_lines

    p = Path(path)
    for lineno, raw in iter_raw_lines(p):
        if not raw.strip():
            continue
        try:
            yield lineno, json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON: {e.msg} (column {e.colno})", where=p, line=lineno) from None


def parse_messages(raw: Any) -> tuple[Message, ...]:
    """Validate an OpenAI-style message list; raise ValueError with a short reason."""
    if not isinstance(raw, list) or not raw:
        raise ValueError("'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise ValueError(f"messages[{i}] must be an object with 'role' and 'content'")
        role = m.get("role")
        if role not in ROLES:
            raise ValueError(f"messages[{i}] has unknown role {role!r} (expected one of {', '.join(ROLES)})")
        content = m.get("content")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content must be a string")
        extra = set(m) - {"role", "content", "name"}
        if extra:
            raise ValueError(f"messages[{i}] has unknown keys {sorted(extra)}")
        out.append(Message(role=role, content=content))
    return tuple(out)


_SAMPLE_KEYS = {"id", "messages", "reference", "tags", "metadata", "schema", "must_pass"}


def parse_sample(obj: Any, *, default_id: str | None = None) -> Sample:
    """One suite line -> Sample. A line whose last message is the assistant turn gives the reference."""
    if not isinstance(obj, dict):
        raise ValueError("each line must be a JSON object")
    unknown = set(obj) - _SAMPLE_KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} (allowed: {', '.join(sorted(_SAMPLE_KEYS))})")
    messages = parse_messages(obj.get("messages"))
    reference = obj.get("reference")
    if reference is not None and not isinstance(reference, str):
        reference = json.dumps(reference, ensure_ascii=False)  # a structured reference is compared as JSON
    if messages[-1].role == "assistant":
        if reference is None:
            reference = messages[-1].content
        messages = messages[:-1]
        if not messages:
            raise ValueError("'messages' has only an assistant turn: nothing to prompt with")
    if messages[-1].role == "system":
        raise ValueError("the last prompt message is a system message: nothing for the model to answer")
    tags = obj.get("tags") or []
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError("'tags' must be a list of strings")
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValueError("'metadata' must be an object")
    sid = obj.get("id")
    if sid is None:
        sid = default_id or "h" + stable_hash([m.as_dict() for m in messages], 10)
    if not isinstance(sid, (str, int)):
        raise ValueError("'id' must be a string")
    schema = obj.get("schema")
    if schema is not None and not isinstance(schema, (dict, str)):
        raise ValueError("'schema' must be a JSON Schema object or a file name")
    must_pass = obj.get("must_pass", False)
    if not isinstance(must_pass, bool):
        raise ValueError("'must_pass' must be true or false")
    return Sample(
        id=str(sid),
        messages=messages,
        reference=reference,
        schema=schema,  # type: ignore[arg-type]  # a file name is resolved by the suite loader
        tags=tuple(tags),
        metadata=metadata,
        must_pass=must_pass,
    )


def read_samples(path: str | Path) -> list[Sample]:
    """All samples of a JSONL file; the first bad line raises DataError naming FILE:LINE."""
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        try:
            s = parse_sample(obj)
        except ValueError as e:
            raise DataError(str(e), where=path, line=lineno) from None
        if s.id in seen:
            raise DataError(f"duplicate id '{s.id}' (first on line {seen[s.id]})", where=path, line=lineno)
        seen[s.id] = lineno
        samples.append(s)
    if not samples:
        raise DataError("no samples (the file is empty)", where=path)
    return samples
