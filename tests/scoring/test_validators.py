"""Validators are pure functions (sample, completion) -> Score, tested on hand-made inputs."""

import pytest

from evalkit.errors import ConfigError
from evalkit.scoring import build_validator
from evalkit.types import Completion, Message, Sample, ScorerSpec

SCHEMA = {
    "type": "object",
    "required": ["name", "age"],
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "additionalProperties": False,
}


def run(kind, options, text, reference=None, schema=None, name=None):
    check = build_validator(ScorerSpec(kind=kind, name=name or kind, options=options))
    sample = Sample(id="s1", messages=(Message("user", "q"),), reference=reference, schema=schema)
    return check(sample, Completion(text=text))


def test_json_valid():
    assert run("json_valid", {}, '{"a": 1}').passed
    assert run("json_valid", {}, '```json\n{"a": 1}\n```').passed  # a code fence is not part of the value
    s = run("json_valid", {}, '{"a": 1')
    assert s.passed is False and s.value == 0.0 and "not valid JSON" in s.explanation


def test_json_schema_uses_scorer_or_sample_schema():
    assert run("json_schema", {"schema": SCHEMA}, '{"name": "Ada", "age": 36}').passed
    s = run("json_schema", {"schema": SCHEMA}, '{"name": "Ada", "age": "36"}')
    assert s.passed is False and "age" in s.explanation
    assert run("json_schema", {}, '{"name": "Ada", "age": 1}', schema=SCHEMA).passed
    missing = run("json_schema", {}, "{}")
    assert missing.passed is None and missing.error  # unscored, not failed


def test_json_schema_rejects_an_invalid_schema():
    with pytest.raises(ConfigError):
        build_validator(ScorerSpec("json_schema", "json_schema", {"schema": {"type": "nonsense"}}))


def test_regex():
    assert run("regex", {"pattern": "^[{]"}, '  {"a":1}').passed  # stripped by default
    assert not run("regex", {"pattern": "^[{]"}, "x{").passed
    assert run("regex", {"pattern": "ABC", "flags": "i"}, "xabcx").passed
    assert not run("regex", {"pattern": "abc", "fullmatch": True}, "abcd").passed
    with pytest.raises(ConfigError):
        build_validator(ScorerSpec("regex", "regex", {"pattern": "(["}))


@pytest.mark.parametrize(
    "normalize,out,ref,ok",
    [
        (None, " Paris\n", "Paris", True),
        ("whitespace", "New   York", "New York", True),
        ("case", "PARIS", "paris", True),
        (["case", "whitespace"], "new  YORK ", "New York", True),
        ("json", '{"b": 2, "a": 1}', '{"a":1,"b":2}', True),
        ("json", '{"a": 1}', '{"a": 2}', False),
        (None, "paris", "Paris", False),
    ],
)
def test_exact_match_normalisation(normalize, out, ref, ok):
    opts = {} if normalize is None else {"normalize": normalize}
    assert run("exact_match", opts, out, reference=ref).passed is ok


def test_exact_match_without_reference_is_an_error_not_a_fail():
    s = run("exact_match", {}, "x")
    assert s.passed is None and s.error


def test_contains_not_contains_max_chars():
    assert run("contains", {"value": ["a", "b"]}, "abc").passed
    assert not run("contains", {"value": ["a", "z"]}, "abc").passed
    assert run("contains", {"value": ["a", "z"], "mode": "any"}, "abc").passed
    assert run("not_contains", {"value": "sorry"}, "fine").passed
    assert not run("not_contains", {"value": "SORRY", "ignore_case": True}, "I'm sorry").passed
    assert run("max_chars", {"value": 3}, "abc").passed
    assert not run("max_chars", {"value": 0}, "a").passed  # a limit of 0 is honoured
    with pytest.raises(ConfigError):
        build_validator(ScorerSpec("max_chars", "max_chars", {"value": "ten"}))


def test_python_custom_check():
    s = run("python", {"function": "tests.scoring.custom_checks:has_greeting"}, "Hello there")
    assert s.passed is True and s.explanation == "looked for hello"
    crashed = run("python", {"function": "tests.scoring.custom_checks:crashes"}, "x")
    assert crashed.passed is None and "boom" in crashed.error
    with pytest.raises(ConfigError):
        build_validator(ScorerSpec("python", "python", {"function": "tests.scoring.custom_checks:nope"}))
