"""Parity between the hf and vllm backends: same prompts, same weights, same tokens?

``check_parity(base, {name: adapter_dir}, prompts, max_new_tokens=...)`` greedy-decodes every prompt
with transformers + peft (the hf backend's stack) and with vLLM, for the base and each adapter, and
reports per model the share of prompts whose generated token ids are identical, and for each
mismatch the first position where they diverge. Both sides run in the same dtype (bf16 by default)
with the adapter kept in that dtype too: vLLM computes LoRA in the base dtype, while peft upcasts
adapters to fp32 unless told not to, which alone changes near-tied greedy choices.

A run can require parity (eval.yaml ``parity: {require: true, min_rate: 1.0, prompts: 8}``) before
it trusts vLLM's numbers; ``evalkit check-parity`` runs it from the command line.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import ConfigError
from .types import GenerationParams, Message, ModelSpec, Sample

__all__ = ["Divergence", "ModelParity", "ParityReport", "check_parity", "parity_options", "prompts_from_suite", "hf_reference_tokens", "first_divergence", "DEFAULT_PROMPTS", "as_messages"]

DEFAULT_PROMPTS: tuple[str, ...] = (
    "Say hello.",
    "What is 2 + 2?",
    "Name three colours.",
    "Write one sentence about the sea.",
    'Return a JSON object with a key "ok" set to true.',
    "Translate 'good morning' into French.",
    "List the days of the week.",
    "Summarise: the cat sat on the mat.",
)


@dataclass(frozen=True)
class Divergence:
    """One prompt whose outputs differ: where (0-based generated-token index) and what each produced."""

    prompt_index: int
    sample_id: str
    position: int
    hf_token: int | None  # None: hf stopped here
    vllm_token: int | None
    hf_text: str
    vllm_text: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ModelParity:
    model: str  # "base" or the adapter name
    adapter: str | None
    n: int
    identical: int
    text_identical: int
    mismatches: tuple[Divergence, ...] = ()

    @property
    def rate(self) -> float:
        return self.identical / self.n if self.n else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "adapter": self.adapter, "n": self.n, "identical": self.identical,
            "token_identical_rate": self.rate, "text_identical": self.text_identical,
            "mismatches": [m.as_dict() for m in self.mismatches],
        }


@dataclass(frozen=True)
class ParityReport:
    base: str
    dtype: str
    max_new_tokens: int
    models: tuple[ModelParity, ...]
    vllm_log: str | None = None
    timing: Mapping[str, float] = field(default_factory=dict, hash=False, compare=False)

    @property
    def rate(self) -> float:
        """Token-identical rate over every prompt of every model."""
        n = sum(m.n for m in self.models)
        return sum(m.identical for m in self.models) / n if n else 1.0

    @property
    def min_rate(self) -> float:
        return min((m.rate for m in self.models), default=1.0)

    def passed(self, min_rate: float = 1.0) -> bool:
        """Every model (base and each adapter) at or above ``min_rate``."""
        return self.min_rate >= min_rate

    def as_dict(self) -> dict[str, Any]:
        return {
            "base": self.base, "dtype": self.dtype, "max_new_tokens": self.max_new_tokens,
            "token_identical_rate": self.rate, "min_model_rate": self.min_rate,
            "models": [m.as_dict() for m in self.models], "vllm_log": self.vllm_log, "timing": dict(self.timing),
        }

    def lines(self) -> list[str]:
        """A console summary: one line per model, then the first divergences."""
        out = [f"parity hf vs vllm on {self.base} ({self.dtype}, greedy, {self.max_new_tokens} new tokens): "
               f"{self.rate:.1%} token-identical"]
        for m in self.models:
            out.append(f"  {m.model:<20} {m.identical}/{m.n} token-identical ({m.rate:.1%}), {m.text_identical}/{m.n} text-identical")
            for d in m.mismatches[:5]:
                out.append(f"    prompt {d.prompt_index} ({d.sample_id}): first divergence at token {d.position} "
                           f"(hf {d.hf_token}, vllm {d.vllm_token}): hf {d.hf_text[:40]!r} vs vllm {d.vllm_text[:40]!r}")
        return out


def as_messages(prompt: Sample | Sequence[Message] | str) -> tuple[str, tuple[Message, ...]]:
    """(sample id, messages) for a Sample, a message sequence, or a plain user prompt."""
    if isinstance(prompt, Sample):
        return prompt.id, tuple(prompt.messages)
    if isinstance(prompt, str):
        return "", (Message("user", prompt),)
    return "", tuple(prompt)


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
    """The first index where the sequences differ (a shorter one ends there); None if identical."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _trim(ids: Sequence[int], eos: set[int], max_new: int) -> list[int]:
    """Generated ids up to (not including) the first end-of-sequence token: whether a side reports
    the EOS id itself differs between libraries; where it stopped is what matters.
    """
    out = []
    for t in list(ids)[:max_new]:
        if t in eos:
            break
        out.append(int(t))
    return out


def _eos_ids(tokenizer: Any, base_path: str) -> set[int]:
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    try:
        from transformers import GenerationConfig

        g = GenerationConfig.from_pretrained(base_path).eos_token_id
        ids.update([g] if isinstance(g, int) else list(g or []))
    except OSError:
        pass
    return ids


def hf_reference_tokens(
    base_path: str,
    adapters: Mapping[str, Path],
    prompts: Sequence[tuple[int, ...] | list[int]],
    *,
    max_new_tokens: int,
    dtype: str = "bfloat16",
    device: str | None = None,
    progress: bool = False,
) -> dict[str, list[list[int]]]:
    """Greedy token ids from transformers + peft, one prompt at a time (no padding effects).

    Adapters are loaded with ``autocast_adapter_dtype=False`` so they compute in ``dtype`` as vLLM does.
    Returns {"base": [...], adapter_name: [...]}, each a list of generated ids per prompt.
    """
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM

    from ._util.hf_bars import library_progress_bars

    torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with library_progress_bars(progress):  # transformers' "Loading weights" bar
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch_dtype).to(dev)
    model.eval()
    names = list(adapters)
    if names:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0], autocast_adapter_dtype=False)
        for n in names[1:]:
            model.load_adapter(str(adapters[n]), adapter_name=n, autocast_adapter_dtype=False)
        model.eval()
    results: dict[str, list[list[int]]] = {}
    bar = tqdm(total=len(prompts) * (1 + len(names)), desc="parity: hf", disable=not progress, leave=False)
    try:
        for name in ["base", *names]:
            outs = []
            for ids in prompts:
                x = torch.tensor([list(ids)], device=dev)
                kw = dict(max_new_tokens=max_new_tokens, do_sample=False, attention_mask=torch.ones_like(x))
                with torch.no_grad():
                    if name == "base" and names:
                        with model.disable_adapter():
                            y = model.generate(input_ids=x, **kw)
                    else:
                        if names:
                            model.set_adapter(name)
                        y = model.generate(input_ids=x, **kw)
                outs.append([int(t) for t in y[0, x.shape[1]:].tolist()])
                bar.update(1)
            results[name] = outs
    finally:
        bar.close()
        del model
        gc.collect()
    return results


def check_parity(
    base_path: str | Path,
    adapters: Mapping[str, str | Path],
    prompts: Sequence[Sample | Sequence[Message] | str] = DEFAULT_PROMPTS,
    *,
    max_new_tokens: int = 32,
    dtype: str = "bfloat16",
    vllm_options: Mapping[str, Any] | None = None,
    vllm_backend: Any | None = None,
    device: str | None = None,
    progress: bool = True,
) -> ParityReport:
    """Greedy-decode ``prompts`` with hf (transformers + peft) and vLLM; compare token ids.

    ``adapters``: {name: adapter dir}; the base is always checked too. ``vllm_options`` are a model
    entry's vllm options (mode, url, python, server_args, gpu_memory_utilization, ...); a server started
    here runs in ``dtype`` (whatever the entry's own dtype) and is stopped afterwards. Pass ``vllm_backend`` (an
    open ``VLLMBackend`` on the same base, e.g. the run's) to reuse its server instead; note its dtype
    then decides vLLM's side. The hf side runs first and is freed before vLLM starts.
    """
    import time

    from .models.base import GenerationRequest
    from .models.vllm import VLLMBackend, load_tokenizer, render_prompt_ids

    base = str(base_path)
    if not Path(base).is_dir():
        raise ConfigError(f"base checkpoint directory not found: {base}")
    if dtype not in ("bfloat16", "float16", "float32"):
        raise ConfigError(f"dtype must be bfloat16, float16 or float32, got {dtype!r}")
    adapter_paths = {n: Path(p) for n, p in adapters.items()}
    for n, p in adapter_paths.items():
        if not (p / "adapter_config.json").is_file():
            raise ConfigError(f"adapter '{n}': no adapter_config.json in {p}")
    if not prompts:
        raise ConfigError("parity needs at least one prompt")
    items = [as_messages(p) for p in prompts]
    gen = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0)
    opts = {**dict(vllm_options or {}), "dtype": dtype}  # both sides in the same dtype, whatever the entry says
    specs = [ModelSpec(name="parity-base", backend="vllm", path=base, generation=gen, options=opts)]
    specs += [ModelSpec(name=f"parity-{n}", backend="vllm", path=base, adapter=str(p), generation=gen, options=opts) for n, p in adapter_paths.items()]
    own = vllm_backend is None
    # Running servers cost nothing to connect to: check them before the slow hf side. A server we
    # start ourselves comes after the hf model is freed (on a GPU both would not fit at once).
    remote = own and (opts.get("mode") == "url" or (opts.get("mode") is None and (opts.get("url") or opts.get("urls"))))
    t1 = time.perf_counter()
    backend = VLLMBackend(specs) if remote else vllm_backend
    t_connect = time.perf_counter() - t1
    try:
        tokenizer = load_tokenizer(base)
        prompt_ids = [render_prompt_ids(tokenizer, msgs) for _, msgs in items]
        eos = _eos_ids(tokenizer, base)
        t0 = time.perf_counter()
        hf = hf_reference_tokens(base, adapter_paths, prompt_ids, max_new_tokens=max_new_tokens, dtype=dtype, device=device, progress=progress)
        t_hf = time.perf_counter() - t0
        t1 = time.perf_counter() - t_connect
        if backend is None:
            backend = VLLMBackend(specs)
        elif not own:
            backend.add_specs(specs)
        requests = [GenerationRequest(key=f"{s.name}/{i}", model=s, messages=msgs) for s in specs for i, (_, msgs) in enumerate(items)]
        outs = backend.generate_detailed(requests)
        log = str(backend.log_path) if getattr(backend, "log_path", None) else None
    finally:
        if own and backend is not None:
            backend.close()
    t_vllm = time.perf_counter() - t1

    models = []
    names = ["base", *adapter_paths]
    for k, name in enumerate(names):
        identical = text_same = 0
        mismatches = []
        for i, (sid, _) in enumerate(items):
            out = outs[k * len(items) + i]
            if out.completion.error:
                raise ConfigError(f"parity: vLLM failed on prompt {i} for {name}: {out.completion.error}")
            h = _trim(hf[name][i], eos, max_new_tokens)
            v = _trim(out.token_ids, eos, max_new_tokens)
            h_text = tokenizer.decode(h, skip_special_tokens=True)
            text_same += h_text == out.completion.text
            pos = first_divergence(h, v)
            if pos is None:
                identical += 1
                continue
            mismatches.append(Divergence(
                prompt_index=i, sample_id=sid or str(i), position=pos,
                hf_token=h[pos] if pos < len(h) else None, vllm_token=v[pos] if pos < len(v) else None,
                hf_text=h_text, vllm_text=out.completion.text,
            ))
        models.append(ModelParity(model=name, adapter=str(adapter_paths[name]) if name != "base" else None, n=len(items),
                                  identical=identical, text_identical=text_same, mismatches=tuple(mismatches)))
    return ParityReport(base=base, dtype=dtype, max_new_tokens=max_new_tokens, models=tuple(models), vllm_log=log,
                        timing={"hf_s": round(t_hf, 2), "vllm_s": round(t_vllm, 2)})


def prompts_from_suite(folder: str | Path, n: int | None = None) -> list[Sample]:
    """The first ``n`` samples of a suite folder (their messages are the parity prompts)."""
    from .data.suites import load_suite

    suite = load_suite(folder)
    samples = list(suite.samples)
    return samples[:n] if n else samples


def parity_options(raw: Mapping[str, Any] | None, where: str = "parity"):
    """Validate eval.yaml's ``parity:`` block (unknown keys are errors). None when absent."""
    from pydantic import BaseModel, ConfigDict, Field, ValidationError

    class ParityOptions(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        require: bool = False  # fail the run (exit 2) when below min_rate; else a warning
        min_rate: float = Field(1.0, ge=0.0, le=1.0)
        prompts: int = Field(8, ge=1)  # the first N samples of the run's first suite
        max_new_tokens: int = Field(32, ge=1)
        dtype: str = Field("bfloat16", pattern="^(bfloat16|float16|float32)$")

    if raw is None:
        return None
    try:
        return ParityOptions.model_validate(dict(raw))
    except ValidationError as err:
        e = err.errors()[0]
        key = ".".join(str(x) for x in e["loc"])
        msg = f"unknown key '{key}'" if e["type"] == "extra_forbidden" else f"{key}: {e['msg']}"
        raise ConfigError(msg, where=where) from None


def parity_for_run(raw: Mapping[str, Any] | None, config_path: Path, specs: Sequence[ModelSpec], samples: Sequence[Sample],
                   progress: bool, warnings: list[str]) -> list[dict[str, Any]] | None:
    """eval.yaml `parity:`: hf vs vllm on the same prompts, per vLLM base, before any vLLM number is trusted.

    Below `min_rate` a run with `require: true` stops (exit 2, nothing generated); otherwise it warns.
    """
    import sys
    from collections import defaultdict

    from .errors import UserError

    opts = parity_options(raw, where=str(config_path))
    if opts is None:
        return None
    by_base: dict[str, list[ModelSpec]] = defaultdict(list)
    for s in specs:
        if s.backend == "vllm" and s.path:
            by_base[s.path].append(s)
    if not by_base:
        warnings.append("parity: no vllm model in this run; nothing to check")
        return None
    prompts = list(samples[: opts.prompts])
    reports = []
    for base, group in by_base.items():
        adapters = {s.name: s.adapter for s in group if s.adapter}
        server = next((s for s in group if not s.adapter), group[0])
        report = check_parity(base, adapters, prompts, max_new_tokens=opts.max_new_tokens, dtype=opts.dtype,
                              vllm_options=dict(server.options), progress=progress)
        for line in report.lines():
            print(line, file=sys.stderr)
        reports.append({**report.as_dict(), "min_rate_required": opts.min_rate, "passed": report.passed(opts.min_rate)})
        if not report.passed(opts.min_rate):
            worst = min(report.models, key=lambda m: m.rate)
            msg = (f"parity: vLLM agrees with transformers on {worst.rate:.0%} of prompts for '{worst.model}' "
                   f"(base {base}), below min_rate {opts.min_rate:.0%}")
            if opts.require:
                raise UserError(f"{msg}; the vLLM numbers are not trusted (parity.require)", where=str(config_path))
            warnings.append(msg)
    return reports
