"""Reasoning kept apart from the answer: what scorers and judges see of a reasoning model's output.

Qwen3, DeepSeek-R1 distills and their fine-tunes write ``<think>…</think>`` before the answer;
OpenAI-compatible servers with a reasoning parser return it as ``message.reasoning_content``;
Anthropic returns ``thinking`` blocks. With ``reasoning: strip`` (the default) the answer is what is
left: a server's separate reasoning is kept as is, tags in the text are split off (a close tag
without an open one too: chat templates that open the block in the prompt), and an output cut by the
token limit inside its thinking has an **empty** answer — never the thinking scored as an answer.
``reasoning: keep`` scores the raw text.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from ..types import Completion

DEFAULT_TAGS = ("<think>", "</think>")

__all__ = ["DEFAULT_TAGS", "split_reasoning"]


def split_reasoning(c: Completion, mode: str = "strip", tags: Sequence[str] = DEFAULT_TAGS) -> Completion:
    """``c`` with ``text`` the answer and ``reasoning`` the thinking (``mode`` strip), or unchanged (keep)."""
    if mode == "keep" or c.error is not None:
        return c
    open_tag, close_tag = tags[0], tags[1]
    text = c.text
    thought: list[str] = [c.reasoning] if c.reasoning else []
    start = text.find(open_tag)
    end = text.find(close_tag, start + len(open_tag) if start >= 0 else 0)
    if start >= 0 and end >= 0:  # <think>...</think> answer
        thought.append(text[start + len(open_tag):end].strip())
        answer = (text[:start] + text[end + len(close_tag):]).strip()
    elif start >= 0:  # opened, never closed: cut inside the thinking (or it never ended it): no answer
        thought.append(text[start + len(open_tag):].strip())
        answer = text[:start].strip()
    elif end >= 0:  # the template opened the block in the prompt: ...</think> answer
        thought.append(text[:end].strip())
        answer = text[end + len(close_tag):].strip()
    else:
        answer = text
    reasoning = "\n\n".join(t for t in thought if t) or None
    if answer == text and reasoning == c.reasoning:
        return c
    return dataclasses.replace(c, text=answer, reasoning=reasoning)
