"""Scoring stage: deterministic validators first, LLM judges after. One Score type for both."""

from .validators import KNOWN_KINDS, Validator, build_validator

__all__ = ["KNOWN_KINDS", "Validator", "build_validator"]
