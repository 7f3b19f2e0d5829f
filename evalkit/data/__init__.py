"""Data stage: read and validate JSONL, load suites (and, with the data pipeline, validate/convert/split/audit)."""

from .jsonl import iter_jsonl, parse_messages, parse_sample, read_samples
from .suites import load_suite

__all__ = ["iter_jsonl", "parse_messages", "parse_sample", "read_samples", "load_suite"]
