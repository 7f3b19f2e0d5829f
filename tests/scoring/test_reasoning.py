"""Reasoning kept apart from the answer: tags split off, a server's reasoning_content or Anthropic's
thinking blocks kept aside, a cut inside the thinking scored as an empty answer, `keep` scoring the
raw text — unit cases, then a run against the loopback OpenAI and Anthropic servers.
"""

from __future__ import annotations

import json

import pytest

from evalkit.cli import main
from evalkit.scoring.reasoning import split_reasoning
from evalkit.types import Completion
from tests.support.loopback import Reply, last_user_text
from tests.test_run import make_suite


@pytest.mark.parametrize("text,finish,answer,reasoning", [
    ('<think>the name is P0</think>{"a": 1}', "stop", '{"a": 1}', "the name is P0"),
    ('<think>\nlong thought\n</think>\n\n{"a": 1}', "stop", '{"a": 1}', "long thought"),
    ('just thinking</think>{"a": 1}', "stop", '{"a": 1}', "just thinking"),  # the template opened the block
    ("<think>still thinking when the limit hit", "length", "", "still thinking when the limit hit"),  # cut inside: no answer
    ('{"a": 1}', "stop", '{"a": 1}', None),
])
def test_split(text, finish, answer, reasoning):
    c = split_reasoning(Completion(text=text, finish_reason=finish))
    assert (c.text, c.reasoning, c.finish_reason) == (answer, reasoning, finish)


def test_keep_and_other_tags_and_server_reasoning():
    raw = Completion(text="<think>x</think>answer")
    assert split_reasoning(raw, "keep") is raw
    assert split_reasoning(Completion(text="[[r]]why[[/r]] yes"), "strip", ("[[r]]", "[[/r]]")).text == "yes"
    served = split_reasoning(Completion(text="answer", reasoning="from the server"))
    assert (served.text, served.reasoning) == ("answer", "from the server")


def thinking_extractor(api, req):
    """A reasoning model: thinks first (in the text, or apart from it), then answers in JSON."""
    text = last_user_text(req)
    name = text.split(";")[0].split(":")[1].strip()
    age = int(text.split("Age:")[1])
    answer = json.dumps({"name": name, "age": age})
    if req["model"] == "tags":
        return f"<think>The user wants JSON with name {name} and age {age}.</think>{answer}"
    if req["model"] == "cut":
        return Reply(text=f"<think>Let me think about {name} for a long time", finish_reason="length")
    return Reply(text=answer, reasoning=f"thinking about {name}")  # reasoning_content / thinking block


def test_a_reasoning_models_answer_is_scored_not_its_thinking(tmp_path, loopback_api, monkeypatch):
    monkeypatch.setenv("EK_TEST_KEY", "sk-test")
    loopback_api.set_responder(thinking_extractor)
    make_suite(tmp_path, n=4)
    url = loopback_api.base_url
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        "models:\n"
        f"  tags: {{backend: openai, model: tags, base_url: '{url}', api_key_env: EK_TEST_KEY}}\n"
        f"  apart: {{backend: openai, model: apart, base_url: '{url}', api_key_env: EK_TEST_KEY}}\n"
        f"  claude: {{backend: anthropic, model: apart, base_url: '{loopback_api.anthropic_base_url}', api_key_env: EK_TEST_KEY}}\n"
        f"  cut: {{backend: openai, model: cut, base_url: '{url}', api_key_env: EK_TEST_KEY}}\n"
        f"  raw: {{backend: openai, model: tags, base_url: '{url}', api_key_env: EK_TEST_KEY, generation: {{max_new_tokens: 64, reasoning: keep}}}}\n"
        "suites: [suites/extract]\ngeneration: {max_new_tokens: 64}\nstore: store.db\n"
        "gates:\n  - {name: valid, metric: pass_rate, scorer: json_valid, min: 1.0}\n"
    )
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    lines = [json.loads(x) for x in (tmp_path / "o" / "items.jsonl").read_text().splitlines()]
    by = {}
    for x in lines:
        by.setdefault(x["model"], []).append(x)
    for m in ("tags", "apart", "claude"):  # the answer is scored; the thinking is kept, not scored
        assert all(x["scores"]["json_valid"]["passed"] and x["output"].startswith("{") and x["reasoning"] for x in by[m]), m
    assert by["tags"][0]["reasoning"].startswith("The user wants JSON")
    assert all(x["reasoning"].startswith("thinking about") for x in by["apart"] + by["claude"])
    # cut by the token limit inside the thinking: an empty answer, truncated, never scored as an answer
    assert all(x["output"] == "" and x["truncated"] and x["scores"]["json_valid"]["passed"] is False for x in by["cut"])
    # reasoning: keep scores the raw text, thinking included: not valid JSON
    assert all(x["output"].startswith("<think>") and x["scores"]["json_valid"]["passed"] is False for x in by["raw"])
    gates = {g["model"]: g for g in json.loads((tmp_path / "o" / "summary.json").read_text())["gates"]}
    assert gates["tags"]["passed"] and gates["apart"]["passed"] and gates["claude"]["passed"]
    assert gates["cut"]["passed"] is False and gates["raw"]["passed"] is False


def test_an_unknown_reasoning_mode_is_one_line(tmp_path, capsys):
    make_suite(tmp_path, n=1)
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("models:\n  m: {backend: openai, model: m, base_url: 'http://127.0.0.1:9/v1'}\nsuites: [suites/extract]\n"
                   "generation: {reasoning: hide}\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "reasoning" in err[0]
