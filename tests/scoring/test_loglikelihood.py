"""Log-likelihood scoring: multiple-choice items and perplexity texts on the hf backend, checked
against lm-evaluation-harness (the reference implementation, a test-only dependency) on the demo's
committed base: the same tokens, the same choice on every item, log-probabilities within 1e-4.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from evalkit.demo_model import shipped_base
from evalkit.models.base import LoglikelihoodRequest
from evalkit.models.loglik import encode_pair, rolling_windows
from evalkit.scoring.loglikelihood import choice_scores, perplexities, pick
from evalkit.types import Message, ModelSpec, Sample

BASE = shipped_base()
assert BASE is not None, "evalkit/demo_assets/base is missing or from another recipe"
WORDS = "the cat sat on a mat and then it ran to the red house where people eat bread with jam every day".split()


def _items(n: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """Contexts with and without trailing spaces (moved to the continuation, as lm-eval does), choices of
    one to four words with and without a leading space.
    """
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        ctx = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 30))) + (" " if i % 3 == 0 else "")
        choices = [("" if i % 3 == 0 else " ") + " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(1, 4))) for _ in range(4)]
        out.append((ctx, choices))
    return out


def _texts(seed: int = 1) -> list[str]:
    rnd = random.Random(seed)
    # the longest is past the base's 512-token context: several rolling windows
    return [" ".join(rnd.choice(WORDS) for _ in range(n)) for n in (5, 50, 200)]


@pytest.fixture(scope="module")
def hf_backend():
    from evalkit.models.hf import HFBackend

    spec = ModelSpec(name="base", backend="hf", path=str(BASE), options={"dtype": "float32", "batch_size": 4})
    backend = HFBackend([spec])
    yield backend, spec
    backend.close()


@pytest.fixture(scope="module")
def lm_eval_model():
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(BASE), device="cpu", batch_size=4, dtype="float32")


def test_tokenisation_is_lm_evals(hf_backend, lm_eval_model):
    backend, _ = hf_backend
    for ctx, choices in _items(12):
        for c in choices:
            assert encode_pair(backend.tokenizer, ctx, c) == tuple(lm_eval_model._encode_pair(ctx, c))


@pytest.mark.parametrize("length", [1, 5, 511, 512, 513, 1024, 1500])
def test_rolling_windows_are_lm_evals(length):
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    ids = list(range(1000, 1000 + length))
    ours = rolling_windows(ids, 1, 512)
    ref = [make_disjoint_window(w) for w in get_rolling_token_windows(token_list=ids, prefix_token=1, max_seq_len=512, context_len=1)]
    assert ours == [tuple(w) for w in ref]
    assert [t for _, cont in ours for t in cont] == ids  # every token predicted exactly once


def test_multiple_choice_parity_with_lm_eval(hf_backend, lm_eval_model):
    from lm_eval.api.instance import Instance

    backend, spec = hf_backend
    items = _items(20)
    ours = backend.loglikelihood([LoglikelihoodRequest(f"k{i}", spec, prompt=c, continuations=tuple(ch)) for i, (c, ch) in enumerate(items)])
    ref = lm_eval_model.loglikelihood([Instance("loglikelihood", {}, (c, x), i) for i, (c, ch) in enumerate(items) for x in ch], disable_tqdm=True)
    k = 0
    for (ctx, choices), got in zip(items, ours):
        assert got.error is None and got.loglikelihoods is not None and len(got.loglikelihoods) == len(choices)
        expected = [ref[k + j][0] for j in range(len(choices))]
        k += len(choices)
        for a, b in zip(got.loglikelihoods, expected):
            assert abs(a - b) < 1e-4, (ctx, choices, got.loglikelihoods, expected)
        sample = Sample(id="x", messages=(), prompt=ctx, choices=tuple(choices), answer=0)
        # the same pick as lm-eval's acc (argmax) and acc_norm (argmax of log-probability per character)
        assert pick(sample, got.loglikelihoods, "choice") == max(range(len(choices)), key=lambda j: (expected[j], -j))
        norm = [expected[j] / len(choices[j]) for j in range(len(choices))]
        assert pick(sample, got.loglikelihoods, "choice_norm") == max(range(len(choices)), key=lambda j: (norm[j], -j))


def test_perplexity_parity_with_lm_eval(hf_backend, lm_eval_model):
    from lm_eval.api.instance import Instance

    backend, spec = hf_backend
    texts = _texts()
    ours = backend.loglikelihood([LoglikelihoodRequest(f"t{i}", spec, text=t) for i, t in enumerate(texts)])
    ref = lm_eval_model.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)], disable_tqdm=True)
    assert ours[-1].tokens_in > 512, "the long text must span several windows"
    for got, expected in zip(ours, ref):
        assert got.loglikelihoods is not None
        assert abs(got.loglikelihoods[0] - expected) < 1e-4
    # word perplexity, byte perplexity, bits per byte as lm-eval's wikitext task aggregates them
    from lm_eval.api.metrics import bits_per_byte, weighted_perplexity

    m = perplexities((g.loglikelihoods[0], t) for g, t in zip(ours, texts))  # type: ignore[index]
    words = [(r, len(t.split())) for r, t in zip(ref, texts)]
    nbytes = [(r, len(t.encode())) for r, t in zip(ref, texts)]
    assert m["word_perplexity"] == pytest.approx(weighted_perplexity(words), rel=1e-6)
    assert m["bits_per_byte"] == pytest.approx(bits_per_byte(nbytes), rel=1e-6)
    assert m["byte_perplexity"] == pytest.approx(math.exp(-sum(ref) / sum(b for _, b in nbytes)), rel=1e-6)


def test_chat_context_is_the_generation_prompt(hf_backend):
    """With messages, each choice continues the chat template's generation prompt: the same tokens a
    generation starts from.
    """
    backend, spec = hf_backend
    msgs = (Message("user", "Say hi"),)
    got = backend.loglikelihood([LoglikelihoodRequest("c", spec, messages=msgs, continuations=("hi", "bye"))])[0]
    prompt_ids = backend.prompt_ids(msgs)
    text = backend.tokenizer.decode(prompt_ids)
    raw = backend.loglikelihood([LoglikelihoodRequest("r", spec, prompt=text, continuations=("hi", "bye"))])[0]
    assert got.loglikelihoods == pytest.approx(raw.loglikelihoods, abs=1e-6)


def test_a_batch_gives_what_one_row_gives(hf_backend):
    backend, spec = hf_backend
    items = _items(6, seed=5)
    together = backend.loglikelihood([LoglikelihoodRequest(f"k{i}", spec, prompt=c, continuations=tuple(ch)) for i, (c, ch) in enumerate(items)])
    for i, (c, ch) in enumerate(items):
        for j, x in enumerate(ch):
            alone = backend.loglikelihood([LoglikelihoodRequest("one", spec, prompt=c, continuations=(x,))])[0]
            assert alone.loglikelihoods[0] == pytest.approx(together[i].loglikelihoods[j], abs=1e-4)  # type: ignore[index]


def test_choice_scores_pick_and_fail():
    s = Sample(id="q", messages=(), prompt="2+2 =", choices=(" 4", " five hundred"), answer=1)
    # " five hundred" is less likely in total but more likely per character
    scores = choice_scores(s, [-2.0, -6.0])
    assert scores["choice"].passed is False and scores["choice"].details["pick"] == 0
    assert scores["choice_norm"].passed is True and scores["choice_norm"].details["pick"] == 1
    broken = choice_scores(s, [-1.0])
    assert all(sc.error and sc.passed is None for sc in broken.values())


def test_ties_go_to_the_first_choice():
    s = Sample(id="q", messages=(), prompt="x", choices=(" a", " b"), answer=1)
    assert pick(s, [-1.0, -1.0], "choice") == 0


def test_loglikelihood_sample_hashes_are_apart_from_generation_items(tmp_path: Path):
    a = Sample(id="a", messages=(), prompt="ctx", choices=(" x", " y"), answer=0)
    b = Sample(id="a", messages=(), prompt="ctx", choices=(" x", " z"), answer=0)
    t = Sample(id="a", messages=(), text="ctx")
    assert len({a.prompt_hash(), b.prompt_hash(), t.prompt_hash()}) == 3
    assert a.content_hash() != Sample(id="a", messages=(), prompt="ctx", choices=(" x", " y"), answer=1).content_hash()
