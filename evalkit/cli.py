"""The evalkit command line. Thin: parse, call one stage function, print.

Exit codes: 0 every gate passed, 1 a gate failed, 2 bad input or config (one line naming file and
line or key; no traceback). Bugs are allowed to traceback.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from . import __version__
from ._util.fs import out_dir_option
from ._util.limits import MAX_NEW_TOKENS_LIMIT
from ._util.text import redact_userinfo, terminal_safe
from .commands._options import STORE_HELP
from .errors import UserError

app = typer.Typer(
    name="evalkit",
    help=(
        "Decide whether a fine-tuned candidate ships: train it, run it against frozen suites, score it "
        "(validators, LLM judges), gate it with real statistics, review it blinded, report it.\n\n"
        "Start with `evalkit demo` (offline, CPU), then `evalkit run eval.yaml --out DIR`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"evalkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    pass


@app.command("run")
def run_cmd(
    config: Path = typer.Argument(..., help="eval.yaml: models, baseline, candidates, suites, generation, gates, judges."),
    out: Path = typer.Option(Path("reports/latest"), "--out", "-o", callback=out_dir_option, help="Folder for summary.json, items.jsonl, report.md, report.html, junit.xml."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Use only the first N samples of each suite (a smoke run)."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1, max=MAX_NEW_TOKENS_LIMIT, help="Override generation.max_new_tokens (every model's)."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS", help="Generate hf / offline-vLLM outputs on a Ray cluster: local (start one for this run), auto (the one `ray start` started here), HOST:PORT or ray://HOST:PORT. Replicas and resources: eval.yaml's ray: block."),
    early_stop: bool = typer.Option(False, "--early-stop", help="Draw items in a seeded random order, in blocks, and stop once every gate is decided on anytime-valid bounds (as eval.yaml's early_stop: true)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars (they go to stderr)."),
) -> None:
    """Evaluate every model on every suite, score, gate and write reports.

    Outputs are cached in the store by content hash: a rerun with nothing changed makes no model
    calls, and a run killed mid-way resumes where it stopped.

    Exit code 0: all gates passed. 1: a gate failed. 2: bad input or config.

    Examples:  evalkit run eval.yaml --out reports/run1
               evalkit run eval.yaml --ray auto --out reports/run1   (on a Ray cluster: pip install 'evalkit[ray]')

    After `evalkit demo`, its eval.yaml reruns with no model calls:
    evalkit run ~/.cache/evalkit/demo/eval.yaml --out reports/again
    """
    from .run import run_eval

    overrides: dict[str, Any] = {}
    if max_new_tokens is not None:
        overrides["generation_max_new_tokens"] = max_new_tokens
    if ray is not None:
        overrides["ray_address"] = ray
    if early_stop:
        overrides["early_stop"] = True
    result = run_eval(config, out, store_path=store, limit=limit, progress=not no_progress, overrides=overrides)
    typer.echo(result.console_summary)
    raise typer.Exit(result.exit_code)


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("reports/demo"), "--out", "-o", callback=out_dir_option, help="Folder for the demo's reports."),
    work: Optional[Path] = typer.Option(None, "--work", help="Folder for the demo's models and store (default: ~/.cache/evalkit/demo)."),
    base: Optional[Path] = typer.Option(None, "--base", help="A local Hugging Face checkpoint to run the same story on (e.g. a Qwen or Llama on a GPU) instead of building the tiny base."),
    rebuild_base: bool = typer.Option(False, "--rebuild-base", help="Build the tiny base by evalkit's recipe here (minutes) instead of using the shipped one, and say whether it came out byte-identical."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
) -> None:
    """The offline demo: one base, two QLoRA candidates, one evaluation; the gates pick the one to ship.

    Takes evalkit's shipped tiny base (or --base), trains `narrow` (the format task alone) and `mixed`
    (the same plus general examples), evaluates base and both adapters on a regression suite and a
    held-out split, and gates them: `narrow` forgets general tasks (the regression gate names them),
    `mixed` passes every gate. Needs no network and no GPU (about 2 minutes on 2 CPU cores the first
    time, seconds after: the candidates and every output are cached). With the tiny base the CPU
    kernels are pinned, so every x86-64 machine prints the same figures; the demo says so, or says in
    one line what differs. Prints the time per stage and the next commands. Exits 0 when the demo
    ran; the gate run it wraps exits 1 because one candidate fails, as `evalkit run` would.

    Examples:  evalkit demo --out reports/demo
               evalkit demo --rebuild-base          # build the base here too, and compare with the shipped one
               evalkit demo --base ~/models/Qwen2.5-0.5B-Instruct --work runs/demo-qwen --out reports/demo-qwen
    """
    from .demo import run_demo

    code = run_demo(out=out, work=work, base=base, progress=not no_progress, rebuild_base=rebuild_base)
    raise typer.Exit(code)


def _register_command_groups() -> None:
    from .commands import MODULES

    for name in MODULES:
        importlib.import_module(f".commands.{name}", __package__).register(app)


_register_command_groups()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="evalkit")
        # click returns (not raises) typer.Exit's code when standalone_mode is off
        return rv if isinstance(rv, int) else 0
    except UserError as e:
        # the message may quote untrusted text (an API error body, a file's content): no control
        # characters reach the terminal, no credentials in a URL
        typer.echo(f"error: {terminal_safe(redact_userinfo(e.one_line()), one_line=True)}", err=True)
        return 2
    except typer.Exit as e:
        return e.exit_code
    except KeyboardInterrupt:
        typer.echo("interrupted: results so far are in the store; rerun to resume", err=True)
        return 130
    except Exception as e:
        usage, aborts = _click_exception_types()
        if isinstance(e, usage):
            # a mistyped command or option: click's "No such option ... (Possible options: ...)" in one
            # line, with where to read more, instead of its usage block
            msg = e.format_message() if hasattr(e, "format_message") else str(e)
            path = str(getattr(getattr(e, "ctx", None), "command_path", "") or "")
            where = f" (see `{path} --help`)" if path else ""
            typer.echo(f"error: {terminal_safe(msg, one_line=True)}{where}", err=True)
            return 2  # bad input, whatever click's own code for it
        if isinstance(e, aborts):
            return 130
        raise


def _click_exception_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """The usage-error and abort classes of the click typer really uses.

    typer 0.29 vendors click as ``typer._click``: its exceptions are other classes than
    ``click.exceptions``'s, so both are caught (older typers use the plain click).
    """
    usage: list[type] = []
    aborts: list[type] = []
    for name in ("typer._click.exceptions", "typer.exceptions", "click.exceptions"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(mod, "ClickException"):
            usage.append(mod.ClickException)  # UsageError, BadParameter, NoSuchOption, FileError ...
        if hasattr(mod, "Abort"):
            aborts.append(mod.Abort)
    return tuple(usage), tuple(aborts)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
