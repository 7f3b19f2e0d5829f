"""The vllm backend's offline mode (in-process ``vllm.LLM``) against vLLM's own ``LLM.generate`` on the same
prompts: the bound evalkit adds its blocks, rendering and bookkeeping to.

One engine, loaded once (a random tiny Llama with a char tokenizer, as ``bench_vllm.py`` builds). Each
round times (a) evalkit's path as ``evalkit run`` drives it: the requests in committed blocks of the
registry's chunk size, each block through ``VLLMBackend.generate`` (chat template, token ids,
``SamplingParams``, completions); (b) the bound: one ``LLM.generate`` call on the same token ids with
the same sampling parameters. Three alternating rounds, medians; outputs compared item for item.
Target: (a) within 10 % of (b).

    python benchmarks/bench_vllm_offline.py [--prompts 256] [--max-new-tokens 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

TARGET = 1.10


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.1, help="on the CPU build: the share of RAM for the KV cache")
    a = ap.parse_args()
    from bench_vllm import PROMPTS, build_tiny

    from evalkit.models.base import GenerationRequest
    from evalkit.models.registry import backend_info
    from evalkit.models.vllm import VLLMBackend, render_prompt_ids
    from evalkit.types import GenerationParams, Message, ModelSpec

    with tempfile.TemporaryDirectory() as tmp:
        base, _ = build_tiny(Path(tmp), 0, a.hidden, a.layers)
        spec = ModelSpec(name="base", backend="vllm", path=str(base), generation=GenerationParams(max_new_tokens=a.max_new_tokens),
                         options={"mode": "offline", "gpu_memory_utilization": a.gpu_memory_utilization})
        texts = [f"{PROMPTS[i % len(PROMPTS)]} (#{i})" for i in range(a.prompts)]
        reqs = [GenerationRequest(f"k{i}", spec, (Message("user", t),)) for i, t in enumerate(texts)]
        step = backend_info("vllm").chunk_size(spec)
        backend = VLLMBackend([spec])
        try:
            from vllm import SamplingParams
            from vllm.inputs import TokensPrompt

            llm = backend._llm
            ids = [render_prompt_ids(backend.tokenizer, r.messages) for r in reqs]
            params = SamplingParams(max_tokens=a.max_new_tokens, temperature=0, top_p=1.0, skip_special_tokens=True)

            def ours() -> tuple[float, list[str], int]:
                t0 = time.perf_counter()
                outs = [c for i in range(0, len(reqs), step) for c in backend.generate(reqs[i : i + step])]
                return time.perf_counter() - t0, [c.text for c in outs], sum(c.tokens_out for c in outs)

            def bound() -> tuple[float, list[str], int]:
                t0 = time.perf_counter()
                outs = llm.generate([TokensPrompt(prompt_token_ids=x) for x in ids], params, use_tqdm=False)
                return time.perf_counter() - t0, [o.outputs[0].text for o in outs], sum(len(o.outputs[0].token_ids) for o in outs)

            ours()  # warm-up, both
            bound()
            t_ours, t_bound = [], []
            for _ in range(a.rounds):
                dt, text_ours, tokens = ours()
                t_ours.append(dt)
                dt, text_bound, _ = bound()
                t_bound.append(dt)
        finally:
            backend.close()
    import platform

    import vllm

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), None) \
        if Path("/proc/cpuinfo").is_file() else None
    m_ours, m_bound = statistics.median(t_ours), statistics.median(t_bound)
    same = sum(x == y for x, y in zip(text_ours, text_bound))
    print(f"machine: {cpu or platform.processor()}; vllm {vllm.__version__}; random-init Llama hidden {a.hidden}, {a.layers} layers; "
          f"{a.prompts} prompts, greedy, {a.max_new_tokens} new tokens; medians of {a.rounds} alternating rounds")
    print(f"  evalkit offline (blocks of {step}): {m_ours:.2f} s = {tokens / m_ours:,.0f} tok/s (rounds {', '.join(f'{t:.2f}' for t in t_ours)})")
    print(f"  LLM.generate, one call:        {m_bound:.2f} s = {tokens / m_bound:,.0f} tok/s (rounds {', '.join(f'{t:.2f}' for t in t_bound)})")
    print(f"  evalkit / bound: {m_ours / m_bound:.2f}x time (target <= {TARGET}); identical outputs on {same} of {len(text_ours)}")


if __name__ == "__main__":
    main()
