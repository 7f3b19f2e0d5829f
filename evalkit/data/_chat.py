"""The chat JSONL format of training and eval files, checked one line at a time.

A line is ``{"messages": [{"role", "content"}...], "id"?, "tags"?, "metadata"?}``. Roles are
system (first only), then user and assistant alternating. A training example ends with the assistant
turn it teaches; an eval item may end with the user turn the model answers.
"""

from __future__ import annotations

import re
from typing import Any

from ..types import ROLES

ALLOWED_KEYS = frozenset({"id", "messages", "tags", "metadata", "reference", "schema", "must_pass"})
MESSAGE_KEYS = frozenset({"role", "content", "name"})


_ROLE_CHAR = {"system": "s", "user": "u", "assistant": "a"}
_TRAIN_ORDER = re.compile(r"s?(?:ua)+")
_EVAL_ORDER = re.compile(r"s?u(?:au)*a?")


def _looks_fine(obj: Any, require_assistant: bool) -> bool:
    """Fast path for the common case, a well-formed line (True means: no problems at all)."""
    if type(obj) is not dict or not obj.keys() <= ALLOWED_KEYS:
        return False
    msgs = obj.get("messages")
    if type(msgs) is not list or not msgs:
        return False
    chars = []
    for m in msgs:
        if type(m) is not dict or not m.keys() <= MESSAGE_KEYS:
            return False
        c = _ROLE_CHAR.get(m.get("role"))  # type: ignore[arg-type]
        content = m.get("content")
        if c is None or type(content) is not str or not content.strip():
            return False
        chars.append(c)
    if not (_TRAIN_ORDER if require_assistant else _EVAL_ORDER).fullmatch("".join(chars)):
        return False
    sid = obj.get("id", "x")
    if not ((type(sid) is str and sid) or type(sid) is int):
        return False
    tags = obj.get("tags")
    if tags is not None and not (type(tags) is list and all(type(t) is str for t in tags)):
        return False
    if "must_pass" in obj and type(obj["must_pass"]) is not bool:
        return False
    return "metadata" not in obj or type(obj["metadata"]) is dict


def check_example(obj: Any, *, require_assistant: bool = True) -> list[tuple[str, str]]:
    """Every problem of one parsed line, as ``(kind, message)``; an empty list means the line is good."""
    if _looks_fine(obj, require_assistant):
        return []
    if not isinstance(obj, dict):
        return [("not_object", f"each line must be a JSON object, got {type(obj).__name__}")]
    out: list[tuple[str, str]] = []
    unknown = set(obj) - ALLOWED_KEYS
    if unknown:
        out.append(("unknown_key", f"unknown keys {sorted(unknown)} (allowed: {', '.join(sorted(ALLOWED_KEYS))})"))
    if "id" in obj and (not isinstance(obj["id"], (str, int)) or isinstance(obj["id"], bool) or obj["id"] == ""):
        out.append(("bad_id", "'id' must be a non-empty string or an integer"))
    tags = obj.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        out.append(("bad_tags", "'tags' must be a list of strings"))
    if "metadata" in obj and not isinstance(obj["metadata"], dict):
        out.append(("bad_metadata", "'metadata' must be an object"))
    if "must_pass" in obj and not isinstance(obj["must_pass"], bool):
        out.append(("bad_must_pass", "'must_pass' must be true or false"))
    if "messages" not in obj:
        out.append(("missing_messages", "missing 'messages'"))
        return out
    msgs = obj["messages"]
    if not isinstance(msgs, list):
        out.append(("bad_messages", f"'messages' must be a list, got {type(msgs).__name__}"))
        return out
    if not msgs:
        out.append(("empty_messages", "'messages' is empty"))
        return out
    roles: list[str | None] = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            out.append(("bad_message", f"messages[{i}] must be an object with 'role' and 'content'"))
            roles.append(None)
            continue
        extra = set(m) - MESSAGE_KEYS
        if extra:
            out.append(("unknown_key", f"messages[{i}] has unknown keys {sorted(extra)}"))
        role = m.get("role")
        if "role" not in m:
            out.append(("missing_role", f"messages[{i}] has no 'role'"))
            roles.append(None)
        elif role not in ROLES:
            out.append(("unknown_role", f"messages[{i}] has unknown role {role!r} (expected one of {', '.join(ROLES)})"))
            roles.append(None)
        else:
            roles.append(role)
        if "content" not in m:
            out.append(("missing_content", f"messages[{i}] has no 'content'"))
        elif not isinstance(m["content"], str):
            out.append(("bad_content", f"messages[{i}].content must be a string, got {type(m['content']).__name__}"))
        elif not m["content"].strip():
            out.append(("empty_content", f"messages[{i}].content is empty"))
    if all(r is not None for r in roles):
        out.extend(("wrong_order", msg) for msg in _order_problems(roles, require_assistant))  # type: ignore[arg-type]
    return out


def _order_problems(roles: list[str], require_assistant: bool) -> list[str]:
    problems = []
    start = 0
    for i, r in enumerate(roles):
        if r == "system" and i > 0:
            problems.append(f"wrong order: messages[{i}] is a system message after the first turn")
    if roles[0] == "system":
        start = 1
    turns = [(i, r) for i, r in enumerate(roles) if r != "system"]
    if not turns:
        problems.append("wrong order: only a system message, no user turn")
        return problems
    first_i, first_r = turns[0]
    if first_r != "user":
        problems.append(f"wrong order: the first turn (messages[{first_i}]) is {first_r}, expected user")
    for (_, prev), (i, cur) in zip(turns, turns[1:]):
        if cur == prev:
            problems.append(f"wrong order: messages[{i}] is a second {cur} turn in a row (user and assistant alternate)")
    last_i, last_r = turns[-1]
    if require_assistant and last_r != "assistant":
        problems.append(f"wrong order: a training example must end with an assistant turn, the last is {last_r} (messages[{last_i}])")
    del start
    return problems


def split_prompt(messages: list[dict]) -> tuple[list[dict], str | None]:
    """Prompt messages and the final assistant turn (None when the last turn is not the assistant's)."""
    if messages and messages[-1].get("role") == "assistant":
        return messages[:-1], messages[-1].get("content")
    return messages, None


def system_prompt(messages: list[dict]) -> str | None:
    if messages and messages[0].get("role") == "system":
        c = messages[0].get("content")
        return c if isinstance(c, str) else None
    return None


def preview(text: str, limit: int = 80) -> str:
    """One-line excerpt (newlines shown as ⏎); callers escape it for HTML/Markdown themselves."""
    t = " ⏎ ".join(text.splitlines()).strip()
    return t if len(t) <= limit else t[: limit - 1] + "…"
