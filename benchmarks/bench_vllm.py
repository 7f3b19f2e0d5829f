"""K LoRA adapters on one base: (a) hot-swapped on one vLLM server vs (b) merged and served one
after another, plus the hf backend (transformers + peft) on the same prompts.

    python benchmarks/bench_vllm.py                 # K=4, 16 prompts x 32 tokens, tiny Llama
    python benchmarks/bench_vllm.py --k 4 --prompts 32 --max-new-tokens 64 --json bench.json
    python benchmarks/bench_vllm.py --base models/qwen3-0.6b --adapters runs/c1 runs/c2 ...   # your own

Prints wall time of each strategy (server start-up included: that is what a run pays), generated
tokens per second during generation only, and the wall-time ratio (b)/(a). Greedy decoding; every
strategy gets the same prompts. Needs vllm (the CPU build works); on the CPU pass a small
--gpu-memory-utilization (it is the share of RAM for the KV cache) or leave --kv-cache-mb.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = [
    "Extract the name from: 'Contact Ada Lovelace at ada@example.com'.",
    "What is 17 + 25?",
    "Reverse the word 'benchmark'.",
    "List three fruits.",
    "Return JSON with keys a and b.",
    "Upper-case this: hello world",
    "Count the letters in 'evaluation'.",
    "Sort these numbers: 5, 3, 9, 1",
]


def build_tiny(out: Path, k: int, hidden: int, layers: int) -> tuple[Path, list[Path]]:
    """A random tiny Llama (head_dim 32) with a char tokenizer and chat template, and K LoRA adapters."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
    vocab = {t: i for i, t in enumerate(specials + [chr(c) for c in range(32, 127)] + ["\n"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()
    t = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", additional_special_tokens=specials[3:])
    t.chat_template = (
        "{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
    )
    base = out / "base"
    t.save_pretrained(base)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab), hidden_size=hidden, intermediate_size=hidden * 3, num_hidden_layers=layers,
        num_attention_heads=hidden // 32, num_key_value_heads=hidden // 32, max_position_embeddings=1024,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False, initializer_range=0.1,
    )
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.generation_config.eos_token_id = None  # random weights: never stop early, every run makes max tokens
    model.save_pretrained(base)
    adapters = []
    for i in range(k):
        torch.manual_seed(100 + i)
        pm = get_peft_model(LlamaForCausalLM.from_pretrained(base), LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], lora_dropout=0.0))
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.05)
        pm.save_pretrained(out / f"adapter_{i}")
        adapters.append(out / f"adapter_{i}")
    return base, adapters


def merge(base: Path, adapter: Path, out: Path) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16), str(adapter))
    model.merge_and_unload().save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def _specs(base: Path, adapters: list[Path | None], names: list[str], opts: dict, max_new: int):
    from evalkit.types import GenerationParams, ModelSpec

    gen = GenerationParams(max_new_tokens=max_new)
    return [ModelSpec(name=n, backend="vllm", path=str(base), adapter=str(a) if a else None, generation=gen, options=opts) for n, a in zip(names, adapters)]


def _requests(specs, prompts):
    from evalkit.models.base import GenerationRequest
    from evalkit.types import Message

    return [GenerationRequest(key=f"{s.name}/{i}", model=s, messages=(Message("user", p),)) for i, p in enumerate(prompts) for s in specs]


def run_vllm(specs, prompts) -> dict:
    from evalkit.models.vllm import VLLMBackend

    t0 = time.perf_counter()
    backend = VLLMBackend(specs)
    t_ready = time.perf_counter()
    try:
        outs = backend.generate(_requests(specs, prompts))
    finally:
        t_gen = time.perf_counter()
        backend.close()
    errors = [o.error for o in outs if o.error]
    if errors:
        raise SystemExit(f"vLLM errors: {errors[:3]}")
    tokens = sum(o.tokens_out for o in outs)
    return {"startup_s": t_ready - t0, "generate_s": t_gen - t_ready, "wall_s": time.perf_counter() - t0, "tokens": tokens, "requests": len(outs)}


def run_hf(base: Path, adapters: list[Path], prompts: list[str], max_new: int, batch: int) -> dict:
    """The hf backend if it is there; otherwise transformers + peft batched the way it does."""
    names = [f"cand{i}" for i in range(len(adapters))]
    try:
        from evalkit.models.hf import HFBackend  # noqa: F401
        from evalkit.types import GenerationParams, ModelSpec

        gen = GenerationParams(max_new_tokens=max_new)
        specs = [ModelSpec(name=n, backend="hf", path=str(base), adapter=str(a), generation=gen, options={"dtype": "bfloat16", "batch_size": batch}) for n, a in zip(names, adapters)]
        from evalkit.models import open_backend

        t0 = time.perf_counter()
        backend = open_backend(specs)
        t_ready = time.perf_counter()
        outs = backend.generate(_requests(specs, prompts))
        t_gen = time.perf_counter()
        backend.close()
        return {"impl": "evalkit hf backend", "startup_s": t_ready - t0, "generate_s": t_gen - t_ready, "wall_s": t_gen - t0, "tokens": sum(o.tokens_out for o in outs)}
    except ImportError:
        pass
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(base)
    tok.padding_side = "left"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16), str(adapters[0]), adapter_name=names[0])
    for n, a in zip(names[1:], adapters[1:]):
        model.load_adapter(str(a), adapter_name=n)
    model.eval()
    t_ready = time.perf_counter()
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False) for p in prompts]
    tokens = 0
    for i in range(0, len(texts), batch):
        chunk = texts[i : i + batch]
        enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        for n in names:  # one mixed batch per adapter group, as peft's adapter_names would run it
            with torch.no_grad():
                y = model.generate(**enc, max_new_tokens=max_new, do_sample=False, adapter_names=[n] * len(chunk), pad_token_id=tok.pad_token_id)
            tokens += int((y[:, enc["input_ids"].shape[1]:] != tok.pad_token_id).sum())
    t_gen = time.perf_counter()
    del model
    gc.collect()
    return {"impl": "transformers + peft (evalkit.models.hf not available)", "startup_s": t_ready - t0, "generate_s": t_gen - t_ready, "wall_s": t_gen - t0, "tokens": tokens}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=4, help="adapters on the base")
    ap.add_argument("--prompts", type=int, default=16, help="prompts per model")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=256, help="tiny model width (multiple of 32)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--base", type=Path, help="your own base checkpoint (with --adapters) instead of the tiny one")
    ap.add_argument("--adapters", type=Path, nargs="*", default=[])
    ap.add_argument("--kv-cache-mb", type=int, default=256, help="CPU build: KV cache size (--kv-cache-memory-bytes)")
    ap.add_argument("--gpu-memory-utilization", type=float, help="GPU: vLLM's share of GPU memory (replaces --kv-cache-mb)")
    ap.add_argument("--hf-batch", type=int, default=16)
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--work", type=Path, help="folder for the tiny model and merged checkpoints (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="evalkit-bench-vllm-"))
    work.mkdir(parents=True, exist_ok=True)
    t_build = time.perf_counter()
    if args.base:
        base, adapters = args.base, list(args.adapters)
        if not adapters:
            ap.error("--base needs --adapters")
    else:
        base, adapters = build_tiny(work, args.k, args.hidden, args.layers)
    merged = [merge(base, a, work / f"merged_{i}") for i, a in enumerate(adapters)]
    print(f"models ready in {time.perf_counter() - t_build:.1f}s ({len(adapters)} adapters, merged copies in {work})", file=sys.stderr)

    prompts = [PROMPTS[i % len(PROMPTS)] + ("" if i < len(PROMPTS) else f" (#{i})") for i in range(args.prompts)]
    opts: dict = {"dtype": "bfloat16", "log_dir": str(work / "logs"), "concurrency": 32}
    if args.gpu_memory_utilization is not None:
        opts["gpu_memory_utilization"] = args.gpu_memory_utilization
    else:
        opts["server_args"] = ["--kv-cache-memory-bytes", str(args.kv_cache_mb << 20)]
    names = [f"cand{i}" for i in range(len(adapters))]

    print("(a) hot-swap: one server, K adapters ...", file=sys.stderr)
    a = run_vllm(_specs(base, list(adapters), names, opts, args.max_new_tokens), prompts)
    print("(b) merged: one server per merged checkpoint, one after another ...", file=sys.stderr)
    parts = [run_vllm(_specs(m, [None], [n], opts, args.max_new_tokens), prompts) for m, n in zip(merged, names)]
    b = {k: sum(p[k] for p in parts) for k in ("startup_s", "generate_s", "wall_s", "tokens", "requests")}
    hf = None if args.skip_hf else run_hf(base, list(adapters), prompts, args.max_new_tokens, args.hf_batch)

    def tps(r: dict) -> float:
        return r["tokens"] / r["generate_s"] if r["generate_s"] else 0.0

    result = {
        "k": len(adapters), "prompts_per_model": len(prompts), "max_new_tokens": args.max_new_tokens,
        "model": str(base) if args.base else f"tiny llama hidden={args.hidden} layers={args.layers} bf16",
        "hot_swap": {**a, "tokens_per_s": tps(a)},
        "merged_sequential": {**b, "tokens_per_s": tps(b)},
        "wall_ratio_merged_over_hot_swap": b["wall_s"] / a["wall_s"],
        "hf": None if hf is None else {**hf, "tokens_per_s": tps(hf)},
    }
    print(f"K={result['k']} adapters x {len(prompts)} prompts x {args.max_new_tokens} new tokens on {result['model']}")
    print(f"{'strategy':<34}{'wall s':>9}{'start-up s':>12}{'generate s':>12}{'tokens':>8}{'tok/s':>9}")
    rows = [("(a) vLLM hot-swap, one server", result["hot_swap"]), ("(b) vLLM merged, K servers in turn", result["merged_sequential"])]
    if hf is not None:
        rows.append((f"hf ({'backend' if hf['impl'].startswith('evalkit') else 'transformers+peft'})", result["hf"]))
    for label, r in rows:
        print(f"{label:<34}{r['wall_s']:>9.1f}{r['startup_s']:>12.1f}{r['generate_s']:>12.1f}{r['tokens']:>8}{r['tokens_per_s']:>9.1f}")
    print(f"wall-time ratio (b)/(a): {result['wall_ratio_merged_over_hot_swap']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":  # vLLM's workers re-import the main module: keep the guard
    sys.exit(main())
