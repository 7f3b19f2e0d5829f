"""Multiple-choice scoring throughput: evalkit's hf backend vs lm-evaluation-harness's ``HFLM.loglikelihood``,
side by side on the same items, the same model, the same batch size, in one process.

Two models: the shipped demo base (3.5 MB: per-batch overhead dominates) and a random-init Llama with
the same tokenizer, wider and deeper (``--hidden``, ``--layers``: the forward pass dominates). Each
scorer runs once to warm up, then ``--repeats`` times; the best time counts. The log-probabilities of
both are compared too (they must agree within 1e-4). Target: evalkit >= 1.0 x lm-eval's choices/s.

    python benchmarks/bench_choice.py [--items 200] [--choices 4] [--batch-size 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evalkit.demo_model import shipped_base  # noqa: E402

TARGET = 1.0
WORDS = "the cat sat on a mat and then it ran to the red house where people eat bread with jam every day".split()


def items(n: int, k: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        ctx = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(10, 60)))
        out.append((ctx, [" " + " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(1, 6))) for _ in range(k)]))
    return out


def wide_model(out: Path, hidden: int, layers: int) -> Path:
    """A random-init Llama with the demo base's tokenizer and config, made wider and deeper."""
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    base = shipped_base()
    cfg = AutoConfig.from_pretrained(base)
    cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers = hidden, hidden * 3, layers
    cfg.num_attention_heads = cfg.num_key_value_heads = hidden // 32
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    for f in Path(str(base)).iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(f, out / f.name)
    return out


def best_of(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def compare(path: Path, data: list[tuple[str, list[str]]], batch: int, repeats: int) -> float:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from evalkit.models.base import LoglikelihoodRequest
    from evalkit.models.hf import HFBackend
    from evalkit.types import ModelSpec

    spec = ModelSpec(name="m", backend="hf", path=str(path), options={"dtype": "float32", "batch_size": batch})
    ours = HFBackend([spec])
    reqs = [LoglikelihoodRequest(f"k{i}", spec, prompt=c, continuations=tuple(ch)) for i, (c, ch) in enumerate(data)]
    t_ours, got = best_of(lambda: ours.loglikelihood(reqs), repeats)
    ours.close()
    lm = HFLM(pretrained=str(path), device="cpu", batch_size=batch, dtype="float32")
    inst = [Instance("loglikelihood", {}, (c, x), i) for i, (c, ch) in enumerate(data) for x in ch]
    t_ref, ref = best_of(lambda: lm.loglikelihood(inst, disable_tqdm=True), repeats)
    flat = [v for c in got for v in c.loglikelihoods]  # type: ignore[union-attr]
    diff = max(abs(a - b[0]) for a, b in zip(flat, ref))  # type: ignore[arg-type]
    n = len(inst)
    ratio = t_ref / t_ours
    print(f"  evalkit:  {n} choices in {t_ours:.3f} s = {n / t_ours:,.0f} choices/s")
    print(f"  lm-eval:  {n} choices in {t_ref:.3f} s = {n / t_ref:,.0f} choices/s")
    print(f"  ratio (evalkit throughput / lm-eval's): {ratio:.2f}x (target >= {TARGET:g}); largest log-probability difference {diff:.1e}")
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--choices", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    a = ap.parse_args()
    if shipped_base() is None:
        sys.exit("the shipped demo base is missing")
    import platform

    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), None) \
        if Path("/proc/cpuinfo").is_file() else None
    print(f"machine: {cpu or platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}")
    data = items(a.items, a.choices)
    print(f"{a.items} items x {a.choices} choices, batch size {a.batch_size}, best of {a.repeats}")
    print(f"demo base (hidden 128, 4 layers, {Path(str(shipped_base())).name}):")
    ratios = [compare(Path(str(shipped_base())), data, a.batch_size, a.repeats)]
    with tempfile.TemporaryDirectory() as tmp:
        print(f"random-init Llama (hidden {a.hidden}, {a.layers} layers, the demo tokenizer):")
        ratios.append(compare(wide_model(Path(tmp) / "wide", a.hidden, a.layers), data, a.batch_size, a.repeats))
    print(f"lowest ratio: {min(ratios):.2f}x — {'meets' if min(ratios) >= TARGET else 'MISSES'} the target")


if __name__ == "__main__":
    main()
