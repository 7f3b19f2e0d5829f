"""``evalkit batches ...``: the provider batches a store knows (judges with ``batch:``), and cancelling one."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Optional

import typer

from .._util.text import terminal_safe
from ._options import STORE_HELP

batches_app = typer.Typer(
    name="batches",
    help=(
        "Provider batches (OpenAI Batch API, Anthropic Message Batches) that judges with `batch:` submitted. A run waits for its "
        "batches and resumes them after a crash; these commands show and manage them.\n\n"
        "Examples:  evalkit batches list\n"
        "           evalkit batches status batch_abc123\n"
        "           evalkit batches cancel batch_abc123"
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _when(t: float | None) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def _row(b: dict) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in b["counts"].items()) or "-"
    state = b["status"] + ("" if b["finished"] else " (in flight)")
    return terminal_safe(f"{b['id']:<28} {b['provider']:<9} {b['requests']:>8} {state:<24} {_when(b['created'])}  {counts}  {b['endpoint']}")


@batches_app.command("list")
def list_cmd(
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    active: bool = typer.Option(False, "--active", help="Only batches not read back yet (in flight, or killed while waiting)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
) -> None:
    """List the store's batches, oldest first: id, provider, requests, status, created, counts, endpoint.

    Example:  evalkit batches list --active
    """
    from ..store import open_existing_store

    with open_existing_store(store) as st:
        rows = st.list_batches(active_only=active)
    if as_json:
        for b in rows:
            typer.echo(json.dumps(b))
        return
    if not rows:
        typer.echo("no batches in this store" + (" in flight" if active else ""))
        return
    typer.echo(f"{'id':<28} {'provider':<9} {'requests':>8} {'status':<24} {'created (UTC)':<19}  counts  endpoint")
    for b in rows:
        typer.echo(_row(b))


def _one(store: Optional[str], batch_id: str) -> dict:
    from ..errors import UserError
    from ..store import open_existing_store

    with open_existing_store(store) as st:
        rows = st.list_batches(batch_id=batch_id)
    if not rows:
        raise UserError(f"no batch '{batch_id}' in this store (evalkit batches list shows them)", where="BATCH_ID")
    return rows[0]


def _client(b: dict):
    from ..models.batch import BatchClient

    return BatchClient(b["provider"], b["base_url"], b["api_key_env"])


def _provider_error(what: str, e: Exception):
    from ..errors import BackendUnavailable

    return BackendUnavailable(f"{what}: {type(e).__name__}: {' '.join(str(e).split())[:300]}")


@batches_app.command("status")
def status_cmd(
    batch_id: str = typer.Argument(..., help="A batch id (evalkit batches list)."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Ask the provider where a batch stands now (its status and request counts), and record it.

    Example:  evalkit batches status msgbatch_01abc
    """
    from ..store import open_existing_store

    b = _one(store, batch_id)
    try:
        status, counts = _client(b).retrieve(batch_id)
    except Exception as e:  # noqa: BLE001 - the provider's answer, in one line
        raise _provider_error(f"cannot ask {b['provider']} about batch {batch_id}", e) from None
    with open_existing_store(store) as st:
        st.update_batch(batch_id, status, {k: v for k, v in counts.items() if isinstance(v, int)})
    typer.echo(terminal_safe(f"{batch_id}: {status}; " + ", ".join(f"{k} {v}" for k, v in counts.items() if v is not None)))


@batches_app.command("cancel")
def cancel_cmd(
    batch_id: str = typer.Argument(..., help="A batch id (evalkit batches list)."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Cancel a batch at the provider. A later run sends its unanswered requests again (in a new batch).

    Example:  evalkit batches cancel batch_abc123
    """
    from ..store import open_existing_store

    b = _one(store, batch_id)
    try:
        status = _client(b).cancel(batch_id)
    except Exception as e:  # noqa: BLE001
        raise _provider_error(f"cannot cancel batch {batch_id} at {b['provider']}", e) from None
    with open_existing_store(store) as st:
        st.update_batch(batch_id, status)
    typer.echo(terminal_safe(f"{batch_id}: {status} (a later run sends its unanswered requests again)"))


def register(app: typer.Typer) -> None:
    app.add_typer(batches_app, name="batches")
