"""``evalkit check-parity``: do the hf and vllm backends produce the same tokens?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .._util.fs import out_file_option
from ..errors import UserError


def _parse_adapters(values: list[str]) -> dict[str, Path]:
    adapters: dict[str, Path] = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--adapter {v!r}: expected NAME=DIR, e.g. --adapter cand1=runs/cand1")
        if name in adapters or name == "base":
            raise UserError(f"--adapter {v!r}: the name '{name}' is {'reserved' if name == 'base' else 'given twice'}")
        adapters[name] = Path(path)
    return adapters


def check_parity_cmd(
    base: Path = typer.Option(..., "--base", help="Base checkpoint directory (Hugging Face format, with tokenizer and chat template)."),
    adapter: List[str] = typer.Option([], "--adapter", "-a", help="NAME=DIR of a LoRA adapter on that base; repeat for several."),
    suite: Optional[Path] = typer.Option(None, "--suite", help="Take the prompts from this suite folder (its first -n samples)."),
    prompt: List[str] = typer.Option([], "--prompt", "-p", help="A user prompt; repeat for several (default: 8 built-in prompts)."),
    n: int = typer.Option(8, "--n", "-n", min=1, help="How many suite samples to use."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", min=1, help="Greedy tokens generated per prompt."),
    dtype: str = typer.Option("bfloat16", "--dtype", help="bfloat16 (default; what vLLM runs LoRA in), float16 or float32, on both sides."),
    min_rate: float = typer.Option(1.0, "--min-rate", min=0.0, max=1.0, help="Exit 1 when any model's token-identical rate is below this."),
    url: List[str] = typer.Option([], "--url", help="Use running vLLM server(s) instead of starting one (started with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)."),
    python: Optional[str] = typer.Option(None, "--python", help="Python interpreter of the environment vLLM lives in (default: this one)."),
    server_arg: List[str] = typer.Option([], "--server-arg", help="Extra argument for the vLLM server, e.g. --server-arg=--max-model-len=2048; repeat."),
    gpu_memory_utilization: Optional[float] = typer.Option(None, "--gpu-memory-utilization", help="vLLM's share of GPU memory (on the CPU build: of RAM for the KV cache; 0.1-0.4)."),
    json_out: Optional[Path] = typer.Option(None, "--json", callback=out_file_option, help="Also write the full report (every mismatch) as JSON here."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
) -> None:
    """Run the same prompts greedily through hf (transformers + peft) and vLLM, for the base and each
    adapter, and report the token-identical rate and, per mismatch, the first diverging token.

    Both sides use --dtype (bf16 by default, the adapter kept in bf16 too), so a difference is the
    engines', not the precision's. Near-tied logits can still flip a token: read the rate, not just
    pass/fail. Exit 0: every model at or above --min-rate; 1: below; 2: bad input or server.

    Example:

    \b
        evalkit check-parity --base models/base --adapter cand1=runs/cand1 \\
            --adapter cand2=runs/cand2 --suite suites/regression -n 8 --max-new-tokens 32
    """
    from ..parity import DEFAULT_PROMPTS, check_parity, prompts_from_suite

    adapters = _parse_adapters(adapter)
    if dtype not in ("bfloat16", "float16", "float32"):
        raise UserError(f"--dtype: expected bfloat16, float16 or float32, got {dtype!r}")
    if suite is not None and prompt:
        raise UserError("give --suite or --prompt, not both")
    prompts = prompts_from_suite(suite, n) if suite is not None else (list(prompt) or list(DEFAULT_PROMPTS))
    options: dict = {}
    if url:
        options.update(mode="url", urls=list(url))
    if python:
        options["python"] = python
    if server_arg:
        options["server_args"] = list(server_arg)
    if gpu_memory_utilization is not None:
        options["gpu_memory_utilization"] = gpu_memory_utilization
    report = check_parity(base, adapters, prompts, max_new_tokens=max_new_tokens, dtype=dtype, vllm_options=options, progress=not no_progress)
    for line in report.lines():
        typer.echo(line)
    if report.vllm_log:
        typer.echo(f"vLLM server log: {report.vllm_log}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report.as_dict(), indent=2), encoding="utf-8")
    ok = report.passed(min_rate)
    typer.echo(f"parity {'ok' if ok else 'FAILED'}: lowest model rate {report.min_rate:.1%} (required {min_rate:.1%})")
    raise typer.Exit(0 if ok else 1)


def register(app: typer.Typer) -> None:
    app.command("check-parity")(check_parity_cmd)
