"""Merge a LoRA adapter into its base, in full precision, and check that nothing changed.

Never into 4-bit weights: rounding the merged delta into NF4 changes outputs (peft warns about it,
LLaMA-Factory refuses). The check generates greedily on a few prompts with the adapter applied
(unmerged) and with the merged checkpoint reloaded from disk, and reports how far they agree.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .._util.hf_bars import library_progress_bars
from ..errors import ConfigError, UserError, missing_extra
from .data import read_conversations
from .manifest import load_candidate, write_candidate

_FALLBACK_PROMPTS = (
    "Say hello.",
    "What is 2 + 3?",
    "Name a colour.",
    "Write one short sentence about the sea.",
)


@dataclass(frozen=True)
class PromptCheck:
    prompt: str
    adapter_text: str
    merged_text: str
    adapter_tokens: tuple[int, ...] = field(repr=False)
    merged_tokens: tuple[int, ...] = field(repr=False)

    @property
    def identical(self) -> bool:
        return self.adapter_tokens == self.merged_tokens

    @property
    def agreeing_tokens(self) -> int:
        """Tokens generated identically before the first difference."""
        n = 0
        for a, b in zip(self.adapter_tokens, self.merged_tokens):
            if a != b:
                break
            n += 1
        return n


@dataclass(frozen=True)
class MergeResult:
    out_dir: Path
    base: str
    adapter_dir: Path
    dtype: str
    checks: tuple[PromptCheck, ...] = ()
    adapter_changes_output: int = 0  # check prompts where base alone answers differently (the adapter does something)

    @property
    def prompts_checked(self) -> int:
        return len(self.checks)

    @property
    def identical(self) -> int:
        return sum(c.identical for c in self.checks)

    @property
    def token_agreement(self) -> float | None:
        """Share of generated tokens that match up to the first difference (1.0: every output identical)."""
        total = sum(max(len(c.adapter_tokens), len(c.merged_tokens)) for c in self.checks)
        if not self.checks:
            return None
        if total == 0:
            return 1.0
        return sum(c.agreeing_tokens for c in self.checks) / total

    @property
    def agree(self) -> bool:
        return self.identical == self.prompts_checked

    def summary(self) -> str:
        lines = [f"merged {self.adapter_dir} into {self.base} ({self.dtype}) -> {self.out_dir}"]
        if not self.checks:
            lines.append("  check skipped (check_prompts=0)")
            return "\n".join(lines)
        verdict = "outputs agree" if self.agree else "OUTPUTS DIFFER"
        lines.append(
            f"  check: {self.identical}/{self.prompts_checked} prompts identical (greedy), "
            f"token agreement {100 * (self.token_agreement or 0):.1f}%: {verdict}"
        )
        lines.append(f"  the adapter changes the base's output on {self.adapter_changes_output}/{self.prompts_checked} of these prompts")
        for c in self.checks:
            if not c.identical:
                lines.append(f"  differs on {c.prompt[:60]!r}: adapter {c.adapter_text[:60]!r} vs merged {c.merged_text[:60]!r}")
                break
        return "\n".join(lines)


def _check_prompts(candidate: dict[str, Any] | None, n: int) -> list[list[dict[str, str]]]:
    """Prompts from the candidate's own data (validation first), else a few generic ones."""
    out: list[list[dict[str, str]]] = []
    if candidate:
        data = candidate.get("data", {})
        for key in ("val", "train"):
            src = data.get(key) or {}
            path = src.get("path")
            if path and Path(path).is_file():
                try:
                    convs = read_conversations(path)
                except UserError:
                    continue
                for conv in convs:
                    out.append([dict(m) for m in conv[:-1]])
                    if len(out) >= n:
                        return out
    for p in _FALLBACK_PROMPTS:
        if len(out) >= n:
            break
        out.append([{"role": "user", "content": p}])
    return out[:n]


def _generate(model, tok, prompts: Sequence[list[dict[str, str]]], max_new_tokens: int) -> list[tuple[int, ...]]:
    import torch

    outs = []
    for msgs in prompts:
        enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        with torch.no_grad():
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            )
        outs.append(tuple(int(t) for t in gen[0, enc["input_ids"].shape[1] :]))
    return outs


def _base_dtype(base: Path, dtype: str) -> str:
    conf = json.loads((base / "config.json").read_text(encoding="utf-8"))
    if conf.get("quantization_config"):
        raise ConfigError(
            f"base: {base} is a quantized checkpoint; merging into quantized weights changes outputs. "
            "Merge into the original full-precision base (pass --base)"
        )
    if dtype != "auto":
        return dtype
    saved = conf.get("dtype") or conf.get("torch_dtype") or "float32"
    return saved if saved in ("bfloat16", "float16", "float32") else "float32"


def merge(
    adapter_dir: str | Path,
    out_dir: str | Path,
    *,
    check_prompts: int = 4,
    base: str | Path | None = None,
    dtype: str = "auto",
    max_new_tokens: int = 32,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
) -> MergeResult:
    """Merge ``adapter_dir`` into its base (full precision) and save it with the tokenizer to ``out_dir``.

    ``base`` defaults to the base recorded in candidate.json (else adapter_config.json). ``dtype``:
    ``auto`` keeps the base checkpoint's own dtype. Then ``check_prompts`` prompts are generated
    greedily with the adapter and with the reloaded merged checkpoint, and the agreement is returned.
    """
    adapter = Path(adapter_dir)
    out = Path(out_dir)
    conf_path = adapter / "adapter_config.json"
    if not conf_path.is_file():
        raise UserError(f"{adapter}: no adapter_config.json (expected a LoRA adapter directory)")
    if out.resolve() == adapter.resolve():
        raise UserError("--out must differ from the adapter directory")
    if (out / "config.json").exists() and not overwrite:
        raise UserError(f"{out} already holds a checkpoint; choose another --out or pass --force to replace it")
    candidate = load_candidate(adapter)
    if base is None:
        base = (candidate or {}).get("base", {}).get("path") or json.loads(conf_path.read_text(encoding="utf-8")).get(
            "base_model_name_or_path"
        )
    if not base or not Path(base).is_dir() or not (Path(base) / "config.json").is_file():
        raise UserError(f"{adapter}: base checkpoint not found ({base!r}); pass --base DIR")
    base_dir = Path(base)
    dtype_name = _base_dtype(base_dir, dtype)

    try:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise missing_extra("evalkit merge", "hf", e) from None
    with library_progress_bars(progress):  # transformers' "Loading weights" / "Writing model shards"
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_dtype = getattr(torch, dtype_name)
        say = (lambda msg: print(msg, file=sys.stderr)) if progress else (lambda msg: None)

        tok = AutoTokenizer.from_pretrained(str(base_dir))
        prompts = _check_prompts(candidate, check_prompts) if check_prompts > 0 else []
        say(f"loading {base_dir} ({dtype_name}) + adapter {adapter}")
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch_dtype, device_map={"": device})
        model = PeftModel.from_pretrained(model, str(adapter))
        model.eval()
        adapter_out = _generate(model, tok, prompts, max_new_tokens) if prompts else []
        base_out: list[tuple[int, ...]] = []
        if prompts:
            with model.disable_adapter():
                base_out = _generate(model, tok, prompts, max_new_tokens)
        say("merging (merge_and_unload) and saving")
        merged = model.merge_and_unload()
        out.mkdir(parents=True, exist_ok=True)
        merged.save_pretrained(str(out))
        tok.save_pretrained(str(out))
        del merged, model
        merged_out: list[tuple[int, ...]] = []
        if prompts:
            say(f"checking {len(prompts)} prompts against the merged checkpoint reloaded from {out}")
            reloaded = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch_dtype, device_map={"": device})
            reloaded.eval()
            merged_out = _generate(reloaded, tok, prompts, max_new_tokens)
            del reloaded
        checks = tuple(
            PromptCheck(
                prompt=p[-1]["content"],
                adapter_text=tok.decode(list(a), skip_special_tokens=True),
                merged_text=tok.decode(list(m), skip_special_tokens=True),
                adapter_tokens=a,
                merged_tokens=m,
            )
            for p, a, m in zip(prompts, adapter_out, merged_out)
        )
        result = MergeResult(
            out_dir=out,
            base=str(base_dir),
            adapter_dir=adapter,
            dtype=dtype_name,
            checks=checks,
            adapter_changes_output=sum(a != b for a, b in zip(adapter_out, base_out)),
        )
        if candidate is not None:
            # Keep the provenance with the merged checkpoint, so an eval of it still knows its training data.
            merged_cand = dict(candidate)
            merged_cand["merged"] = {
                "from_adapter": str(adapter.resolve()),
                "adapter_hash": candidate.get("adapter", {}).get("hash"),
                "dtype": dtype_name,
                "prompts_checked": result.prompts_checked,
                "identical": result.identical,
                "token_agreement": result.token_agreement,
                "adapter_changes_output": result.adapter_changes_output,
            }
            write_candidate(out, merged_cand)
        return result
