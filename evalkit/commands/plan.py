"""``evalkit plan``: the items each comparison gate needs to detect an effect (power analysis)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ._options import STORE_HELP


def register(app: typer.Typer) -> None:
    @app.command("plan")
    def plan_cmd(
        config: Path = typer.Argument(..., help="The eval.yaml to plan for."),
        effect: float = typer.Option(..., "--effect", help="The true difference to detect: a pass-rate difference (0.05 = five points), a shortfall below a min, or a mean difference."),
        power: float = typer.Option(0.8, "--power", help="The chance of detecting it (default 0.8)."),
        store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
        as_json: bool = typer.Option(False, "--json", help='Print {"effect", "power", "run", "suites": [{"suite", "gate", "model", "items_needed", ...}]}.'),
    ) -> None:
        """How many items each gate's comparison needs to detect --effect with --power, per suite and model.

        The models' noise comes from the latest finished run of this config in the store: the share of
        items on which candidate and baseline disagree (McNemar, for pass/fail comparisons), the spread
        of per-item differences (means, win rates). Without a stored run it states what it assumes.
        A gate whose suite has fewer items than it needs cannot tell an effect that size from noise.

        Examples:  evalkit plan eval.yaml --effect 0.05
                   evalkit plan eval.yaml --effect 0.1 --power 0.9 --json
        """
        from ..planning import plan_power, render

        plan = plan_power(config, effect=effect, power=power, store=store)
        typer.echo(json.dumps(plan.as_json(), indent=2) if as_json else render(plan))
