"""`evalkit data audit --base MODEL`: examples the base model already answers are found (real tiny model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalkit.cli import main
from evalkit.data.audit import audit_file
from evalkit.types import GenerationParams, Message, ModelSpec

from .conftest import chat


def _tiny_base_path(request) -> Path:
    try:
        base = request.getfixturevalue("tiny_base")
    except pytest.FixtureLookupError:
        pytest.skip("the tiny_base fixture (tests/support/models.py) is not available")
    return Path(getattr(base, "path", base))


@pytest.mark.slow
def test_base_model_already_correct(request, jsonl, tmp_path, capsys):
    base = _tiny_base_path(request)
    from evalkit.demo_model import general_examples
    from evalkit.models import GenerationRequest, open_backend

    spec = ModelSpec(name="base", backend="hf", path=str(base), generation=GenerationParams(max_new_tokens=12))
    candidates = [e["messages"][0]["content"] for e in general_examples(24, 0)]  # what the base was pretrained on
    backend = open_backend([spec])
    try:
        got = backend.generate([GenerationRequest(f"k{i}", spec, (Message("user", p),)) for i, p in enumerate(candidates)])
    finally:
        backend.close()
    # a barely trained base often stops at once; keep prompts it answers with some text
    answered = [(p, o) for p, o in zip(candidates, got) if o.error is None and o.text.strip()]
    assert len(answered) >= 3, got
    prompts = [p for p, _ in answered[:3]]
    outs = [o for _, o in answered[:3]]
    train = jsonl(
        "train.jsonl",
        [
            chat(prompts[0], outs[0].text),  # 1: exactly what the base says -> teaches nothing
            chat(prompts[1], outs[1].text + " and something new"),  # 2: more than the base says
            chat(prompts[2], "  " + outs[2].text.upper() + "  "),  # 3: same text up to case/spacing
        ],
    )
    rep = audit_file(train, base=str(base), base_max_new_tokens=12)
    b = rep.data["checks"]["base_model"]
    assert b["checked"] == 3 and b["errors"] == 0
    assert b["lines"] == [1, 3] and b["already_correct"] == 2

    assert main(["data", "audit", str(train), "--base", str(base), "--base-max-new-tokens", "12", "--no-progress"]) == 0
    assert "2 of 3 sampled example(s) answered correctly by the base model" in capsys.readouterr().out


def test_base_must_be_a_model_folder(jsonl, tmp_path, capsys):
    train = jsonl("train.jsonl", [chat("q", "a")])
    assert main(["data", "audit", str(train), "--base", str(tmp_path / "nope"), "--no-progress"]) == 2
    assert "--base: not a model directory" in capsys.readouterr().err
