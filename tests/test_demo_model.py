"""evalkit's own tiny base model recipe: tokenizer, chat template, synthetic data, build, cache."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest

from evalkit import demo_model
from evalkit.demo_model import (
    EXTRACTION_SCHEMA,
    SPECIAL_TOKENS,
    build_base,
    build_tokenizer,
    demo_base,
    extraction_examples,
    general_examples,
)

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Repeat: cat"},
    {"role": "assistant", "content": "cat"},
    {"role": "user", "content": "Uppercase: dog"},
    {"role": "assistant", "content": "DOG"},
]


@pytest.fixture(scope="module")
def saved_tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("tok")
    build_tokenizer().save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def test_tokenizer_round_trips_through_save_and_autotokenizer(saved_tokenizer):
    tok = saved_tokenizer
    chars = string.printable.replace("\x0b", "").replace("\x0c", "").replace("\r", "")
    lone = " ".join(chars)  # every character alone (no two digits side by side: "12" is a word token)
    assert len(tok(lone, add_special_tokens=False)["input_ids"]) == len(lone)  # one token per character
    text = chars + ' {"name": "Ada Lovelace", "city": "Paris", "age": 36} Adalbert 7 131'
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    # the demo's names, cities and the numbers 10-130 are whole tokens; other words are characters
    pieces = tok.tokenize(' {"name": "Ada Lovelace", "city": "Paris", "age": 36} Adalbert 7 131')
    assert {"Ada", "Lovelace", "Paris", "36"} <= set(pieces) and "131" not in pieces and "Adalbert" not in pieces
    assert tok("é", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]
    assert len(tok) == len(build_tokenizer())


def test_special_tokens_exist_from_the_start_with_fixed_ids(saved_tokenizer):
    tok = saved_tokenizer
    assert tok.convert_ids_to_tokens(list(range(len(SPECIAL_TOKENS)))) == list(SPECIAL_TOKENS)
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<s>", "<|end|>")
    for marker in ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"):
        assert tok(marker, add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids(marker)]
    # Rendering a chat adds no tokens: fine-tuning never needs new embeddings (no modules_to_save).
    before = len(tok)
    tok.apply_chat_template(CHAT, tokenize=True)
    assert len(tok) == before


def test_chat_template_renders_turns_and_generation_prompt(saved_tokenizer):
    tok = saved_tokenizer
    assert tok.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True) == (
        "<s><|system|>Be brief.<|end|><|user|>Repeat: cat<|end|><|assistant|>"
    )
    assert tok.apply_chat_template(CHAT[:3], tokenize=False) == (
        "<s><|system|>Be brief.<|end|><|user|>Repeat: cat<|end|><|assistant|>cat<|end|>"
    )


def test_generation_mask_covers_exactly_the_assistant_turns(saved_tokenizer):
    tok = saved_tokenizer
    enc = tok.apply_chat_template(CHAT, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    masked = [t for t, m in zip(ids, mask) if m]
    assert tok.decode(masked) == "cat<|end|>DOG<|end|>"
    assert sum(mask) == len(tok.tokenize("cat")) + 1 + len(tok.tokenize("DOG")) + 1 == 1 + 1 + 3 + 1  # "cat" is a word token
    # The role marker itself is prompt, not target.
    first = mask.index(1)
    assert tok.convert_ids_to_tokens(ids[first - 1]) == "<|assistant|>"


def test_general_examples_are_deterministic_varied_and_well_formed():
    a, b = general_examples(60, seed=3), general_examples(60, seed=3)
    assert a == b
    assert a != general_examples(60, seed=4)
    assert len({x["id"] for x in a}) == 60
    tasks = {x["tags"][0] for x in a}
    assert len(tasks) >= 8
    for x in a:
        assert [m["role"] for m in x["messages"]] == ["user", "assistant"]
        assert x["messages"][1]["content"] and len(x["messages"][0]["content"]) < 80
    by_task = {x["tags"][0]: x["messages"] for x in a}
    user, answer = by_task["add"][0]["content"], by_task["add"][1]["content"]
    nums = [int(t) for t in user.replace("+", " ").replace("?", " ").replace("=", " ").split() if t.isdigit()]
    assert int(answer) == sum(nums)
    assert by_task["upper"][1]["content"] == by_task["upper"][1]["content"].upper()


def test_extraction_examples_validate_against_the_schema():
    import jsonschema

    lines = extraction_examples(40, seed=1)
    assert lines == extraction_examples(40, seed=1)
    assert lines != extraction_examples(40, seed=2)
    for x in lines:
        prompt, answer = x["messages"][0]["content"], x["messages"][1]["content"]
        obj = json.loads(answer)
        jsonschema.validate(obj, EXTRACTION_SCHEMA)
        assert answer == json.dumps(obj)  # compact, one canonical form
        assert obj["name"] in prompt and obj["city"] in prompt and str(obj["age"]) in prompt
        assert x["tags"] == ["extraction"]
    assert len({x["messages"][0]["content"].split(obj["name"])[0][:6] for x in lines}) > 1  # varied phrasing
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "Ada", "city": "London"}, EXTRACTION_SCHEMA)


def test_general_mix_never_contains_the_extraction_task():
    general = general_examples(500, seed=0)
    assert not any(x["messages"][1]["content"].startswith("{") for x in general)


@pytest.mark.slow
def test_build_base_is_deterministic(tmp_path):
    from safetensors.torch import load_file

    kw = {"steps": 3, "seed": 5, "hidden": 32, "layers": 1, "progress": False}
    one, two = build_base(tmp_path / "one", **kw), build_base(tmp_path / "two", **kw)
    w1, w2 = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert w1.keys() == w2.keys()
    assert all((w1[k] == w2[k]).all() for k in w1)
    # Every file matches too, so the store sees one model identity (cache hits across rebuilds).
    from evalkit.models import fingerprint
    from evalkit.types import ModelSpec

    ids = [fingerprint(ModelSpec(name="m", backend="hf", path=str(p))) for p in (one, two)]
    assert ids[0] == ids[1]
    other = load_file(build_base(tmp_path / "three", **{**kw, "seed": 6}) / "model.safetensors")
    assert any(not (w1[k] == other[k]).all() for k in w1)


@pytest.mark.slow
def test_built_checkpoint_is_an_ordinary_hf_checkpoint(tiny_base):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    names = {p.name for p in Path(tiny_base).iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    config = json.loads((tiny_base / "config.json").read_text())
    assert config["model_type"] == "llama" and config["dtype"] == "float32"
    assert config["head_dim"] == 32  # vLLM's CPU attention needs 32, 64, ...
    gen = GenerationConfig.from_pretrained(tiny_base)
    assert gen.do_sample is False
    tok = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    assert model.config.vocab_size == len(tok)
    assert model.dtype == torch.float32
    assert tok.chat_template and "{% generation %}" in tok.chat_template
    recipe = json.loads((tiny_base / "evalkit_recipe.json").read_text())
    assert recipe["recipe_version"] == demo_model.RECIPE_VERSION and recipe["final_loss"] > 0


@pytest.fixture
def tiny_default_build(monkeypatch):
    """Make demo_base's default build tiny so the cache logic is tested in seconds."""
    monkeypatch.setattr(demo_model, "DEFAULT_BUILD", {"steps": 2, "seed": 0, "hidden": 32, "layers": 1})


@pytest.mark.slow
def test_demo_base_builds_once_then_reuses_the_cache(tmp_path, monkeypatch, tiny_default_build):
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    path = demo_base(progress=False)
    assert path.parent == tmp_path / "cache" and path.name.startswith("demo-base-")
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp folders left
    calls = []
    monkeypatch.setattr(demo_model, "build_base", lambda *a, **k: calls.append(1))
    assert demo_base(progress=False) == path and calls == []
    # A different recipe (version bump) gets a different cache entry.
    monkeypatch.setattr(demo_model, "RECIPE_VERSION", "test-bump")
    with pytest.raises(RuntimeError, match="incomplete"):  # the stub "builds" nothing: never cached
        demo_base(progress=False)
    assert calls == [1]
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_demo_base_killed_mid_build_leaves_no_cache_entry(tmp_path, monkeypatch, tiny_default_build):
    def crash(out, **kw):
        Path(out, "config.json").write_text("{}")  # half-written checkpoint
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_model, "build_base", crash)
    with pytest.raises(KeyboardInterrupt):
        demo_base(tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_shipped_base_is_this_recipe_and_the_default(monkeypatch, tmp_path):
    """Evalkit ships the default build (package data): demo_base() returns it without building, and a
    recipe change without a reshipped base falls back to building (never a stale base).
    """
    shipped = demo_model.shipped_base()
    assert shipped is not None, "the recipe changed: rebuild the base with pinned kernels and ship it (README, 'The demo base model')"
    recipe = json.loads((shipped / "evalkit_recipe.json").read_text())
    assert {k: recipe[k] for k in demo_model.DEFAULT_BUILD} == demo_model.DEFAULT_BUILD and recipe["torch_threads"] == 1
    monkeypatch.setattr(demo_model, "build_base", lambda *a, **k: pytest.fail("built although a base is shipped"))
    assert demo_base(progress=False) == shipped
    monkeypatch.setattr(demo_model, "RECIPE_VERSION", "test-bump")
    assert demo_model.shipped_base() is None


def test_differs_from_shipped_compares_every_checkpoint_file_byte_for_byte(tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(demo_model.SHIPPED_BASE, copy)
    assert demo_model.differs_from_shipped(copy) == []
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1  # one bit of one weight
    (copy / "model.safetensors").write_bytes(bytes(data))
    (copy / "tokenizer.json").unlink()
    assert demo_model.differs_from_shipped(copy) == ["model.safetensors", "tokenizer.json"]
