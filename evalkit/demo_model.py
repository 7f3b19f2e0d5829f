"""evalkit's own recipe for a tiny Llama-architecture base model (no model hub needed).

The demo and the tests need a real base model that transformers, peft, bitsandbytes and vLLM all
load, but nothing may be downloaded. So evalkit builds one: a tokenizer with its special tokens and
chat template fixed from the start (fine-tuning never adds tokens, so adapters never need
``modules_to_save``, which vLLM refuses), and a small Llama pretrained for a few minutes on a
synthetic mix of *general* tasks (echo, uppercase, reverse, add, count, capitals, sort...) and
*copying* tasks (copy a name, a city, a number; key=value text -> JSON with other keys; pick a
field). It never sees the *extraction* task (free text -> JSON with name, city and age) that the
demo fine-tunes on, so the base scores 0 there, and a QLoRA candidate can learn it with the right
field values because the base already copies.

The tokenizer is character-level, except that the demo's names, cities, words and the numbers
10-130 are single tokens: copying "Ada Lovelace, 36" is then copying three tokens (with tied
embeddings, what attention moves is the token itself), not twelve characters, which a model this
small does not learn in minutes. Any other text still tokenizes, character by character.

Weights are saved in float32 (``config.json`` says ``"dtype": "float32"``); load with
``dtype="bfloat16"`` for parity with vLLM in bf16. The build is deterministic: seeded data, order and
initialisation, one torch thread -> the same parameters give the same bytes on one machine; with the
CPU kernels pinned (``evalkit._util.repro``) the same bytes on any x86-64 processor. evalkit ships the
default build (``SHIPPED_BASE``, package data, built that way), so the demo never waits for it.

Public API: ``build_tokenizer``, ``general_examples``, ``copy_examples``, ``extraction_examples``,
``EXTRACTION_SCHEMA``, ``build_base``, ``demo_base``, ``shipped_base``, ``differs_from_shipped``,
``RECIPE_VERSION``.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import string
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .types import stable_hash

if TYPE_CHECKING:  # heavy imports stay inside functions so `evalkit --help` is fast
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "RECIPE_VERSION",
    "SPECIAL_TOKENS",
    "CHAT_TEMPLATE",
    "EXTRACTION_SCHEMA",
    "DEFAULT_BUILD",
    "build_tokenizer",
    "general_examples",
    "copy_examples",
    "extraction_examples",
    "build_base",
    "demo_base",
    "shipped_base",
    "differs_from_shipped",
    "SHIPPED_BASE",
    "cache_root",
]

# Bump whenever anything below changes what build_base produces (cache keys include it).
RECIPE_VERSION = "3"

PAD, BOS, EOS, UNK = "<pad>", "<s>", "<|end|>", "<unk>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
# The order fixes the ids: pad=0, bos=1, eos=2 (<|end|> closes every turn), unk=3, roles 4-6.
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK, *ROLE_TOKENS)
_CHARS: tuple[str, ...] = tuple("\n\t" + "".join(chr(c) for c in range(32, 127)))

# No newlines between turns: every character is a token, and the markers already separate turns.
# The assistant turn (with its closing <|end|>, so the model learns to stop) sits inside
# {% generation %} so TRL's assistant_only_loss and return_assistant_tokens_mask find it.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>' }}{% generation %}{{ message['content'] }}{{ '<|end|>' }}{% endgeneration %}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>' }}{{ message['content'] }}{{ '<|end|>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

EXTRACTION_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "person",
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "city": {"type": "string", "minLength": 1},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
    },
    "required": ["name", "city", "age"],
    "additionalProperties": False,
}

# The defaults of build_base; demo_base caches exactly this build.
DEFAULT_BUILD: dict[str, Any] = {"steps": 2000, "seed": 0, "hidden": 128, "layers": 4}
COPY_FRACTION = 0.4  # share of the pretraining examples that are copying tasks
_HEAD_DIM = 32  # vLLM's CPU attention supports head sizes 32, 64, ...
_BATCH = 32
_LR = 3e-3
_MAX_POSITIONS = 512
_POOL_CAP = 32000  # distinct pretraining examples, cycled in a seeded order


# --------------------------------------------------------------------------------------------
# tokenizer


def _word_tokens() -> list[str]:
    """The whole-word tokens: the demo's names, cities and words, and the numbers 10-130, longest first."""
    words = set(_FIRST) | set(_LAST) | set(_CITIES) | set(_WORDS) | {w for pair in _CAPITALS for w in pair}
    words |= {str(i) for i in range(10, 131)}
    return sorted((w for w in words if len(w) > 1), key=lambda w: (-len(w), w))


def build_tokenizer() -> "PreTrainedTokenizerFast":
    """A character-level tokenizer (printable ASCII, tab, newline) with whole-word tokens for the
    demo's names, cities, words and numbers, special tokens and a chat template. Saves and loads as
    an ordinary Hugging Face tokenizer (``tokenizer.json``).
    """
    import re

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = _word_tokens()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + _CHARS + tuple(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # A listed word (longest first) is one token; every other character is its own ([\s\S]: newline too).
    pattern = "|".join(re.escape(w) for w in words) + r"|[\s\S]"
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    tok.decoder = decoders.Fuse()  # concatenate, no spaces between characters
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=list(ROLE_TOKENS),
        clean_up_tokenization_spaces=False,
        model_max_length=_MAX_POSITIONS,
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


# --------------------------------------------------------------------------------------------
# synthetic data

_WORDS = (
    "apple", "river", "stone", "cloud", "green", "light", "table", "chair", "bread", "water",
    "house", "plant", "music", "paper", "tiger", "horse", "sugar", "lemon", "ocean", "night",
    "sun", "cat", "dog", "map", "cup", "pen", "box", "sky", "tree", "bird", "fish", "moon",
    "star", "rain", "snow", "wind", "fire", "gold", "salt", "milk", "road", "door", "ship",
    "book", "lamp", "ring", "bell", "kite", "rose", "leaf", "wolf", "bear", "frog", "duck",
    "glass", "smile", "dream", "storm", "field", "train",
)
_CAPITALS = (
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Germany", "Berlin"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Peru", "Lima"),
    ("Canada", "Ottawa"), ("Norway", "Oslo"), ("Greece", "Athens"), ("Chile", "Santiago"),
    ("Poland", "Warsaw"), ("Cuba", "Havana"), ("India", "New Delhi"), ("Ireland", "Dublin"),
)
_FIRST = (
    "Ada", "Alan", "Grace", "Linus", "Marie", "Niels", "Rosa", "Emmy", "Carl", "Hedy", "Tim",
    "Katherine", "Dorothy", "Barbara", "John", "Edsger", "Frances", "Claude", "Sofia", "Omar",
    "Mei", "Ravi", "Lena", "Pablo", "Ines", "Yuki", "Tariq", "Olga", "Ken", "Nia",
)
_LAST = (
    "Lovelace", "Turing", "Hopper", "Torvalds", "Curie", "Bohr", "Franklin", "Noether", "Gauss",
    "Lamarr", "Berners", "Johnson", "Hodgkin", "Liskov", "McCarthy", "Dijkstra", "Allen",
    "Shannon", "Kovalevskaya", "Haddad", "Chen", "Patel", "Novak", "Garcia", "Silva", "Sato",
    "Khan", "Ivanova", "Thompson", "Okafor",
)
_CITIES = (
    "London", "Paris", "Berlin", "Tokyo", "Lima", "Oslo", "Cairo", "Madrid", "Rome", "Dublin",
    "Boston", "Chicago", "Seattle", "Toronto", "Sydney", "Nairobi", "Lagos", "Mumbai", "Seoul",
    "Prague", "Vienna", "Lisbon", "Athens", "Warsaw", "Denver", "Austin", "Zurich", "Milan",
)


def _task_echo(r: random.Random) -> tuple[str, str]:
    w = r.choice(_WORDS)
    return r.choice(("Repeat: {w}", "Say {w}", "Echo the word {w}")).format(w=w), w


def _task_upper(r: random.Random) -> tuple[str, str]:
    w = r.choice(_WORDS)
    return r.choice(("Uppercase: {w}", "Write {w} in capitals")).format(w=w), w.upper()


def _task_reverse(r: random.Random) -> tuple[str, str]:
    w = r.choice([w for w in _WORDS if len(w) <= 4])
    return r.choice(("Reverse: {w}", "Spell {w} backwards")).format(w=w), w[::-1]


def _task_add(r: random.Random) -> tuple[str, str]:
    a, b = r.randint(0, 9), r.randint(0, 9)
    return r.choice(("What is {a} + {b}?", "Add {a} and {b}", "{a}+{b}=")).format(a=a, b=b), str(a + b)


def _task_count(r: random.Random) -> tuple[str, str]:
    w = r.choice(_WORDS)
    return r.choice(("How many letters in {w}?", "Count the letters: {w}")).format(w=w), str(len(w))


def _task_capital(r: random.Random) -> tuple[str, str]:
    country, city = r.choice(_CAPITALS)
    return r.choice(("What is the capital of {c}?", "Capital of {c}?")).format(c=country), city


def _task_sort(r: random.Random) -> tuple[str, str]:
    letters = r.sample(string.ascii_lowercase, 3)
    return r.choice(("Sort the letters: {l}", "Put in order: {l}")).format(l=" ".join(letters)), " ".join(sorted(letters))


def _task_first(r: random.Random) -> tuple[str, str]:
    w = r.choice(_WORDS)
    return r.choice(("First letter of {w}?", "Which letter starts {w}?")).format(w=w), w[0]


def _task_quote(r: random.Random) -> tuple[str, str]:
    w = r.choice(_WORDS)
    return r.choice(("Quote: {w}", "Put {w} in quotes")).format(w=w), f'"{w}"'


def _task_fullname(r: random.Random) -> tuple[str, str]:
    first, last = r.choice(_FIRST), r.choice(_LAST)
    prompt = r.choice(("Full name: first={f} last={l}", "Join {f} and {l}", "Who is {l}, {f}?"))
    return prompt.format(f=first, l=last), f"{first} {last}"


_GENERAL_TASKS = {
    "echo": _task_echo,
    "upper": _task_upper,
    "reverse": _task_reverse,
    "add": _task_add,
    "count": _task_count,
    "capital": _task_capital,
    "sort": _task_sort,
    "first_letter": _task_first,
    "quote": _task_quote,
    "full_name": _task_fullname,
}


def _chat_line(id_: str, prompt: str, answer: str, tag: str) -> dict[str, Any]:
    return {
        "id": id_,
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
        "tags": [tag],
    }


def general_examples(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` short general-task chat lines (``{"id", "messages", "tags": [task]}``), deterministic
    in ``seed``. Tasks rotate so every task is equally represented.
    """
    r = random.Random(f"general:{seed}")
    names = list(_GENERAL_TASKS)
    out = []
    for i in range(n):
        task = names[i % len(names)] if i < len(names) else r.choice(names)
        prompt, answer = _GENERAL_TASKS[task](r)
        out.append(_chat_line(f"general-{seed}-{i}", prompt, answer, task))
    return out


_COPY_KEYS = ("color", "pet", "food", "team", "item", "count", "score", "tool", "band", "planet", "shape", "friend", "town", "size", "year")
_NUMBER_KEYS = frozenset({"count", "score", "size", "year"})


def _person(r: random.Random) -> str:
    return f"{r.choice(_FIRST)} {r.choice(_LAST)}"


def _copy_value(r: random.Random, key: str) -> Any:
    if key in _NUMBER_KEYS:
        return r.randint(0, 130)
    return r.choice((_person(r), r.choice(_CITIES), r.choice(_WORDS)))


def _task_copy(r: random.Random) -> tuple[str, str]:
    n = r.randint(0, 130)
    city = r.choice(_CITIES)
    s = r.choice((_person(r), city, f"{_person(r)} {city}", str(n), f"{_person(r)} {n}", f"{n} {city}"))
    return r.choice(("Copy: {s}", "Repeat exactly: {s}", "Say back: {s}")).format(s=s), s


def _task_kv_json(r: random.Random) -> tuple[str, str]:
    keys = r.sample(_COPY_KEYS, r.randint(2, 3))
    vals = {k: _copy_value(r, k) for k in keys}
    style = r.randint(0, 3)
    if style == 0:
        prompt = "; ".join(f"{k.capitalize()}: {v}" for k, v in vals.items())
    elif style == 1:
        prompt = "JSON: " + " ".join(f"{k}={v}" for k, v in vals.items())
    elif style == 2:
        prompt = " | ".join(f"{k} is {v}" for k, v in vals.items())
    else:
        prompt = ", ".join(f"{v} ({k})" for k, v in vals.items())
    return prompt, json.dumps(vals)


def _task_pick(r: random.Random) -> tuple[str, str]:
    keys = r.sample(_COPY_KEYS, 3)
    vals = {k: _copy_value(r, k) for k in keys}
    k = r.choice(keys)
    return "; ".join(f"{kk}={v}" for kk, v in vals.items()) + f". What is {k}?", str(vals[k])


_COPY_TASKS = {"copy": _task_copy, "kv_json": _task_kv_json, "pick": _task_pick}


def copy_examples(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` copying chat lines (copy a name / city / number; key=value -> JSON with keys other than
    the extraction task's; pick a field), deterministic in ``seed``. They teach the base to copy,
    never the extraction task itself (no name / city / age keys).
    """
    r = random.Random(f"copy:{seed}")
    names = list(_COPY_TASKS)
    out = []
    for i in range(n):
        task = names[i % len(names)]
        prompt, answer = _COPY_TASKS[task](r)
        out.append(_chat_line(f"copy-{seed}-{i}", prompt, answer, task))
    return out


def pretraining_examples(n: int, seed: int) -> list[dict[str, Any]]:
    """The base's pretraining pool: general tasks and (``COPY_FRACTION``) copying tasks, shuffled."""
    k = int(n * COPY_FRACTION)
    rows = general_examples(n - k, seed) + copy_examples(k, seed)
    random.Random(seed).shuffle(rows)
    return rows


_EXTRACTION_PROMPTS = (
    "Name: {name}; City: {city}; Age: {age}",
    "City: {city} | Name: {name} | Age: {age}",
    "{name}, {age}, lives in {city}.",
    "{name} ({age}) from {city}",
    "Extract as JSON: {name} is {age} and lives in {city}.",
    "Person: name={name} age={age} city={city}",
    "Meet {name} from {city}, aged {age}.",
)


def extraction_examples(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` extraction chat lines: free text about a person -> compact JSON (name, city, age) that
    validates against ``EXTRACTION_SCHEMA``. Deterministic in ``seed``; tag ``extraction``.
    """
    r = random.Random(f"extraction:{seed}")
    out = []
    for i in range(n):
        name = f"{r.choice(_FIRST)} {r.choice(_LAST)}"
        city, age = r.choice(_CITIES), r.randint(18, 90)
        prompt = r.choice(_EXTRACTION_PROMPTS).format(name=name, city=city, age=age)
        answer = json.dumps({"name": name, "city": city, "age": age})
        out.append(_chat_line(f"extraction-{seed}-{i}", prompt, answer, "extraction"))
    return out


# --------------------------------------------------------------------------------------------
# model


def _llama_config(tokenizer: Any, hidden: int, layers: int):
    from transformers import LlamaConfig

    if hidden % _HEAD_DIM:
        raise ValueError(f"hidden must be a multiple of {_HEAD_DIM}, got {hidden}")
    heads = hidden // _HEAD_DIM
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=_HEAD_DIM,
        max_position_embeddings=_MAX_POSITIONS,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )


def _encode(tokenizer: Any, lines: list[dict[str, Any]]) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per chat line; labels keep only the assistant turn (the generation mask)."""
    enc = tokenizer.apply_chat_template(
        [line["messages"] for line in lines],
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    out = []
    for ids, mask in zip(enc["input_ids"], enc["assistant_masks"]):
        out.append((list(ids), [t if m else -100 for t, m in zip(ids, mask)]))
    return out


def build_base(
    out_dir: str | Path,
    *,
    steps: int = DEFAULT_BUILD["steps"],
    seed: int = DEFAULT_BUILD["seed"],
    hidden: int = DEFAULT_BUILD["hidden"],
    layers: int = DEFAULT_BUILD["layers"],
    progress: bool = True,
) -> Path:
    """Build the tokenizer and a Llama config, pretrain on ``pretraining_examples`` (loss on the
    assistant turns), and save an ordinary HF checkpoint (float32 safetensors, config.json,
    generation_config.json with greedy defaults, tokenizer files with the chat template) in
    ``out_dir``. Deterministic: the same arguments give the same weights on the same machine.
    """
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # One thread: the same bytes whatever the machine's core count (reductions split differently
    # across threads), and for a model this small a second thread barely helps (on a shared,
    # oversubscribed CPU it was 3x slower). Restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _build(out, steps=steps, seed=seed, hidden=hidden, layers=layers, progress=progress)
    finally:
        torch.set_num_threads(threads)


def _build(out: Path, *, steps: int, seed: int, hidden: int, layers: int, progress: bool) -> Path:
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig, LlamaForCausalLM

    t0 = time.perf_counter()
    tokenizer = build_tokenizer()
    config = _llama_config(tokenizer, hidden, layers)

    # A pool of distinct-enough examples, cycled in a seeded order.
    pool = _encode(tokenizer, pretraining_examples(min(max(steps, 1) * _BATCH, _POOL_CAP), seed))
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.train()
    # fused: its own kernel (the same on every CPU); the for-each path takes sqrt from MKL VML, whose
    # results differ between Intel and AMD processors even with MKL_CBWR=COMPATIBLE
    optim = torch.optim.AdamW(model.parameters(), lr=_LR, betas=(0.9, 0.98), weight_decay=0.01, fused=True)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_at)
    order = torch.randperm(len(pool), generator=gen).tolist()
    cursor = 0
    bar = tqdm(total=steps, desc="pretraining demo base", unit="step", disable=not progress, file=sys.stderr)
    loss_ema = None
    for _ in range(steps):
        if cursor + _BATCH > len(order):
            order, cursor = torch.randperm(len(pool), generator=gen).tolist(), 0
        batch = [pool[i] for i in order[cursor : cursor + _BATCH]]
        cursor += _BATCH
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, lab) in enumerate(batch):  # right padding for training
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(lab)] = torch.tensor(lab)
            attention[row, : len(ids)] = 1
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        loss_ema = loss.item() if loss_ema is None else 0.9 * loss_ema + 0.1 * loss.item()
        bar.set_postfix(loss=f"{loss_ema:.3f}", refresh=False)
        bar.update(1)
    bar.close()

    model.eval()
    model.generation_config = GenerationConfig(
        do_sample=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=64,
    )
    from ._util.hf_bars import library_progress_bars

    with library_progress_bars(progress):  # transformers' "Writing model shards"
        model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    recipe = {
        "recipe": "evalkit.demo_model",
        "recipe_version": RECIPE_VERSION,
        "steps": steps,
        "seed": seed,
        "hidden": hidden,
        "layers": layers,
        "final_loss": loss_ema,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    # No timings in here: every file of the checkpoint is part of its fingerprint (models.fingerprint).
    (out / "evalkit_recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    if progress:
        print(f"demo base built in {time.perf_counter() - t0:.0f} s: {out}", file=sys.stderr)
    return out


# --------------------------------------------------------------------------------------------
# cache


def cache_root() -> Path:
    """``$EVALKIT_CACHE`` or ``~/.cache/evalkit``."""
    env = os.environ.get("EVALKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "evalkit"


def _is_complete(path: Path) -> bool:
    return all((path / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json", "evalkit_recipe.json"))


# The default build as evalkit ships it (package data): built by this recipe with the kernels pinned
# (evalkit._util.repro), so every x86-64 machine gets the same bytes, and no first run waits minutes.
SHIPPED_BASE = Path(__file__).resolve().parent / "demo_assets" / "base"
_CHECKPOINT_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                     "chat_template.jinja", "evalkit_recipe.json")


def _recipe_of(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "evalkit_recipe.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def shipped_base() -> Path | None:
    """The shipped default base, or None when it is missing or built by another recipe or build."""
    if not _is_complete(SHIPPED_BASE):
        return None
    recipe = _recipe_of(SHIPPED_BASE)
    wanted = {"recipe_version": RECIPE_VERSION, **DEFAULT_BUILD}
    return SHIPPED_BASE if all(recipe.get(k) == v for k, v in wanted.items()) else None


def differs_from_shipped(path: Path) -> list[str]:
    """The checkpoint files of ``path`` whose bytes differ from the shipped base's (all of them
    when there is no shipped base).
    """
    shipped = shipped_base()
    if shipped is None:
        return list(_CHECKPOINT_FILES)
    out = []
    for name in _CHECKPOINT_FILES:
        a, b = path / name, shipped / name
        if not (a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()):
            out.append(name)
    return out


def demo_base(cache_dir: Path | None = None, *, progress: bool = True, rebuild: bool = False) -> Path:
    """The default demo base: the shipped one (package data) unless ``rebuild``; otherwise built
    once by the recipe and cached at ``<cache>/demo-base-<hash>`` (cache: the argument, else
    ``$EVALKIT_CACHE``, else ``~/.cache/evalkit``). ``rebuild`` builds anew even when cached. Built
    in a temporary folder and renamed into place, so a build killed half-way never leaves a broken
    cache entry.
    """
    if not rebuild and cache_dir is None:
        shipped = shipped_base()
        if shipped is not None:
            return shipped
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    key = stable_hash({"recipe_version": RECIPE_VERSION, **DEFAULT_BUILD})
    final = root / f"demo-base-{key}"
    if _is_complete(final) and not rebuild:
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".demo-base-{key}-", dir=root))
    try:
        build_base(tmp, progress=progress, **DEFAULT_BUILD)
        if not _is_complete(tmp):
            raise RuntimeError(f"demo base build in {tmp} is incomplete")
        if final.exists() and (rebuild or not _is_complete(final)):
            shutil.rmtree(final, ignore_errors=True)  # replaced by the rebuild, or left broken by something else
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_complete(final):  # another process won the race with a good build: use it
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
