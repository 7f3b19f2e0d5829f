"""Run history commands: ``evalkit runs list``, ``evalkit compare``, ``evalkit report``, ``evalkit accept``,
``evalkit export``. They read the store only, so they work long after the run (no models needed).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from .._util.fs import out_dir_option, out_file_option
from .._util.text import terminal_safe
from ..errors import UserError
from ._options import STORE_HELP

runs_app = typer.Typer(
    name="runs",
    help="The run history kept in the store.\n\nExample:  evalkit runs list --store .evalkit/store.db",
    no_args_is_help=True,
    rich_markup_mode=None,
)


RUN_HELP = "Run id, a unique prefix of one, 'latest', or the run's output folder (its summary.json names the run and its store)."


def _open_store(path: Optional[str]):
    from ..store import open_existing_store

    return open_existing_store(path)


def _locate(run: str, store: Optional[str]) -> tuple[Optional[str], str]:
    """(store, run id) for a RUN argument that may be a run's output folder."""
    from ..store import locate_run

    where, run_id = locate_run(run, store)
    return (str(where) if where is not None else None), run_id


def _finished(store, run: str):
    from ..record import RunSummary

    rec = store.get_run(run)
    if rec.summary is None:
        raise UserError(f"run {rec.run_id} has no summary (status: {rec.status}); it did not finish", where=store.path)
    RunSummary.load(rec.summary)  # a summary this evalkit cannot read is refused here, in one line
    return rec


@runs_app.command("list")
def list_cmd(
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="Show the newest N runs."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
) -> None:
    """List runs, newest first: id, when, name, verdict, gates, accepted (*).

    Example:  evalkit runs list -n 10
    """
    with _open_store(store) as st:
        runs = st.list_runs(limit=limit)
    if as_json:
        for r in runs:
            s = r.record
            typer.echo(json.dumps({"run_id": r.run_id, "name": r.name, "created": r.created, "status": r.status, "reason": r.reason, "accepted": r.accepted,
                                   "passed": s.passed if s else None, "candidates": s.candidates if s else None, "gates": len(s.gates) if s else 0}))
        return
    if not runs:
        typer.echo("no runs in the store yet")
        return
    rows = []
    for r in runs:
        s = r.record
        gates = s.gates if s else []
        failed = len(s.blocking) if s else 0
        rows.append((
            ("*" if r.accepted else " ") + r.run_id,
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)),
            r.name or "",
            r.status,
            f"{len(gates) - failed}/{len(gates)}" if gates else "-",
            ",".join(s.candidates) if s else "",
            terminal_safe(r.reason or "", one_line=True)[:100] if r.status in ("failed", "interrupted") and not s else "",
        ))
    head = ("run (* accepted)", "created", "name", "status", "gates ok", "candidates", "why")
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for row in (head, *rows):
        typer.echo("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


@runs_app.command("show")
def show_cmd(
    run: str = typer.Argument("latest", help=RUN_HELP),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Print a stored run's verdict and gate table (what `evalkit run` printed).

    Example:  evalkit runs show latest
    """
    from ..record import RunSummary
    from ..report import console_summary

    store, run = _locate(run, store)
    with _open_store(store) as st:
        rec = _finished(st, run)
    typer.echo(console_summary(RunSummary.load(rec.summary or {"run_id": rec.run_id}), out_dir=rec.out_dir))


def accept_cmd(
    run: str = typer.Argument(..., help=RUN_HELP),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    undo: bool = typer.Option(False, "--undo", help="Remove the mark instead."),
    force: bool = typer.Option(False, "--force", help="Accept a run whose gates failed."),
) -> None:
    """Mark a run accepted: gates with `vs: last_accepted` compare against the newest accepted run
    (of the same name), and the HTML report's trend plots accepted runs.

    Example:  evalkit accept latest
    """
    store, run = _locate(run, store)
    with _open_store(store) as st:
        rec = _finished(st, run)
        if not undo and rec.status != "passed" and not force:
            raise UserError(f"run {rec.run_id} did not pass its gates (status: {rec.status}); add --force to accept it anyway")
        st.set_accepted(rec.run_id, not undo)
    typer.echo(f"{'unmarked' if undo else 'accepted'}: {rec.run_id}" + (f" ({rec.name})" if rec.name else ""))


def report_cmd(
    run: str = typer.Argument("latest", help=RUN_HELP),
    out: Path = typer.Option(..., "--out", "-o", callback=out_dir_option, help="Folder for summary.json, items.jsonl, report.md, report.html, junit.xml."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    regate: bool = typer.Option(
        False, "--regate",
        help="Evaluate the run's gates again from its stored config (picks up blinded-review results and a newer accepted run) and save the new verdict.",
    ),
) -> None:
    """Rebuild every report of a stored run from the store alone (no models, no judges).

    With --regate the exit code is the new verdict (0 pass, 1 a gate failed), so CI can gate on it;
    without, it is 0 whenever the reports were written.

    Example:  evalkit report latest --out reports/again
    """
    from ..record import RunSummary
    from ..report import console_summary, write_reports

    store, run = _locate(run, store)
    with _open_store(store) as st:
        rec = _finished(st, run)
        items = st.run_items(rec.run_id)
        summary = RunSummary.load(rec.summary or {"run_id": rec.run_id})
        if regate:
            summary = _regate(st, rec, items, summary)
        write_reports(out, summary, items, store=st)
    typer.echo(console_summary(summary, out_dir=out))
    if regate:
        raise typer.Exit(0 if summary.passed else 1)


def _regate(st, rec, items, summary):
    from pydantic import ValidationError

    from ..config import EvalConfig
    from ..gates import regate_run

    try:
        cfg = EvalConfig.model_validate(rec.config)
    except ValidationError as e:
        raise UserError(f"run {rec.run_id}'s stored config no longer validates: {e.errors()[0]['msg']}") from None
    record = regate_run(cfg.gates, summary, items, store=st)
    record.warnings.append(f"gates re-evaluated on {time.strftime('%Y-%m-%d %H:%M:%S')} (evalkit report --regate)")
    st.update_summary(rec.run_id, record.to_json(), "passed" if record.passed else "failed")
    return record


def compare_cmd(
    run_a: str = typer.Argument(..., help="The earlier run (A): id, prefix, 'latest', or its output folder."),
    run_b: str = typer.Argument(..., help="The later run (B): id, prefix, 'latest', or its output folder."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    model_a: Optional[str] = typer.Option(None, "--model-a", help="Model of run A to compare (default: every model name both runs have)."),
    model_b: Optional[str] = typer.Option(None, "--model-b", help="Model of run B to compare (default: the same name as --model-a)."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    """Per-item diff of two runs, with paired tests: McNemar exact for pass/fail scorers, Wilcoxon
    signed-rank for judge scores, and a paired bootstrap CI of B - A. Items pair up by suite,
    suite version and sample id.

    Example:  evalkit compare 20261120-0912 latest --model-a cand --model-b cand
    """
    from ..report.compare import compare_runs, render_compare_text

    store_a, run_a = _locate(run_a, store)
    store_b, run_b = _locate(run_b, store)
    with _open_store(store_a) as st:
        a = _finished(st, run_a)
        items_a = st.run_items(a.run_id)
    with _open_store(store_b) as st:  # two output folders may name two stores (a CI artifact's and yours)
        b = _finished(st, run_b)
        items_b = st.run_items(b.run_id)
    result = compare_runs(a, items_a, b, items_b, model_a=model_a, model_b=model_b)
    typer.echo(json.dumps(result, indent=2) if as_json else render_compare_text(result))


def export_cmd(
    run: str = typer.Argument("latest", help=RUN_HELP),
    out: Path = typer.Option(..., "--out", "-o", callback=out_file_option, help="File to write: .csv, .parquet or .jsonl."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="csv | parquet | jsonl (default: from the file's suffix)."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Export a run's items (one row per model x suite x sample, a value/passed/error column per
    scorer, prompt, reference and output) through pandas.

    Example:  evalkit export latest --out results.parquet
    """
    from ..report.exports import export_items, format_for

    format_for(out, fmt)  # bad format: fail before reading the store
    store, run = _locate(run, store)
    with _open_store(store) as st:
        rec = _finished(st, run)
        items = st.run_items(rec.run_id)
    export_items(items, out, fmt)
    typer.echo(f"wrote {len(items)} rows to {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")
    app.command("accept")(accept_cmd)
    app.command("report")(report_cmd)
    app.command("compare")(compare_cmd)
    app.command("export")(export_cmd)
