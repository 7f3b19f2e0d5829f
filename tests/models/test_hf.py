"""The hf backend on a real tiny Llama (tests/support/models.py) with real peft adapters."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalkit.errors import BackendUnavailable
from evalkit.models import GenerationRequest, open_backend
from evalkit.types import GenerationParams, Message, ModelSpec
from tests.support.models import demo_prompts, outputs_both_ways

pytestmark = pytest.mark.slow  # builds and runs a model (seconds, but real)

PROMPTS = (
    "Repeat: apple",
    "What is 3 + 4?",
    "Capital of France?",
    "Name: Ada Lovelace; City: London; Age: 36",
    "Sort the letters: c a b",
    "Hi",
)
GEN = GenerationParams(max_new_tokens=12)


def spec(base: Path, name: str = "base", adapter: Path | None = None, gen: GenerationParams = GEN, **options) -> ModelSpec:
    opts = {"dtype": "float32", **options}
    return ModelSpec(name=name, backend="hf", path=str(base), adapter=str(adapter) if adapter else None, generation=gen, options=opts)


def requests(s: ModelSpec, prompts=PROMPTS) -> list[GenerationRequest]:
    return [GenerationRequest(key=f"{s.name}-{i}", model=s, messages=(Message("user", p),)) for i, p in enumerate(prompts)]


def texts(completions) -> list[str]:
    assert all(c.error is None for c in completions), [c.error for c in completions]
    return [c.text for c in completions]


@pytest.fixture(scope="module")
def trio(tiny_base, tiny_adapters):
    """One backend: the base and both adapters on one loaded model."""
    specs = {"base": spec(tiny_base), "a": spec(tiny_base, "a", tiny_adapters["a"]), "b": spec(tiny_base, "b", tiny_adapters["b"])}
    backend = open_backend(list(specs.values()))
    yield backend, specs
    backend.close()


@pytest.fixture(scope="module")
def trio_outputs(trio):
    backend, specs = trio
    return {name: backend.generate(requests(s)) for name, s in specs.items()}


def test_base_generation_is_deterministic_across_calls_and_loads(tiny_base, trio, trio_outputs):
    backend, specs = trio
    again = backend.generate(requests(specs["base"]))
    assert texts(again) == texts(trio_outputs["base"])
    fresh = open_backend([spec(tiny_base)])
    try:
        assert texts(fresh.generate(requests(spec(tiny_base)))) == texts(trio_outputs["base"])
    finally:
        fresh.close()


def test_completion_fields(trio_outputs):
    for c in trio_outputs["base"] + trio_outputs["a"]:
        assert c.finish_reason in ("stop", "length")
        assert c.tokens_in > 5 and 1 <= c.tokens_out <= GEN.max_new_tokens
        assert c.latency_s > 0
        assert "<|" not in c.text and "<s>" not in c.text  # special tokens skipped
        if c.finish_reason == "length":
            assert c.tokens_out == GEN.max_new_tokens


@pytest.mark.parametrize("name", ["base", "a", "b"])
def test_batch_and_single_give_the_same_tokens(trio, trio_outputs, name):
    backend, specs = trio
    # The batch mixed prompts of different lengths (left padding); alone, none is padded.
    alone = [backend.generate([r])[0] for r in requests(specs[name])]
    assert [(c.text, c.tokens_out, c.finish_reason) for c in alone] == [
        (c.text, c.tokens_out, c.finish_reason) for c in trio_outputs[name]
    ]
    assert len({c.tokens_in for c in alone}) > 1  # the prompts really had different lengths


def test_each_adapter_changes_the_output(trio_outputs):
    base, a, b = (texts(trio_outputs[n]) for n in ("base", "a", "b"))
    assert sum(x != y for x, y in zip(base, a)) >= 2
    assert sum(x != y for x, y in zip(base, b)) >= 2
    assert sum(x != y for x, y in zip(a, b)) >= 2


@pytest.mark.parametrize("name", ["a", "b"])
def test_adapter_on_shared_base_equals_that_adapter_loaded_alone(tiny_base, tiny_adapters, trio_outputs, name):
    alone_spec = spec(tiny_base, name, tiny_adapters[name])
    backend = open_backend([alone_spec])
    try:
        assert texts(backend.generate(requests(alone_spec))) == texts(trio_outputs[name])
    finally:
        backend.close()


def test_interleaved_requests_come_back_in_request_order(trio, trio_outputs):
    backend, specs = trio
    mixed = []
    for i in range(len(PROMPTS)):
        for name in ("b", "base", "a"):
            mixed.append((name, i, requests(specs[name])[i]))
    seen: list[int] = []
    out = backend.generate([r for _, _, r in mixed], progress=seen.append)
    assert sum(seen) == len(mixed) and len(seen) >= 3  # one call per batch, per adapter group
    assert [c.text for c in out] == [trio_outputs[name][i].text for name, i, _ in mixed]


def test_chat_template_is_applied_to_the_prompt(tiny_base, trio):
    from transformers import AutoTokenizer

    backend, _ = trio
    tok = AutoTokenizer.from_pretrained(tiny_base)
    messages = (Message("system", "Be brief."), Message("user", "Repeat: cat"))
    ids = backend.prompt_ids(messages)
    assert tok.convert_ids_to_tokens(ids[:3]) == ["<s>", "<|system|>", "B"]
    assert tok.convert_ids_to_tokens(ids[-1:]) == ["<|assistant|>"]
    assert tok.decode(ids) == "<s><|system|>Be brief.<|end|><|user|>Repeat: cat<|end|><|assistant|>"
    c = backend.generate([GenerationRequest("k", backend.specs[0], messages)])[0]
    assert c.tokens_in == len(ids)


def test_stop_strings_cut_the_text_and_finish_with_stop(tiny_base, tiny_adapters):
    long_gen = GenerationParams(max_new_tokens=16)
    s = spec(tiny_base, "b", tiny_adapters["b"], gen=long_gen)
    backend = open_backend([s])
    try:
        free = backend.generate(requests(s))
        # Pick an output with at least 3 characters and stop on its 2nd-3rd characters.
        sample = next((r, c) for r, c in zip(requests(s), free) if len(c.text) >= 3)
        req, full = sample
        stop = full.text[1:3]
        cut = full.text.find(stop)
        stopped_spec = spec(tiny_base, "b", tiny_adapters["b"], gen=GenerationParams(max_new_tokens=16, stop=(stop, "\x00never")))
        out = backend.generate([GenerationRequest("s", stopped_spec, req.messages)])[0]
        assert out.text == full.text[:cut]
        assert out.finish_reason == "stop"
        assert out.tokens_out <= full.tokens_out
        # A short budget ends with finish_reason "length" and exactly max_new_tokens tokens.
        short = spec(tiny_base, "b", tiny_adapters["b"], gen=GenerationParams(max_new_tokens=2))
        long_one = next(r for r, c in zip(requests(s), free) if c.tokens_out > 2)
        out = backend.generate([GenerationRequest("l", short, long_one.messages)])[0]
        assert (out.finish_reason, out.tokens_out) == ("length", 2)
    finally:
        backend.close()


def test_sampling_is_reproducible_with_a_seed(tiny_base, tiny_adapters):
    hot = GenerationParams(max_new_tokens=12, temperature=1.5, seed=7)
    s = spec(tiny_base, "b", tiny_adapters["b"], gen=hot)
    backend = open_backend([s])
    try:
        first, second = texts(backend.generate(requests(s))), texts(backend.generate(requests(s)))
        assert first == second
    finally:
        backend.close()


def test_prompt_longer_than_the_context_is_a_per_request_error(trio):
    backend, specs = trio
    reqs = [
        GenerationRequest("long", specs["base"], (Message("user", "x" * 600),)),
        GenerationRequest("ok", specs["base"], (Message("user", "Hi"),)),
    ]
    long, ok = backend.generate(reqs)
    assert long.error and "context" in long.error
    assert ok.error is None


def test_load_in_4bit_generates(tiny_base):
    pytest.importorskip("bitsandbytes")
    s = spec(tiny_base, load_in_4bit=True, dtype="bfloat16")
    backend = open_backend([s])
    try:
        import bitsandbytes as bnb

        assert any(isinstance(m, bnb.nn.Linear4bit) for m in backend.model.modules())
        out = backend.generate(requests(s)[:2])
        assert all(c.error is None and c.tokens_out >= 1 for c in out)
        two = spec(tiny_base, "two", load_in_4bit=True, dtype="bfloat16", batch_size=2)  # continuous batching on 4-bit layers
        rows = backend.generate(requests(two))
        assert len(rows) == len(PROMPTS) and all(c.error is None and c.tokens_out >= 1 for c in rows)
    finally:
        backend.close()


def test_missing_checkpoint_is_backend_unavailable(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(BackendUnavailable) as e:
        open_backend([spec(missing)])
    assert str(missing) in str(e.value) and "not found" in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BackendUnavailable, match="config.json"):
        open_backend([spec(empty)])


def test_broken_weights_and_missing_adapter_are_backend_unavailable(tiny_base, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_base, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BackendUnavailable) as e:
        open_backend([spec(broken)])
    assert str(broken) in str(e.value)
    with pytest.raises(BackendUnavailable, match="adapter_config.json") as e:
        open_backend([spec(tiny_base, "x", tmp_path / "no-adapter")])
    assert "no-adapter" in str(e.value)



def test_batch_size_option_sets_the_batches(tiny_base, trio, trio_outputs):
    """Static batches hold batch_size rows; continuous batching never has more in flight; same texts."""
    backend, _ = trio
    small = spec(tiny_base, batch_size=2)
    seen: list[int] = []
    backend.continuous_batching = False
    try:
        out = backend.generate(requests(small), progress=seen.append)
    finally:
        backend.continuous_batching = True
    assert seen == [2, 2, 2]
    assert texts(out) == texts(trio_outputs["base"])
    in_flight: list[int] = []
    step = backend._decode_step

    def counting(cache, toks, mask):
        in_flight.append(int(toks.shape[0]))
        return step(cache, toks, mask)

    backend._decode_step = counting
    seen.clear()
    try:
        out = backend.generate(requests(small), progress=seen.append)
    finally:
        del backend._decode_step
    assert max(in_flight) == 2 and sum(seen) == len(PROMPTS)
    assert texts(out) == texts(trio_outputs["base"])


def test_batch_size_auto_gives_the_same_greedy_outputs_item_for_item():
    """batch_size: auto on the demo's committed base and its regression prompts: the batch the free
    memory holds (at most 64 rows, found from the model's shape), and exactly the greedy tokens of
    batch_size 8.
    """
    from evalkit.demo_model import shipped_base
    from evalkit.models.hf import HFBackend

    base = str(shipped_base())
    prompts = demo_prompts()
    gen = GenerationParams(max_new_tokens=24)
    outs = {}
    for size in (8, "auto"):
        spec = ModelSpec(name="m", backend="hf", path=base, generation=gen, options={"dtype": "float32", "batch_size": size})
        backend = HFBackend([spec])
        try:
            outs[size] = [c.text for c in backend.generate([GenerationRequest(f"k{i}", spec, p) for i, p in enumerate(prompts)])]
            if size == "auto":
                chosen = backend.auto_batch_size(64)
                assert 8 < chosen <= 64 and backend.auto_batch_size(64) == chosen  # found once per length bucket
                assert backend.auto_batch_size(4096) <= chosen  # longer sequences: no more rows
        finally:
            backend.close()
    assert outs["auto"] == outs[8] and len(outs[8]) == 50


@pytest.mark.parametrize("name", ["a", "b"])
def test_continuous_batching_gives_static_batch_tokens_on_each_adapter(tiny_base, tiny_adapters, trio, name):
    """An adapter's requests, two rows in flight, with a stop string: the static batches' texts, item for item."""
    backend, _ = trio
    s = spec(tiny_base, name, tiny_adapters[name], gen=GenerationParams(max_new_tokens=16, stop=(" ",)), batch_size=2)
    outs = outputs_both_ways(backend, "continuous_batching", requests(s, PROMPTS * 2))
    assert outs[True] == outs[False] and len(outs[True]) == 12


def test_continuous_batching_gives_the_demo_its_static_tokens_item_for_item():
    """The demo's committed base on its 50 regression prompts, batch 8, greedy, with and without stop
    strings: continuous batching (rows refilled as they end) gives static batching's tokens exactly.
    """
    from evalkit.demo_model import shipped_base
    from evalkit.models.hf import HFBackend

    prompts = demo_prompts()
    specs = [ModelSpec(name=f"m{i}", backend="hf", path=str(shipped_base()), generation=GenerationParams(max_new_tokens=48, stop=stop),
                       options={"dtype": "float32", "batch_size": 8}) for i, stop in enumerate(((), (",", "e ")))]
    backend = HFBackend(specs)
    steps: list[tuple[int, int]] = []  # (rows, columns held) at every decoding step
    step = backend._decode_step

    def counting(cache, toks, mask):
        steps.append((int(toks.shape[0]), int(mask.shape[1])))
        assert cache.get_seq_length() == mask.shape[1]  # the cache and the mask agree on every column
        return step(cache, toks, mask)

    backend._decode_step = counting
    try:
        outs = outputs_both_ways(backend, "continuous_batching", [GenerationRequest(f"{s.name}-{i}", s, p) for s in specs for i, p in enumerate(prompts)])
    finally:
        backend.close()
    assert outs[True] == outs[False] and len(outs[True]) == 100
    rows = [r for r, _ in steps]
    assert max(rows) == 8 and min(rows) < 8  # 8 rows at most; ended rows left the batch once nothing was left to start
    assert any(b[1] < a[1] for a, b in zip(steps, steps[1:]))  # columns every row masked were trimmed
    assert len({n for _, n, _ in outs[True]}) > 3  # rows ended at different steps: slots were refilled


def test_batch_size_must_be_a_positive_int_or_auto(tmp_path, capsys):
    from evalkit.cli import main

    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "suite.yaml").write_text("name: s\n")
    (tmp_path / "s" / "samples.jsonl").write_text('{"id": "a", "messages": [{"role": "user", "content": "hi"}]}\n')
    for bad in ("0", "big"):
        (tmp_path / "eval.yaml").write_text(f"models:\n  m: {{backend: hf, path: x, batch_size: {bad}}}\nsuites: [s]\n")
        assert main(["run", str(tmp_path / "eval.yaml"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert "batch_size" in err and len(err.splitlines()) == 1, err
