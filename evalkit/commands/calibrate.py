"""``evalkit calibrate``: a judge scorer's mean, calibrated by human labels (prediction-powered inference)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ._options import STORE_HELP

RUN_HELP = "Run id, a unique prefix of one, 'latest', or the run's output folder (its summary.json names the run and its store)."


def register(app: typer.Typer) -> None:
    @app.command("calibrate")
    def calibrate_cmd(
        run: str = typer.Argument(..., help=RUN_HELP),
        scorer: str = typer.Option(..., "--scorer", help="The judge scorer to calibrate, as summary.json names it (judge.correctness)."),
        labels: Optional[Path] = typer.Option(None, "--labels", help="Human labels: a CSV with columns model,sample_id,value (and optionally suite)."),
        session: Optional[str] = typer.Option(None, "--session", help="A blinded review session of this run: its verdicts label a pairwise judge's win rate (A preferred 1, tie 0.5, B 0)."),
        confidence: float = typer.Option(0.95, "--confidence", min=0.5, max=0.999, help="Confidence of the intervals."),
        store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print {MODEL: {judge_mean, ppi_mean, ci, human_mean, human_ci, n_labeled, n_unlabeled}}."),
    ) -> None:
        """Estimate the mean human label of a judge scorer from a few human labels and the judge's
        scores on every item (PPI++: prediction-powered inference, power-tuned).

        The judge scored every item; people labelled some of them (at least 10 per model, on the
        rubric's scale). The calibrated mean is unbiased for what the humans would say on average
        over all items, whatever the judge's bias, and its interval is narrower than the labels alone
        give whenever the judge tracks the humans. Printed beside the judge's own mean and the
        human-only mean, per model.

        With --session, a blinded review's verdicts are the labels and --scorer is the pairwise judge
        (its win rate of the session's model A against model B is calibrated).

        Examples:  evalkit calibrate latest --scorer judge.correctness --labels labels.csv
                   evalkit calibrate reports/run1 --scorer judge.correctness --labels labels.csv --json
                   evalkit calibrate latest --scorer pairwise --session rs-1a2b3c4d5e
        """
        from ..calibration import calibrate, read_labels, render, session_labels
        from ..errors import UserError
        from ..store import locate_run, open_existing_store

        if (labels is None) == (session is None):
            raise UserError("give --labels FILE.csv or --session SESSION (one of them)", where="--labels")
        rows = read_labels(labels) if labels is not None else []  # a bad file is refused before the store is opened
        where, run_id = locate_run(run, store)
        vs = None
        with open_existing_store(str(where) if where is not None else None) as st:
            rec = st.get_run(run_id)
            if rec.summary is None:
                raise UserError(f"run {rec.run_id} has no summary (status: {rec.status}); it did not finish", where=st.path)
            items = st.run_items(rec.run_id)
            if session is not None:
                if not any(sc.kind == "pairwise" for it in items for n, sc in it.scores.items() if n == scorer):
                    raise UserError(f"--session labels are win / tie / loss verdicts: --scorer must be a pairwise judge's scorer, not '{scorer}'",
                                    where="--scorer")
                _, vs, rows = session_labels(st, session, rec.run_id)
        result = calibrate(items, rec.summary, scorer, rows, labels if labels is not None else f"session {session}", confidence=confidence, vs=vs)
        if as_json:
            typer.echo(json.dumps({r.model: r.as_json() for r in result}, indent=2))
        else:
            typer.echo(render(result, scorer))
