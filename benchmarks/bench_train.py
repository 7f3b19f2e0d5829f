"""Training benchmark: QLoRA vs 16-bit LoRA, and evalkit's trainer vs a tutorial-style TRL script.

    python benchmarks/bench_train.py                 # a few minutes on 2 idle CPU cores
    python benchmarks/bench_train.py --hidden 1024 --layers 12 --steps 6 --batch 2   # weights dominate more

Builds one random Llama-architecture checkpoint big enough that weights dominate memory (default
~40M parameters, bf16 on disk), one chat dataset, then runs each configuration in its own process
(so peak RSS is clean) on the same model and data:

  evalkit-qlora      evalkit.train.train, quantize: nf4 (its defaults; CPU: no gradient checkpointing)
  evalkit-lora16     evalkit.train.train, quantize: none (bf16 base)
  evalkit-qlora-gc   evalkit-qlora with gradient checkpointing on (the tutorial's setting)
  tutorial-qlora     the script most QLoRA tutorials show: BitsAndBytesConfig + prepare_model_for_kbit_training
                     + LoraConfig + SFTTrainer with defaults

Reported per run: median optimizer step time, wall and process CPU (first step left out; on a shared
machine the CPU seconds are the fairer comparison), peak RSS during the training
steps, RSS before the model was loaded (imports only), and the model's own memory footprint. Then
the ratios, measured side by side in this one invocation. Numbers from a shared machine are noisy:
read the ratios, not the absolute seconds. On a GPU the same script runs unchanged (memory is then
reported from torch.cuda.max_memory_allocated).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MODES = ("evalkit-qlora", "evalkit-lora16", "evalkit-qlora-gc", "tutorial-qlora")


# --- setup (parent process) ---------------------------------------------------------------------


def build_model(out: Path, hidden: int, layers: int, seed: int = 0) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from evalkit.demo_model import build_tokenizer

    tok = build_tokenizer()  # evalkit's character tokenizer, chat template with {% generation %}
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=int(hidden * 2.75) // 64 * 64,
        num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 256),
        max_position_embeddings=1024, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return n


def build_data(path: Path, n: int, seed: int = 0) -> None:
    import random

    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]
    with path.open("w") as fh:
        for _ in range(n):
            prompt = "Summarise: " + " ".join(rng.choice(words) for _ in range(rng.randint(3, 6)))
            answer = json.dumps({"n": len(prompt.split()) - 1})
            fh.write(json.dumps({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}) + "\n")


# --- measurement (child process) ----------------------------------------------------------------


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _PeakRSS:
    """Samples RSS in a thread while active (ru_maxrss would include loading the checkpoint)."""

    def __init__(self) -> None:
        self.peak = 0.0
        self.active = False
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop:
            if self.active:
                self.peak = max(self.peak, _rss_mib())
            time.sleep(0.05)

    def close(self) -> None:
        self._stop = True


def _step_callback(times: list[float], rss: _PeakRSS):
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            rss.active = True
            self.t = time.perf_counter()
            self.c = time.process_time()

        def on_step_end(self, args, state, control, **kw):
            times.append((time.perf_counter() - self.t, time.process_time() - self.c))

        def on_train_end(self, args, state, control, **kw):
            rss.active = False

    return Timer()


def run_evalkit(mode: str, base: str, data: str, steps: int, seq: int, batch: int, rss: _PeakRSS) -> dict:
    import evalkit.train.trainer as trainer_mod
    from evalkit.train import TrainConfig, train

    # Measure with the same timer as the tutorial run: wrap evalkit's monitor (no change to its behaviour).
    times: list[float] = []
    make = trainer_mod._make_monitor

    def with_timer(cfg, *, progress, warn):
        mon = make(cfg, progress=progress, warn=warn)
        timer = _step_callback(times, rss)
        for hook in ("on_step_begin", "on_step_end", "on_train_end"):
            orig = getattr(mon, hook)

            def both(args, state, control, _o=orig, _h=hook, **kw):
                getattr(timer, _h)(args, state, control, **kw)
                return _o(args, state, control, **kw)

            setattr(mon, hook, both)
        return mon

    trainer_mod._make_monitor = with_timer
    cfg = TrainConfig(
        base=base, train=data, val_fraction=0.0, quantize="none" if mode == "evalkit-lora16" else "nf4",
        lora={"r": 16, "alpha": 32, "dropout": 0.05}, max_steps=steps, batch_size=batch, max_seq_len=seq, seed=0,
        gradient_checkpointing=True if mode == "evalkit-qlora-gc" else None, dtype="bfloat16",
    )
    with tempfile.TemporaryDirectory() as out:
        res = train(cfg, out, progress=False, warn=lambda m: None)
    return {"times": times, "quantized_layers": res.candidate["metrics"]["quantized_layers"], "final_loss": res.candidate["metrics"]["final_train_loss"]}


def run_tutorial(base: str, data: str, steps: int, seq: int, batch: int, rss: _PeakRSS) -> dict:
    """What the usual QLoRA tutorial does, nearly line for line."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    bnb_config = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16
    )
    device_map = "auto" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(base, quantization_config=bnb_config, device_map=device_map)
    model = prepare_model_for_kbit_training(model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    dataset = load_dataset("json", data_files=data, split="train")
    args = SFTConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch, gradient_accumulation_steps=1,
        learning_rate=2e-4, max_steps=steps, logging_steps=1, max_length=seq, save_strategy="no", report_to="none",
        use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
    )
    times: list[float] = []
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config,
        callbacks=[_step_callback(times, rss)],
    )
    trainer.train()
    import bitsandbytes as bnb

    return {"times": times, "quantized_layers": sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()), "final_loss": None}


def child(mode: str, base: str, data: str, steps: int, seq: int, batch: int) -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import datasets
    import torch
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    rss_imports = _rss_mib()
    rss = _PeakRSS()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    if mode == "tutorial-qlora":
        r = run_tutorial(base, data, steps, seq, batch, rss)
    else:
        r = run_evalkit(mode, base, data, steps, seq, batch, rss)
    rss.close()
    times = r["times"]
    out = {
        "mode": mode,
        "steps": len(times),
        "step_s": statistics.median([t[0] for t in times[1:] or times]),
        "step_cpu_s": statistics.median([t[1] for t in times[1:] or times]),
        "peak_rss_mib": rss.peak,
        "rss_imports_mib": rss_imports,
        "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "quantized_layers": r["quantized_layers"],
        "total_s": time.perf_counter() - t0,
    }
    print("RESULT " + json.dumps(out))


# --- parent -------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.base, a.data, a.steps, a.seq, a.batch)
        return

    with tempfile.TemporaryDirectory(prefix="evalkit-bench-") as tmp:
        base, data = Path(tmp) / "base", Path(tmp) / "train.jsonl"
        n_params = build_model(base, a.hidden, a.layers)
        build_data(data, 200)
        print(f"model: random Llama, {n_params / 1e6:.0f}M parameters (hidden {a.hidden}, {a.layers} layers), bf16 checkpoint")
        print(f"run: {a.steps} steps, batch {a.batch}, max_seq_len {a.seq}, LoRA r=16 all-linear; one process per row\n", flush=True)
        results = {}
        for mode in a.modes.split(","):
            cmd = [sys.executable, __file__, "--child", mode, "--base", str(base), "--data", str(data),
                   "--steps", str(a.steps), "--seq", str(a.seq), "--batch", str(a.batch)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(f"{mode}: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}")
                continue
            r = json.loads(line[len("RESULT "):])
            results[mode] = r
            print(
                f"{mode:<18} step {r['step_s']:7.3f} s wall {r['step_cpu_s']:7.3f} s CPU   peak RSS {r['peak_rss_mib']:7.0f} MiB   "
                f"(imports only {r['rss_imports_mib']:5.0f} MiB)   4-bit layers {r['quantized_layers']:>3}   total {r['total_s']:5.1f} s",
                flush=True,
            )

    def ratio(a_: str, b_: str, key: str) -> str:
        if a_ in results and b_ in results and results[b_][key]:
            return f"{results[a_][key] / results[b_][key]:.2f}x"
        return "n/a"

    def over_imports(m: str) -> float:
        return results[m]["peak_rss_mib"] - results[m]["rss_imports_mib"]

    print("\nratios (same model, same data, same run):")
    if "evalkit-qlora" in results and "evalkit-lora16" in results:
        print(f"  QLoRA / 16-bit LoRA   peak RSS {ratio('evalkit-qlora', 'evalkit-lora16', 'peak_rss_mib')}"
              f"  (above imports: {over_imports('evalkit-qlora'):.0f} vs {over_imports('evalkit-lora16'):.0f} MiB,"
              f" {over_imports('evalkit-qlora') / max(1.0, over_imports('evalkit-lora16')):.2f}x)")
        print(f"  QLoRA / 16-bit LoRA   step time {ratio('evalkit-qlora', 'evalkit-lora16', 'step_s')} wall, "
              f"{ratio('evalkit-qlora', 'evalkit-lora16', 'step_cpu_s')} CPU")
    print(f"  evalkit / tutorial    step time {ratio('evalkit-qlora', 'tutorial-qlora', 'step_s')} wall, "
          f"{ratio('evalkit-qlora', 'tutorial-qlora', 'step_cpu_s')} CPU (each with its defaults)")
    print(f"  evalkit / tutorial    step time {ratio('evalkit-qlora-gc', 'tutorial-qlora', 'step_s')} wall, "
          f"{ratio('evalkit-qlora-gc', 'tutorial-qlora', 'step_cpu_s')} CPU (both with gradient checkpointing)")
    print(f"  evalkit / tutorial    peak RSS  {ratio('evalkit-qlora', 'tutorial-qlora', 'peak_rss_mib')}")


if __name__ == "__main__":
    main()
