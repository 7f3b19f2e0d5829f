"""hf generation throughput: evalkit's hf backend vs lm-evaluation-harness's ``HFLM.generate_until``,
side by side in one process on the same model folder, the same chat-templated prompts, greedy, the
same maximum of new tokens and the same batch size.

The model is a random-initialised Llama (``--hidden``, ``--layers``) with the demo base's tokenizer and
chat template, as issue 29 measured. Three alternating rounds (evalkit, lm-eval, evalkit, ...), each
timed inside generation only (the model loaded beforehand); the medians count. Outputs are compared
item for item (both decode greedily: they must agree). Target: evalkit >= 1.2 x lm-eval's new tokens/s.

    python benchmarks/bench_generate.py [--prompts 64] [--max-new-tokens 64] [--batch-size 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evalkit.demo_model import shipped_base  # noqa: E402

TARGET = 1.2


def model_dir(out: Path, hidden: int, layers: int) -> Path:
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    base = Path(str(shipped_base()))
    cfg = AutoConfig.from_pretrained(base)
    cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers = hidden, hidden * 3, layers
    cfg.num_attention_heads = cfg.num_key_value_heads = hidden // 32
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    for f in base.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens", "generation_config")):
            shutil.copy(f, out / f.name)
    return out


def prompts(n: int) -> list[list[dict[str, str]]]:
    rows = [json.loads(x) for x in (ROOT / "suites" / "demo-regression" / "samples.jsonl").read_text().splitlines()]
    msgs = [[m for m in r["messages"] if m["role"] != "assistant"] for r in rows]
    return [msgs[i % len(msgs)] for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", default="8", help="rows per batch on both, or auto (each harness finds its own)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    a = ap.parse_args()
    import platform

    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from evalkit.models.base import GenerationRequest
    from evalkit.models.hf import HFBackend
    from evalkit.types import GenerationParams, Message, ModelSpec

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), None) \
        if Path("/proc/cpuinfo").is_file() else None
    with tempfile.TemporaryDirectory() as tmp:
        path = model_dir(Path(tmp) / "m", a.hidden, a.layers)
        convs = prompts(a.prompts)
        spec = ModelSpec(name="m", backend="hf", path=str(path), generation=GenerationParams(max_new_tokens=a.max_new_tokens),
                         options={"dtype": "float32", "batch_size": a.batch_size if a.batch_size == "auto" else int(a.batch_size)})
        ours = HFBackend([spec])
        reqs = [GenerationRequest(f"k{i}", spec, tuple(Message(m["role"], m["content"]) for m in c)) for i, c in enumerate(convs)]
        lm = HFLM(pretrained=str(path), device="cpu", batch_size=a.batch_size if a.batch_size == "auto" else int(a.batch_size), dtype="float32")
        contexts = [ours.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in convs]
        insts = [Instance("generate_until", {}, (ctx, {"until": [], "max_gen_toks": a.max_new_tokens, "do_sample": False}), i)
                 for i, ctx in enumerate(contexts)]

        def run_ours() -> tuple[float, int, list[str]]:
            t0 = time.perf_counter()
            outs = ours.generate(reqs)
            return time.perf_counter() - t0, sum(o.tokens_out for o in outs), [o.text for o in outs]

        def run_lm() -> tuple[float, int, list[str]]:
            t0 = time.perf_counter()
            outs = lm.generate_until(insts, disable_tqdm=True)
            dt = time.perf_counter() - t0
            return dt, sum(len(ours.tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outs), list(outs)

        run_ours()  # warm-up, both
        run_lm()
        t_ours, t_lm = [], []
        tok_ours = tok_lm = 0
        texts_ours: list[str] = []
        texts_lm: list[str] = []
        for _ in range(a.rounds):
            dt, tok_ours, texts_ours = run_ours()
            t_ours.append(dt)
            dt, tok_lm, texts_lm = run_lm()
            t_lm.append(dt)
        same = sum(1 for x, y in zip(texts_ours, texts_lm) if x.strip() == y.strip())
        m_ours, m_lm = statistics.median(t_ours), statistics.median(t_lm)
        print(f"machine: {cpu or platform.processor()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}")
        print(f"random-init Llama hidden {a.hidden}, {a.layers} layers; {a.prompts} chat prompts, greedy, max {a.max_new_tokens} new tokens, "
              f"batch size {a.batch_size}; medians of {a.rounds} alternating rounds, inside generation")
        print(f"  evalkit: {tok_ours} new tokens in {m_ours:.2f} s = {tok_ours / m_ours:,.0f} tok/s  (rounds {', '.join(f'{t:.2f}' for t in t_ours)})")
        print(f"  lm-eval: {tok_lm} new tokens in {m_lm:.2f} s = {tok_lm / m_lm:,.0f} tok/s  (rounds {', '.join(f'{t:.2f}' for t in t_lm)})")
        ratio = (tok_ours / m_ours) / (tok_lm / m_lm)
        print(f"  ratio {ratio:.2f}x (target >= {TARGET}); identical outputs on {same} of {len(texts_ours)} prompts")
        if a.batch_size == "auto":  # like for like too: lm-eval at the batch size evalkit's auto chose
            chosen = max(ours._auto_sizes.values())
            lm_fixed = HFLM(pretrained=str(path), device="cpu", batch_size=chosen, dtype="float32")
            lm = lm_fixed
            run_lm()
            fixed = [run_lm() for _ in range(a.rounds)]
            m_fixed = statistics.median(t for t, _, _ in fixed)
            print(f"  evalkit's auto chose {chosen} rows; lm-eval at batch size {chosen}: {fixed[0][1] / m_fixed:,.0f} tok/s "
                  f"-> evalkit {(tok_ours / m_ours) / (fixed[0][1] / m_fixed):.2f}x at the same rows per batch; "
                  f"identical outputs on {sum(1 for x, y in zip(texts_ours, fixed[0][2]) if x.strip() == y.strip())} of {len(texts_ours)}")


if __name__ == "__main__":
    main()
