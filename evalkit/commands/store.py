"""``evalkit store ...``: where the run history lives, and moving it (SQLite <-> PostgreSQL)."""

from __future__ import annotations

from typing import Optional

import typer

from ._options import STORE_HELP

store_app = typer.Typer(
    name="store",
    help=(
        "The store: generation and judgment caches, run history, accepted runs, review sessions. A SQLite file for one "
        "machine, or a PostgreSQL database a team's CI runners and reviewers share.\n\n"
        "\b\nExamples:\n"
        "  evalkit store info --store postgresql://ci@db.internal/evals\n"
        "  evalkit store copy .evalkit/store.db postgresql://ci@db.internal/evals"
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
)


@store_app.command("copy")
def copy_cmd(
    src: str = typer.Argument(..., help="The store to copy from: a SQLite file, sqlite:///PATH or postgresql://[user@]host[:port]/db."),
    dst: str = typer.Argument(..., help="The store to copy into (created when it is a new SQLite file; a PostgreSQL database must exist)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar (it goes to stderr)."),
) -> None:
    """Copy a whole history (caches, runs, accepted flags, review sessions and verdicts) into another store.

    Rows the destination already has (same key) are kept as they are, so a copy can be repeated or
    merge two histories. It runs in one transaction and is checked before the commit: every source
    row's key is in the destination and each table grew by exactly the rows it lacked, or nothing is
    written. A password comes from PGPASSWORD or ~/.pgpass, never from a log: URLs are printed
    without it.

    \b
    Examples:
      evalkit store copy .evalkit/store.db postgresql://ci@db.internal/evals
      evalkit store copy postgresql://ci@db.internal/evals backup.db
    """
    from .._util.progress import progress_bar
    from ..store import Store, copy_store, open_existing_store, store_counts

    with open_existing_store(src) as source, Store(dst) as target:
        typer.echo(f"copying {source.path} -> {target.path}", err=True)
        bar = progress_bar(sum(store_counts(source).values()), "copy", not no_progress, unit="row", unit_scale=True)
        try:
            result = copy_store(source, target, progress=bar.update)
        finally:
            bar.close()
    width = max(len(c.table) for c in result)
    typer.echo(f"{'table':<{width}}  {'source':>8}  {'copied':>8}  {'already there':>13}")
    for c in result:
        typer.echo(f"{c.table:<{width}}  {c.source:>8}  {c.copied:>8}  {c.present:>13}")
    typer.echo(f"checked: every source row is in the destination, each table grew by the rows it lacked "
               f"({sum(c.copied for c in result)} rows copied, {sum(c.present for c in result)} already there)")


@store_app.command("info")
def info_cmd(
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Where the store is, its dialect and schema version, and how many rows each table holds.

    Example:  evalkit store info --store postgresql://ci@db.internal/evals
    """
    from ..store import open_existing_store, store_counts

    with open_existing_store(store) as st:
        typer.echo(f"store:   {st.path}")
        typer.echo(f"dialect: {st.dialect}, schema {st.schema_version()}")
        for table, n in store_counts(st).items():
            typer.echo(f"  {table:<20} {n:>9}")


def register(app: typer.Typer) -> None:
    app.add_typer(store_app, name="store")
