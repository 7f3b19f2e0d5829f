"""Deterministic validators: pure functions ``(sample, completion) -> Score``. Cheap, run first.

Each kind is built once per suite from its ScorerSpec (``build_validator``), so a bad option fails
before any model runs.
"""

from __future__ import annotations

import importlib
import json
import re
import unicodedata
from typing import Any, Callable, Mapping

from ..errors import ConfigError
from ..types import Completion, Sample, Score, ScorerSpec

Validator = Callable[[Sample, Completion], Score]



def _strip_fences(text: str) -> str:
    """Models often wrap JSON in a Markdown code fence; the fence is not part of the value."""
    t = text.strip()
    m = re.fullmatch(r"```(?:json)?\s*\n?(.*?)\n?```", t, flags=re.DOTALL)
    return m.group(1).strip() if m else t


def _parse_json(text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(_strip_fences(text)), None
    except json.JSONDecodeError as e:
        return None, f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"


def _result(name: str, ok: bool, why: str = "", details: Mapping[str, Any] | None = None) -> Score:
    return Score(scorer=name, value=1.0 if ok else 0.0, passed=ok, explanation=why, details=details or {})


def json_valid(name: str, options: Mapping[str, Any]) -> Validator:
    def check(sample: Sample, out: Completion) -> Score:
        _, err = _parse_json(out.text)
        return _result(name, err is None, err or "valid JSON")

    return check


def json_schema(name: str, options: Mapping[str, Any]) -> Validator:
    import jsonschema

    schema = options.get("schema")
    if schema is not None:
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as e:
            raise ConfigError(f"scorer '{name}': invalid JSON Schema: {e.message}", where=options.get("schema_file")) from None

    def check(sample: Sample, out: Completion) -> Score:
        sch = sample.schema if sample.schema is not None else schema
        if sch is None:
            return Score(name, None, None, error=f"sample '{sample.id}' has no schema and the scorer names none")
        value, err = _parse_json(out.text)
        if err:
            return _result(name, False, err)
        validator = jsonschema.validators.validator_for(sch)(sch)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            where = "/".join(str(p) for p in e.path) or "(root)"
            return _result(name, False, f"schema violation at {where}: {e.message}")
        return _result(name, True, "matches the schema")

    return check


def regex(name: str, options: Mapping[str, Any]) -> Validator:
    pattern = options.get("pattern")
    if not isinstance(pattern, str):
        raise ConfigError(f"scorer '{name}': regex needs a 'pattern' string")
    flags = 0
    for f in options.get("flags", ""):
        flags |= {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}.get(f, 0)
    try:
        rx = re.compile(pattern, flags)
    except re.error as e:
        raise ConfigError(f"scorer '{name}': invalid regex {pattern!r}: {e}") from None
    full = bool(options.get("fullmatch", False))

    def check(sample: Sample, out: Completion) -> Score:
        text = out.text.strip() if options.get("strip", True) else out.text
        m = rx.fullmatch(text) if full else rx.search(text)
        return _result(name, m is not None, f"{'matches' if m else 'does not match'} /{pattern}/")

    return check


def _normalise(text: str, how: set[str]) -> str:
    if "json" in how:
        value, err = _parse_json(text)
        if err is None:
            return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if "unicode" in how:
        text = unicodedata.normalize("NFKC", text)
    if "whitespace" in how:
        text = " ".join(text.split())
    if "case" in how:
        text = text.casefold()
    if "punctuation" in how:
        text = re.sub(r"[^\w\s]", "", text)
    return text.strip() if "strip" in how or "whitespace" in how else text


_NORMALISERS = {"json", "whitespace", "case", "punctuation", "unicode", "strip"}


def exact_match(name: str, options: Mapping[str, Any]) -> Validator:
    how_raw = options.get("normalize", ["strip"])
    how = {how_raw} if isinstance(how_raw, str) else set(how_raw or [])
    unknown = how - _NORMALISERS
    if unknown:
        raise ConfigError(f"scorer '{name}': unknown normalisation {sorted(unknown)} (known: {sorted(_NORMALISERS)})")

    def check(sample: Sample, out: Completion) -> Score:
        if sample.reference is None:
            return Score(name, None, None, error=f"sample '{sample.id}' has no reference")
        ok = _normalise(out.text, how) == _normalise(sample.reference, how)
        return _result(name, ok, "equals the reference" if ok else "differs from the reference")

    return check


def _needles(name: str, options: Mapping[str, Any]) -> list[str]:
    v = options.get("value")
    vals = [v] if isinstance(v, str) else v
    if not isinstance(vals, list) or not vals or not all(isinstance(x, str) for x in vals):
        raise ConfigError(f"scorer '{name}': needs a string or a list of strings")
    return vals


def contains(name: str, options: Mapping[str, Any]) -> Validator:
    needles = _needles(name, options)
    fold = bool(options.get("ignore_case", False))
    mode_all = options.get("mode", "all") == "all"

    def check(sample: Sample, out: Completion) -> Score:
        text = out.text.casefold() if fold else out.text
        found = [n for n in needles if (n.casefold() if fold else n) in text]
        ok = len(found) == len(needles) if mode_all else bool(found)
        missing = [n for n in needles if n not in found]
        return _result(name, ok, "contains all" if ok else f"missing {missing}")

    return check


def not_contains(name: str, options: Mapping[str, Any]) -> Validator:
    needles = _needles(name, options)
    fold = bool(options.get("ignore_case", False))

    def check(sample: Sample, out: Completion) -> Score:
        text = out.text.casefold() if fold else out.text
        found = [n for n in needles if (n.casefold() if fold else n) in text]
        return _result(name, not found, f"contains forbidden {found}" if found else "none of the forbidden strings")

    return check


def max_chars(name: str, options: Mapping[str, Any]) -> Validator:
    limit = options.get("value")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise ConfigError(f"scorer '{name}': max_chars needs a non-negative integer")

    def check(sample: Sample, out: Completion) -> Score:
        n = len(out.text)
        return _result(name, n <= limit, f"{n} characters (limit {limit})")

    return check


def python(name: str, options: Mapping[str, Any]) -> Validator:
    """``python: module:function``; the function gets (sample, completion) and returns a Score, a
    bool, a number in [0, 1] (passes at >= 0.5 unless ``threshold`` says otherwise) or a dict.
    """
    target = options.get("function")
    if not isinstance(target, str) or ":" not in target:
        raise ConfigError(f"scorer '{name}': python needs 'module:function'")
    mod_name, fn_name = target.split(":", 1)
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"scorer '{name}': cannot import {target}: {e}") from None
    threshold = float(options.get("threshold", 0.5))

    def check(sample: Sample, out: Completion) -> Score:
        try:
            r = fn(sample, out)
        except Exception as e:  # a custom check's crash is recorded for that item, not fatal
            return Score(name, None, None, error=f"{target} raised {type(e).__name__}: {e}")
        if isinstance(r, Score):
            return Score(name, r.value, r.passed, r.explanation, r.error, r.details)
        if isinstance(r, bool):
            return _result(name, r)
        if isinstance(r, (int, float)):
            return Score(name, float(r), float(r) >= threshold)
        if isinstance(r, dict):
            passed = r.get("passed", r.get("pass"))
            value = r.get("value", r.get("score", 1.0 if passed else 0.0 if passed is not None else None))
            if passed is None and value is not None:
                passed = float(value) >= threshold
            return Score(name, None if value is None else float(value), passed, str(r.get("reason", r.get("explanation", ""))))
        return Score(name, None, None, error=f"{target} returned {type(r).__name__}, expected bool, number, dict or Score")

    return check


_BUILDERS: dict[str, Callable[[str, Mapping[str, Any]], Validator]] = {
    "json_valid": json_valid,
    "json_schema": json_schema,
    "regex": regex,
    "exact_match": exact_match,
    "contains": contains,
    "not_contains": not_contains,
    "max_chars": max_chars,
    "python": python,
}


KNOWN_KINDS = frozenset(_BUILDERS)  # the registry is the one list of validator kinds


def build_validator(spec: ScorerSpec, where: str | None = None) -> Validator:
    try:
        return _BUILDERS[spec.kind](spec.name, spec.options)
    except ConfigError as e:
        if e.where is None and where:
            raise ConfigError(e.message, where=where) from None
        raise
