"""Suites: sample lines, training-style lines, versions by content, errors with file:line."""

import json
from pathlib import Path

import pytest

from evalkit.data import load_suite
from evalkit.errors import ConfigError, DataError

SCHEMA = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}


def make_suite(tmp_path: Path, lines: list, scorers: str = "  - json_valid\n  - {json_schema: schema.json}\n") -> Path:
    d = tmp_path / "suite"
    d.mkdir(exist_ok=True)
    (d / "suite.yaml").write_text(f"name: s1\nkind: regression\nsamples: samples.jsonl\nscorers:\n{scorers}")
    (d / "schema.json").write_text(json.dumps(SCHEMA))
    (d / "samples.jsonl").write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return d


def test_sample_and_training_style_lines(tmp_path):
    d = make_suite(tmp_path, [
        {"id": "a", "messages": [{"role": "user", "content": "hi"}], "reference": "{\"name\": \"x\"}", "tags": ["fmt"]},
        {"id": "b", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "ans"}]},
    ])
    suite = load_suite(d)
    a, b = suite.samples
    assert a.reference == '{"name": "x"}' and a.tags == ("fmt",)
    assert b.reference == "ans" and [m.role for m in b.messages] == ["system", "user"]
    assert suite.scorers[1].options["schema"] == SCHEMA


def test_version_changes_with_content(tmp_path):
    d = make_suite(tmp_path, [{"id": "a", "messages": [{"role": "user", "content": "hi"}]}])
    v1 = load_suite(d).version
    assert load_suite(d).version == v1
    (d / "schema.json").write_text(json.dumps({**SCHEMA, "required": []}))
    v2 = load_suite(d).version
    assert v2 != v1
    (d / "samples.jsonl").write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "hi!"}]}) + "\n")
    assert load_suite(d).version not in (v1, v2)


@pytest.mark.parametrize(
    "bad,fragment",
    [
        ("{not json", "invalid JSON"),
        ({"id": "x", "messages": [{"role": "robot", "content": "hi"}]}, "unknown role 'robot'"),
        ({"id": "x", "messages": []}, "non-empty list"),
        ({"id": "x", "messages": [{"role": "user", "content": 3}]}, "must be a string"),
        ({"id": "a", "messages": [{"role": "user", "content": "dup"}]}, "duplicate id 'a'"),
        ({"id": "x", "input": "old format"}, "unknown keys ['input']"),
        # a raw-text prompt is a multiple-choice item's context, not a generation prompt
        ({"id": "x", "prompt": "old format"}, "'prompt' (raw text) is a multiple-choice item's context"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, bad, fragment):
    d = make_suite(tmp_path, [{"id": "a", "messages": [{"role": "user", "content": "hi"}]}, bad])
    with pytest.raises(DataError) as ei:
        load_suite(d)
    assert ei.value.one_line().startswith(f"{d / 'samples.jsonl'}:2: ")
    assert fragment in ei.value.one_line()


def test_unknown_scorer_and_missing_schema(tmp_path):
    d = make_suite(tmp_path, [{"id": "a", "messages": [{"role": "user", "content": "hi"}]}], scorers="  - json_valid\n  - fuzzy_match\n")
    with pytest.raises(ConfigError) as ei:
        load_suite(d)
    assert ei.value.line == 6 and "unknown scorer 'fuzzy_match'" in ei.value.message
    d = make_suite(tmp_path, [{"id": "a", "messages": [{"role": "user", "content": "hi"}]}], scorers="  - {json_schema: nope.json}\n")
    with pytest.raises(ConfigError) as ei:
        load_suite(d)
    assert "nope.json" in ei.value.message


def test_unknown_suite_key(tmp_path):
    d = make_suite(tmp_path, [{"id": "a", "messages": [{"role": "user", "content": "hi"}]}])
    (d / "suite.yaml").write_text("name: s\nkinds: heldout\n")
    with pytest.raises(ConfigError) as ei:
        load_suite(d)
    assert ei.value.one_line() == f"{d / 'suite.yaml'}:2: unknown key 'kinds'"
