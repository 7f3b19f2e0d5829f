"""``evalkit noise``: how many items flip between runs of the same model (greedy noise, measured)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ._options import STORE_HELP


def register(app: typer.Typer) -> None:
    @app.command("noise")
    def noise_cmd(
        config: Path = typer.Argument(..., help="The eval.yaml whose model and suites to measure."),
        model: Optional[str] = typer.Option(None, "--model", help="The model to run again (default: the baseline)."),
        runs: int = typer.Option(2, "--runs", help="Runs to compare, the stored one included (at least 2)."),
        store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
        no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
    ) -> None:
        """Run a model again under changes that should not matter — batch size, request order, seed —
        and say which items' verdicts flipped, per suite and validator.

        Greedy outputs move with the batch they are computed in and with the hardware: before reading
        "3 regressions" as a regression, know how many items flip when nothing changed. The result is
        stored (a run named noise:<config name>) and later regressions and pass_rate-vs gates of this
        config quote it beside their own figures.

        Examples:  evalkit noise eval.yaml
                   evalkit noise eval.yaml --model cand --runs 3 --json
        """
        from ..noise import measure_noise, render

        report = measure_noise(config, model=model, runs=runs, store_path=store, progress=not no_progress)
        typer.echo(json.dumps(report.as_json(), indent=2) if as_json else render(report))
