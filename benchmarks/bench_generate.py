"""hf generation throughput: evalkit's hf backend vs lm-evaluation-harness's ``HFLM.generate_until``,
side by side in one process on the same model folder, the same chat-templated prompts, greedy, the
same maximum of new tokens and the same batch size.

The model is a random-initialised Llama (``--hidden``, ``--layers``) with the demo base's tokenizer and
chat template, as issue 29 measured. Three alternating rounds (evalkit, lm-eval, evalkit, ...), each
timed inside generation only (the model loaded beforehand); the medians count. Outputs are compared
item for item (both decode greedily: they must agree). Target: evalkit >= 1.2 x lm-eval's new tokens/s.

Then the same prompts as whole processes, three alternating rounds each: ``evalkit run`` on a suite
of them (a fresh store every round, so nothing is cached) vs ``lm_eval`` on a task of the same
chat-templated contexts, both with the same batch size: wall time from exec to exit, and each
process's peak resident memory (``wait4``'s ``ru_maxrss``). Target: peak memory <= lm-eval's + 10 %.

    python benchmarks/bench_generate.py [--prompts 64] [--max-new-tokens 64] [--batch-size 8] [--rounds 3] [--no-whole-process]
"""

from __future__ import annotations

import argparse
import json
import os
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


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``cmd`` to its end: (wall seconds, its peak resident MiB).

    The peak is the kernel's high-water mark of the exec'd program (``VmHWM`` in /proc, read every
    20 ms until exit). ``wait4``'s ``ru_maxrss`` would not do: it keeps the benchmark's own resident
    size, inherited at fork, across the exec.
    """
    import subprocess
    import tempfile

    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        peak = 0
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                peak = max(peak, next(int(x.split()[1]) for x in status.read_text().splitlines() if x.startswith("VmHWM:")))
            except (OSError, StopIteration, ValueError):
                pass
            time.sleep(0.02)
        dt = time.perf_counter() - t0
        if proc.returncode not in (0, 1):  # evalkit exits 1 when a gate fails; this config has none
            err.seek(0)
            sys.exit(f"{cmd[0]} exited {proc.returncode}:\n{err.read().decode(errors='replace')[-3000:]}")
    return dt, peak / 1024


def whole_process(path: Path, convs: list[list[dict[str, str]]], contexts: list[str], tokens: int, a: argparse.Namespace, tmp: Path) -> None:
    """``evalkit run`` vs ``lm_eval`` on the same prompts, as processes: wall time and peak memory."""
    suite = tmp / "suite"
    suite.mkdir()
    (suite / "suite.yaml").write_text("name: bench\n")
    (suite / "samples.jsonl").write_text("".join(json.dumps({"id": f"p{i}", "messages": c}) + "\n" for i, c in enumerate(convs)))
    (tmp / "eval.yaml").write_text(json.dumps({
        "models": {"m": {"backend": "hf", "path": str(path), "dtype": "float32", "batch_size": a.batch_size if a.batch_size == "auto" else int(a.batch_size)}},
        "baseline": "m", "suites": [str(suite)], "generation": {"max_new_tokens": a.max_new_tokens, "temperature": 0, "stop": list(a.stop)},
    }))
    tasks = tmp / "tasks"
    tasks.mkdir()
    (tasks / "contexts.jsonl").write_text("".join(json.dumps({"context": c}) + "\n" for c in contexts))
    (tasks / "bench_gen.yaml").write_text(json.dumps({
        "task": "bench_gen", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(tasks / "contexts.jsonl")}},
        "test_split": "test", "output_type": "generate_until", "doc_to_text": "{{context}}", "doc_to_target": "",
        "generation_kwargs": {"until": list(a.stop), "max_gen_toks": a.max_new_tokens, "do_sample": False},
        "metric_list": [{"metric": "exact_match"}],
    }))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    bindir = Path(sys.executable).parent
    runs: dict[str, list[tuple[float, float]]] = {"evalkit": [], "lm-eval": []}
    for r in range(a.rounds):
        runs["evalkit"].append(_timed([str(bindir / "evalkit"), "run", str(tmp / "eval.yaml"), "--out", str(tmp / f"out{r}"),
                                       "--store", str(tmp / f"store{r}.db")], env))
        runs["lm-eval"].append(_timed([str(bindir / "lm_eval"), "--model", "hf", "--model_args", f"pretrained={path},dtype=float32",
                                       "--device", "cpu", "--batch_size", str(a.batch_size), "--tasks", "bench_gen",
                                       "--include_path", str(tasks)], env))
    med = {k: (statistics.median(t for t, _ in v), max(m for _, m in v)) for k, v in runs.items()}
    print(f"whole processes, {a.rounds} alternating rounds each (exec to exit; fresh store, nothing cached):")
    for k, (wall, mem) in med.items():
        print(f"  {k}: {wall:.1f} s = {tokens / wall:,.0f} new tok/s; peak RSS {mem:,.0f} MiB  "
              f"(rounds {', '.join(f'{t:.1f}' for t, _ in runs[k])})")
    ratio = med["lm-eval"][0] / med["evalkit"][0]
    mem_ratio = med["evalkit"][1] / med["lm-eval"][1]
    print(f"  whole process: evalkit {ratio:.2f}x lm-eval (target >= {TARGET}); peak memory {mem_ratio:.2f}x lm-eval's (target <= 1.10)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", default="8", help="rows per batch on both, or auto (each harness finds its own)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--model", choices=["random", "demo"], default="random",
                    help="random: a random-initialised Llama that never ends a reply early (every row decodes max-new-tokens, as issue 29 "
                         "measured); demo: the demo's trained base, whose replies end at eos at different lengths (where continuous "
                         "batching refills the rows a static batch leaves idle)")
    ap.add_argument("--stop", action="append", default=[], help="a stop string, on both (lm-eval's until); repeatable")
    ap.add_argument("--no-whole-process", action="store_true", help="only the in-process comparison")
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
        path = model_dir(Path(tmp) / "m", a.hidden, a.layers) if a.model == "random" else Path(str(shipped_base()))
        convs = prompts(a.prompts)
        spec = ModelSpec(name="m", backend="hf", path=str(path), generation=GenerationParams(max_new_tokens=a.max_new_tokens, stop=tuple(a.stop)),
                         options={"dtype": "float32", "batch_size": a.batch_size if a.batch_size == "auto" else int(a.batch_size)})
        ours = HFBackend([spec])
        reqs = [GenerationRequest(f"k{i}", spec, tuple(Message(m["role"], m["content"]) for m in c)) for i, c in enumerate(convs)]
        lm = HFLM(pretrained=str(path), device="cpu", batch_size=a.batch_size if a.batch_size == "auto" else int(a.batch_size), dtype="float32")
        contexts = [ours.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in convs]
        insts = [Instance("generate_until", {}, (ctx, {"until": list(a.stop), "max_gen_toks": a.max_new_tokens, "do_sample": False}), i)
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
        what = f"random-init Llama hidden {a.hidden}, {a.layers} layers" if a.model == "random" else "the demo's trained base (replies end at eos)"
        print(f"{what}; {a.prompts} chat prompts, greedy, max {a.max_new_tokens} new tokens, "
              f"batch size {a.batch_size}; medians of {a.rounds} alternating rounds, inside generation")
        # Both generate the same replies (compared below): the tokens each reply took, eos or stop included,
        # counted once (evalkit's count), over each harness's own time. lm-eval's text re-tokenised
        # (tok_lm) drops the eos and the cut stop strings, so it is shown, not used.
        print(f"  evalkit: {tok_ours} new tokens in {m_ours:.2f} s = {tok_ours / m_ours:,.0f} tok/s  (rounds {', '.join(f'{t:.2f}' for t in t_ours)})")
        print(f"  lm-eval: the same replies in {m_lm:.2f} s = {tok_ours / m_lm:,.0f} tok/s  (rounds {', '.join(f'{t:.2f}' for t in t_lm)}; "
              f"{tok_lm} tokens in its texts re-tokenised)")
        ratio = m_lm / m_ours
        print(f"  ratio {ratio:.2f}x (target >= {TARGET}); identical outputs on {same} of {len(texts_ours)} prompts")
        if a.batch_size == "auto":  # like for like too: lm-eval at the batch size evalkit's auto chose
            chosen = max(ours._auto_sizes.values())
            lm_fixed = HFLM(pretrained=str(path), device="cpu", batch_size=chosen, dtype="float32")
            lm = lm_fixed
            run_lm()
            fixed = [run_lm() for _ in range(a.rounds)]
            m_fixed = statistics.median(t for t, _, _ in fixed)
            print(f"  evalkit's auto chose {chosen} rows; lm-eval at batch size {chosen}: {tok_ours / m_fixed:,.0f} tok/s "
                  f"-> evalkit {m_fixed / m_ours:.2f}x at the same rows per batch; "
                  f"identical outputs on {sum(1 for x, y in zip(texts_ours, fixed[0][2]) if x.strip() == y.strip())} of {len(texts_ours)}")
        if not a.no_whole_process:
            del ours, lm
            import gc

            gc.collect()
            whole_process(path, convs, contexts, tok_ours, a, Path(tmp))


if __name__ == "__main__":
    main()
