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


_SAMPLE_KEYS = {"id", "messages", "reference", "tags", "metadata", "schema", "must_pass", "prompt", "choices", "answer", "text"}


def _loglikelihood_fields(obj: dict[str, Any]) -> tuple[str | None, tuple[str, ...], int | None, str | None]:
    """A multiple-choice item's ``prompt``, ``choices`` and ``answer``, or a perplexity item's ``text``,
    checked; (None, (), None, None) for a generation item.
    """
    if "text" in obj:
        text = obj["text"]
        if not isinstance(text, str) or not text.strip():
            raise ValueError("'text' (a perplexity item) must be a non-empty string")
        other = sorted(k for k in ("messages", "prompt", "choices", "answer", "reference", "schema") if k in obj)
        if other:
            raise ValueError(f"a perplexity item has 'text' only, not {other}")
        return None, (), None, text
    if "choices" not in obj:
        for key, why in (("answer", "'answer' needs 'choices' (a multiple-choice item)"),
                         ("prompt", "'prompt' (raw text) is a multiple-choice item's context: add 'choices', or use 'messages' for a generation item")):
            if key in obj:
                raise ValueError(why)
        return None, (), None, None
    choices = obj["choices"]
    if not isinstance(choices, list) or not choices:
        raise ValueError("'choices' must be a non-empty list of strings")
    for i, c in enumerate(choices):
        if not isinstance(c, str) or not c:
            raise ValueError(f"choices[{i}] must be a non-empty string (a continuation, appended to the prompt exactly as written)")
    answer = obj.get("answer")
    if answer is None:
        raise ValueError("a multiple-choice item needs 'answer': the index of the right choice")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise ValueError(f"'answer' must be an index into 'choices' (0..{len(choices) - 1}), got {answer!r}")
    prompt = obj.get("prompt")
    if ("prompt" in obj) == ("messages" in obj):
        raise ValueError("a multiple-choice item needs one context: 'prompt' (raw text) or 'messages' (the chat template), not "
                         + ("both" if "prompt" in obj else "neither"))
    if "prompt" in obj and (not isinstance(prompt, str) or not prompt):
        raise ValueError("'prompt' must be a non-empty string")
    for key in ("reference", "schema"):
        if key in obj:
            raise ValueError(f"a multiple-choice item has no '{key}': 'answer' says which choice is right")
    return prompt, tuple(choices), answer, None


def parse_sample(obj: Any, *, default_id: str | None = None) -> Sample:
    """One suite line -> Sample. A line whose last message is the assistant turn gives the reference."""
    if not isinstance(obj, dict):
        raise ValueError("each line must be a JSON object")
    unknown = set(obj) - _SAMPLE_KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} (allowed: {', '.join(sorted(_SAMPLE_KEYS))})")
    prompt, choices, answer, text = _loglikelihood_fields(obj)
    if prompt is not None or text is not None:
        messages: tuple[Message, ...] = ()
    else:
        messages = parse_messages(obj.get("messages"))
    if choices and messages and messages[-1].role == "assistant":
        raise ValueError("a multiple-choice item's 'messages' end with the turn the model answers (user), not an assistant turn: "
                         "the choices are the answer")
    reference = obj.get("reference")
    if reference is not None and not isinstance(reference, str):
        reference = json.dumps(reference, ensure_ascii=False)  # a structured reference is compared as JSON
    if messages and messages[-1].role == "assistant":
        if reference is None:
            reference = messages[-1].content
        messages = messages[:-1]
        if not messages:
            raise ValueError("'messages' has only an assistant turn: nothing to prompt with")
    if messages and messages[-1].role == "system":
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
        sid = default_id or "h" + stable_hash([m.as_dict() for m in messages] if messages else [prompt, list(choices), text], 10)
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
        prompt=prompt,
        choices=choices,
        answer=answer,
        text=text,
    )


def _item_kind(s: Sample) -> str:
    return "perplexity" if s.text is not None else ("multiple-choice" if s.choices else "generation")


def read_samples(path: str | Path, *, suite_kind: str | None = None) -> list[Sample]:
    """All samples of a JSONL file; the first bad line raises DataError naming FILE:LINE.

    With ``suite_kind``, a suite's rules too: a ``perplexity`` suite holds ``text`` items only, any
    other kind none; one suite does not mix multiple-choice and generation items.
    """
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    first_kind: tuple[str, int] | None = None
    for lineno, obj in iter_jsonl(path):
        try:
            s = parse_sample(obj)
        except ValueError as e:
            raise DataError(str(e), where=path, line=lineno) from None
        if suite_kind is not None:
            kind = _item_kind(s)
            if suite_kind == "perplexity" and kind != "perplexity":
                raise DataError(f"a perplexity suite's items are {{\"id\", \"text\"}}; this is a {kind} item", where=path, line=lineno)
            if suite_kind != "perplexity" and kind == "perplexity":
                raise DataError(f"a 'text' item belongs in a suite with kind: perplexity (this suite is kind: {suite_kind})", where=path, line=lineno)
            if first_kind is None:
                first_kind = (kind, lineno)
            elif first_kind[0] != kind:
                raise DataError(f"a {kind} item in a suite of {first_kind[0]} items (line {first_kind[1]}): put them in separate suites",
                                where=path, line=lineno)
        if s.id in seen:
            raise DataError(f"duplicate id '{s.id}' (first on line {seen[s.id]})", where=path, line=lineno)
        seen[s.id] = lineno
        samples.append(s)
    if not samples:
        raise DataError("no samples (the file is empty)", where=path)
    return samples
