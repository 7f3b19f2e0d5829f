"""Fixtures for the training tests: a tiny base checkpoint and small chat JSONL files.

The base is the shared ``tiny_base`` fixture (evalkit's demo recipe) when it exists; until then a
tiny random Llama with a character tokenizer whose chat template has ``{% generation %}`` markers.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest

_SPECIAL = ["<pad>", "<unk>", "<s>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
_TEMPLATE = (
    "{% for m in messages %}{% if m.role == 'assistant' %}<|assistant|>{% generation %}{{ m.content }}<|end|>{% endgeneration %}"
    "{% else %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _build_scratch_base(out: Path) -> Path:
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(_SPECIAL + list(dict.fromkeys(string.printable)))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="<|end|>",
        additional_special_tokens=_SPECIAL[4:],
    )
    tok.chat_template = _TEMPLATE
    cfg = LlamaConfig(
        vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0, bos_token_id=2, eos_token_id=3,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def train_base(request, tmp_path_factory) -> Path:
    try:
        return Path(request.getfixturevalue("tiny_base"))
    except pytest.FixtureLookupError:
        return _build_scratch_base(tmp_path_factory.mktemp("scratch-base"))


_NAMES = ["Ann", "Bob", "Cid", "Dee", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jo"]
_CITIES = ["Oslo", "Rome", "Lima", "Pune", "Kiev", "Bern"]


def extraction(n: int, seed: int) -> list[dict]:
    try:
        from evalkit.demo_model import extraction_examples

        return [_as_line(x) for x in extraction_examples(n, seed=seed)]
    except ImportError:
        pass
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        name, age, city = rng.choice(_NAMES), rng.randint(18, 90), rng.choice(_CITIES)
        out.append({"messages": [
            {"role": "user", "content": f"Extract: {name} is {age} and lives in {city}."},
            {"role": "assistant", "content": json.dumps({"name": name, "age": age, "city": city})},
        ]})
    return out


def general(n: int, seed: int) -> list[dict]:
    try:
        from evalkit.demo_model import general_examples

        return [_as_line(x) for x in general_examples(n, seed=seed)]
    except ImportError:
        pass
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 50), rng.randint(0, 50)
        out.append({"messages": [{"role": "user", "content": f"Add {a} and {b}."}, {"role": "assistant", "content": str(a + b)}]})
    return out


def _as_line(x) -> dict:
    if isinstance(x, dict):
        return {"messages": x["messages"]}
    return {"messages": [m if isinstance(m, dict) else m.as_dict() for m in x.messages]}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
