"""Tokenisation for log-likelihood scoring, the way lm-evaluation-harness tokenises, shared by the hf
and vLLM backends so both score the same tokens.

- A string is encoded with the tokenizer's own special tokens (a BOS where it adds one), except when
  it already starts with the BOS text (a chat-templated context does).
- A (context, continuation) pair: trailing whitespace of the context moves to the continuation; the
  whole string is encoded once and split at the context's encoded length, so a continuation is
  scored in the tokens the model would see in one text.
- A rolling text: the encoded text is cut into windows of the model's context length, each token
  predicted once, the first from the prefix token (BOS, else EOS).
"""

from __future__ import annotations

from typing import Any, Sequence

from ..types import Message

Pair = tuple[list[int], list[int]]  # (context ids, continuation ids)


def bos_text(tokenizer: Any) -> str | None:
    """The prefix token's text: a string that starts with it gets no special tokens added."""
    tid = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return tokenizer.decode([tid]) if tid is not None else None


def prefix_token_id(tokenizer: Any) -> int:
    """The token a text's first token is predicted from (lm-eval's ``prefix_token_id``: BOS, else EOS)."""
    tid = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if tid is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to predict a text's first token from")
    return int(tid)


def encode(tokenizer: Any, text: str) -> list[int]:
    """``text``'s ids: the tokenizer's special tokens unless the text starts with the BOS text."""
    bos = bos_text(tokenizer)
    if bos and text.startswith(bos):
        return list(tokenizer.encode(text, add_special_tokens=False))
    return list(tokenizer.encode(text))


def context_text(tokenizer: Any, prompt: str | None, messages: Sequence[Message]) -> str:
    """A multiple-choice item's context: the raw ``prompt``, or the messages through the chat template
    with the generation prompt (the text a generation would continue).
    """
    if prompt is not None:
        return prompt
    return str(tokenizer.apply_chat_template([m.as_dict() for m in messages], tokenize=False, add_generation_prompt=True))


def encode_pair(tokenizer: Any, context: str, continuation: str) -> Pair:
    """(context ids, continuation ids) as lm-eval's ``_encode_pair`` gives them."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = encode(tokenizer, context + continuation)
    ctx = encode(tokenizer, context)
    return ctx, whole[len(ctx):]


def rolling_windows(ids: Sequence[int], prefix: int, max_len: int) -> list[Pair]:
    """Disjoint (context, predicted) windows that predict every token of ``ids`` exactly once, each
    with as much preceding text as fits in ``max_len`` (lm-eval's rolling windows, context_len 1).
    """
    ids = list(ids)
    if not ids:
        return []
    out: list[Pair] = []
    first = min(max_len, len(ids))
    out.append(([prefix], ids[:first]))
    done = first
    while done < len(ids):
        n = min(len(ids) - done, max_len)
        end = done + n
        window = ids[max(0, end - max_len - 1) : end - 1]
        out.append((window[: len(window) - (n - 1)], ids[end - n : end]))
        done = end
    return out


def model_input(pair: Pair, max_len: int) -> tuple[list[int], int]:
    """The ids a model reads to score ``pair`` (left-truncated to ``max_len``) and how many of the
    last positions predict the continuation.
    """
    ctx, cont = pair
    full = (ctx + cont)[-(max_len + 1):]
    return full[:-1], min(len(cont), len(full) - 1)
