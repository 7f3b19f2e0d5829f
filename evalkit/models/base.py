"""The one backend protocol every model backend implements (hf, vllm, openai, anthropic)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from ..types import Completion, Message, ModelSpec


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt for one model. ``key`` is the store's cache key for the output."""

    key: str
    model: ModelSpec
    messages: tuple[Message, ...]
    top_logprobs: int = 0  # > 0: return each generated token's top-k log-probabilities (hf); not part of the output's identity


ProgressFn = Callable[[int], None]  # called with the number of requests just finished


class Backend(Protocol):
    """A loaded model (or server/API client) that can serve one or more ModelSpecs of a group.

    ``generate`` returns one Completion per request, in request order. Per-request failures (after
    retries) come back as ``Completion(error=...)``; an unreachable server or unloadable model raises
    ``errors.BackendUnavailable``. Greedy decoding when temperature is 0, so runs reproduce.
    """

    def generate(self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None) -> list[Completion]: ...

    def close(self) -> None: ...
