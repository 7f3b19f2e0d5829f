"""``evalkit schema eval|train``: a JSON Schema (Draft 2020-12) of eval.yaml or train.yaml for editors.

Generated from the same pydantic models that validate the files, so it cannot drift from them: an
unknown key is an error in the editor as it is in evalkit (``additionalProperties: false``).
"""

from __future__ import annotations

import json
from typing import Any

import typer

KINDS = ("eval", "train")


def config_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of eval.yaml (``eval``) or train.yaml (``train``)."""
    if kind == "eval":
        from ..config import EvalConfig as model
    elif kind == "train":
        from ..train.config import TrainConfig as model  # type: ignore[assignment]
    else:
        from ..errors import UserError

        raise UserError(f"no schema '{kind}': choose one of {', '.join(KINDS)}", where="KIND")
    schema = model.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://evalkit.dev/schema/{kind}.json",
        "title": f"evalkit {kind}.yaml",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def register(app: typer.Typer) -> None:
    @app.command("schema")
    def schema_cmd(
        kind: str = typer.Argument(..., metavar="eval|train", help="Which file: eval (eval.yaml) or train (train.yaml)."),
    ) -> None:
        """Print the JSON Schema (Draft 2020-12) of eval.yaml or train.yaml, for editor completion and checks.

        Point VS Code's YAML extension at it (settings.json):
          "yaml.schemas": {"./.evalkit/eval.schema.json": ["eval*.yaml"]}

        Examples:  evalkit schema eval > .evalkit/eval.schema.json
                   evalkit schema train > .evalkit/train.schema.json
        """
        typer.echo(json.dumps(config_schema(kind), indent=2))
