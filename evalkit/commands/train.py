"""``evalkit train`` and ``evalkit merge``: QLoRA candidates and merged checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .._util.fs import out_dir_option


def train_cmd(
    config: Path = typer.Argument(..., help="train.yaml: base, train/val data, mix, quantize, lora, lr, epochs, ..."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", callback=out_dir_option, help="Folder for the adapter and candidate.json (default: runs/<candidate name>)."),
    force: bool = typer.Option(False, "--force", help="Replace an adapter already in --out."),
    reuse: bool = typer.Option(False, "--reuse", help="If --out holds a run with the same config, base and data, keep it and train nothing."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="Override quantize: nf4 (QLoRA) or none (plain LoRA)."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Override epochs."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Override max_steps (a smoke run)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Override the learning rate."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Override the seed."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar and loss table (warnings still print)."),
) -> None:
    """Train a LoRA adapter (QLoRA: 4-bit NF4 base) with TRL; write it and candidate.json.

    Loss is on assistant turns only, with the base model's chat template. Validation loss is
    computed every epoch (or every `eval_every` steps); training stops early when it stops
    improving for `patience` evaluations, and warns when train loss falls while validation loss
    rises. Runs on the CPU and on CUDA unchanged.

    Example train.yaml:

    \b
        base: models/qwen3-8b
        train: data/train.jsonl
        val: data/val.jsonl
        mix: {file: data/general.jsonl, fraction: 0.2}
        quantize: nf4
        lora: {r: 16, alpha: 32, dropout: 0.05}
        lr: 2.0e-4
        epochs: 3

    Example:  evalkit train train.yaml --out runs/cand1
    """
    from ..train import format_summary, load_train_config, train

    overrides = {k: v for k, v in {"quantize": quantize, "epochs": epochs, "max_steps": max_steps, "lr": lr, "seed": seed}.items() if v is not None}
    cfg = load_train_config(config, overrides)
    result = train(cfg, out, progress=not no_progress, overwrite=force, reuse=reuse)
    typer.echo(format_summary(result))


def merge_cmd(
    adapter: Path = typer.Argument(..., help="Adapter directory written by `evalkit train` (or any peft LoRA adapter)."),
    out: Path = typer.Option(..., "--out", "-o", callback=out_dir_option, help="Folder for the merged checkpoint (model + tokenizer)."),
    base: Optional[Path] = typer.Option(None, "--base", help="Full-precision base checkpoint (default: the one in candidate.json)."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (the base's own dtype), bfloat16, float16 or float32. Never 4-bit."),
    check: int = typer.Option(4, "--check", help="Prompts on which merged and adapter greedy outputs are compared (0: skip)."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", help="Tokens generated per check prompt."),
    force: bool = typer.Option(False, "--force", help="Replace a checkpoint already in --out."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Quieter output."),
) -> None:
    """Merge a LoRA adapter into its full-precision base and check the outputs did not change.

    The base is reloaded unquantized (a QLoRA adapter is never merged into 4-bit weights), the
    adapter merged with peft's merge_and_unload, and the result saved with the tokenizer. Then a
    few prompts are generated greedily with the adapter and with the merged checkpoint reloaded
    from disk; the command says whether they agree, and exits 1 when they do not.

    Example:  evalkit merge runs/cand1 --out runs/cand1-merged
    """
    from ..errors import UserError
    from ..train import merge

    if dtype not in ("auto", "bfloat16", "float16", "float32"):
        raise UserError(f"--dtype: expected auto, bfloat16, float16 or float32, got {dtype!r}")
    if check < 0:
        raise UserError("--check: must be 0 or more")
    result = merge(
        adapter, out, check_prompts=check, base=base, dtype=dtype, max_new_tokens=max_new_tokens, overwrite=force, progress=not no_progress
    )
    typer.echo(result.summary())
    raise typer.Exit(0 if result.agree or not result.checks else 1)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("merge")(merge_cmd)
