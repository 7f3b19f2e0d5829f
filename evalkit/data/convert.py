"""``evalkit data convert``: Alpaca, ShareGPT and prompt/completion files to the chat format (and back).

Formats (one JSON object per line):

- ``alpaca``: ``{"instruction", "input"?, "output", "system"?, "history"?: [[user, assistant], ...]}``
- ``sharegpt``: ``{"conversations": [{"from": "system"|"human"|"gpt", "value"}...], "system"?}``
- ``prompt-completion``: ``{"prompt", "completion"}``, each a string or (TRL's conversational
  form) a list of ``{role, content}`` messages
- ``chat``: ``{"messages": [{"role", "content"}...]}`` — evalkit's own format

``id``, ``tags`` and ``metadata`` pass through; any other key of a source line is kept under
``metadata`` so nothing is silently dropped. Chat -> X -> chat is the identity for every format
(for Alpaca and string prompt/completion: single-turn examples with no earlier assistant turn).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .._util.fs import atomic_writer
from ..errors import DataError, UserError
from ._chat import check_example
from ._io import progress_bar
from .jsonl import iter_jsonl

Format = Literal["alpaca", "sharegpt", "prompt-completion", "chat"]
FORMATS: tuple[str, ...] = ("alpaca", "sharegpt", "prompt-completion", "chat")
PASSTHROUGH = ("id", "tags", "metadata")

_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "model": "assistant",
}
_CHAT_TO_SHAREGPT = {"system": "system", "user": "human", "assistant": "gpt"}
_FORMAT_KEYS = {
    "alpaca": {"instruction", "input", "output", "system", "history"},
    "sharegpt": {"conversations", "system"},
    "prompt-completion": {"prompt", "completion"},
    "chat": {"messages", "reference", "schema"},
}


@dataclass(frozen=True)
class ConvertResult:
    source_format: str
    target_format: str
    written: int
    system_set: int  # examples whose system prompt --system set or replaced
    extra_keys: dict[str, int]  # source keys kept under metadata, with counts


def detect_format(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    if "messages" in obj:
        return "chat"
    if "conversations" in obj:
        return "sharegpt"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    if "prompt" in obj and "completion" in obj:
        return "prompt-completion"
    return None


def _str(obj: dict, key: str, *, optional: bool = False) -> str:
    v = obj.get(key)
    if v is None and optional:
        return ""
    if not isinstance(v, str):
        raise ValueError(f"'{key}' must be a string" + (" (missing)" if v is None else f", got {type(v).__name__}"))
    return v


def _messages_list(v: Any, key: str) -> list[dict]:
    if not isinstance(v, list) or not all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in v):
        raise ValueError(f"'{key}' must be a string or a list of {{role, content}} messages")
    return [{"role": m["role"], "content": m["content"]} for m in v]


def to_chat(obj: Any, fmt: str, *, system: str | None = None) -> tuple[dict, list[str]]:
    """One source line -> one chat line; also returns the source keys moved into metadata."""
    if not isinstance(obj, dict):
        raise ValueError("each line must be a JSON object")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    messages: list[dict]
    if fmt == "chat":
        messages = [dict(m) if isinstance(m, dict) else m for m in obj.get("messages") or []]
        if not isinstance(obj.get("messages"), list) or not messages:
            raise ValueError("'messages' must be a non-empty list")
    elif fmt == "alpaca":
        instruction = _str(obj, "instruction")
        inp = _str(obj, "input", optional=True)
        output = _str(obj, "output")
        messages = []
        if obj.get("system"):
            messages.append({"role": "system", "content": _str(obj, "system")})
        for i, pair in enumerate(obj.get("history") or []):
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise ValueError(f"history[{i}] must be a [user, assistant] pair of strings")
            messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
        user = f"{instruction}\n\n{inp}" if inp.strip() else instruction
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    elif fmt == "sharegpt":
        conv = obj.get("conversations")
        if not isinstance(conv, list) or not conv:
            raise ValueError("'conversations' must be a non-empty list")
        messages = []
        if obj.get("system"):
            messages.append({"role": "system", "content": _str(obj, "system")})
        for i, turn in enumerate(conv):
            if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
                raise ValueError(f"conversations[{i}] must be an object with 'from' and 'value'")
            role = _SHAREGPT_ROLES.get(str(turn["from"]).lower())
            if role is None:
                raise ValueError(
                    f"conversations[{i}]: unsupported 'from' {turn['from']!r} (known: {', '.join(sorted(_SHAREGPT_ROLES))})"
                )
            if not isinstance(turn["value"], str):
                raise ValueError(f"conversations[{i}].value must be a string")
            messages.append({"role": role, "content": turn["value"]})
    else:  # prompt-completion
        prompt, completion = obj.get("prompt"), obj.get("completion")
        if prompt is None or completion is None:
            raise ValueError("needs both 'prompt' and 'completion'")
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else _messages_list(prompt, "prompt")
        if isinstance(completion, str):
            messages.append({"role": "assistant", "content": completion})
        else:
            messages += _messages_list(completion, "completion")
    if system is not None:
        if messages and isinstance(messages[0], dict) and messages[0].get("role") == "system":
            messages = messages[1:]
        messages = [{"role": "system", "content": system}, *messages]
    out: dict[str, Any] = {}
    for k in ("id", "tags"):
        if k in obj:
            out[k] = obj[k]
    out["messages"] = messages
    if fmt == "chat":
        for k in ("reference", "schema"):
            if k in obj:
                out[k] = obj[k]
    known = _FORMAT_KEYS[fmt] | set(PASSTHROUGH)
    extras = sorted(set(obj) - known)
    metadata = dict(obj.get("metadata") or {})
    for k in extras:
        metadata[k] = obj[k]
    if metadata or "metadata" in obj:
        out["metadata"] = metadata
    problems = [m for kind, m in check_example(out, require_assistant=False) if kind != "unknown_key"]
    if problems:
        raise ValueError("converted example is not valid chat: " + "; ".join(problems))
    return out, extras


def from_chat(obj: dict, fmt: str) -> dict:
    """One chat line -> the target format (the inverse of :func:`to_chat`)."""
    messages: list[dict] = obj["messages"]
    out: dict[str, Any] = {k: obj[k] for k in ("id", "tags") if k in obj}
    if fmt == "chat":
        out["messages"] = messages
        for k in ("reference", "schema"):
            if k in obj:
                out[k] = obj[k]
    elif fmt == "sharegpt":
        out["conversations"] = [{"from": _CHAT_TO_SHAREGPT[m["role"]], "value": m["content"]} for m in messages]
    elif fmt == "alpaca":
        body = messages
        system = None
        if body and body[0]["role"] == "system":
            system, body = body[0]["content"], body[1:]
        if len(body) < 2 or body[-1]["role"] != "assistant" or body[-2]["role"] != "user":
            raise ValueError("Alpaca needs an example that ends with a user turn and its assistant answer")
        history = body[:-2]
        if any(m["role"] != ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(history)):
            raise ValueError("Alpaca history needs alternating user/assistant turns")
        out["instruction"] = body[-2]["content"]
        out["input"] = ""
        out["output"] = body[-1]["content"]
        if system is not None:
            out["system"] = system
        if history:
            out["history"] = [[history[i]["content"], history[i + 1]["content"]] for i in range(0, len(history), 2)]
    elif fmt == "prompt-completion":
        if not messages or messages[-1]["role"] != "assistant":
            raise ValueError("prompt/completion needs an example that ends with an assistant turn")
        prompt = messages[:-1]
        if len(prompt) == 1 and prompt[0]["role"] == "user":
            out["prompt"], out["completion"] = prompt[0]["content"], messages[-1]["content"]
        else:
            out["prompt"], out["completion"] = prompt, [messages[-1]]
    else:
        raise ValueError(f"unknown format {fmt!r}")
    if "metadata" in obj:
        out["metadata"] = obj["metadata"]
    return out


def convert_file(
    src: str | Path,
    dst: str | Path,
    *,
    source_format: str = "auto",
    target_format: str = "chat",
    system: str | None = None,
    progress: bool = False,
) -> ConvertResult:
    """Convert ``src`` into ``dst`` line by line (written atomically). A bad line raises DataError(FILE:LINE)."""
    import json

    if source_format != "auto" and source_format not in FORMATS:
        raise UserError(f"--from: unknown format {source_format!r} (known: auto, {', '.join(FORMATS)})")
    if target_format not in FORMATS:
        raise UserError(f"--to: unknown format {target_format!r} (known: {', '.join(FORMATS)})")
    if Path(src).resolve() == Path(dst).resolve():
        raise UserError(f"the output would overwrite the input: {dst}")
    fmt = None if source_format == "auto" else source_format
    written = system_set = 0
    extra_keys: Counter = Counter()
    bar = progress_bar(None, f"convert {Path(src).name}", progress)
    with atomic_writer(dst) as fh:
        for lineno, obj in iter_jsonl(src):
            bar.update(1)
            if fmt is None:
                fmt = detect_format(obj)
                if fmt is None:
                    keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
                    raise DataError(
                        f"cannot tell the format from keys {keys}; pass --from {{{','.join(FORMATS)}}}", where=src, line=lineno
                    )
            try:
                chat, extras = to_chat(obj, fmt, system=system)
                line = from_chat(chat, target_format)
            except ValueError as e:
                raise DataError(f"{fmt}: {e}", where=src, line=lineno) from None
            extra_keys.update(extras)
            system_set += system is not None
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            written += 1
    bar.close()
    if written == 0:
        Path(dst).unlink(missing_ok=True)
        raise DataError("no examples (the file is empty)", where=src)
    return ConvertResult(fmt or "chat", target_format, written, system_set, dict(extra_keys))
