"""File-system helpers shared by every stage: file modes and output paths checked before work."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError


def default_file_mode() -> int:
    """The mode a plain ``open(..., "w")`` would give a new file under the current umask.

    ``tempfile.mkstemp`` creates 0600 files; reports renamed from such temp files would be unreadable
    to the team that reads them, so atomic writers chmod to this.
    """
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def check_output_dir(path: str | Path, what: str = "--out") -> Path:
    """A folder evalkit will write into: fine if it is a folder or can be made; refused (before any
    work) when it, or a parent, is an existing file, or when it cannot be written.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{what}: {p} is an existing file, not a folder; choose a folder path")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{what}: {parent} is a file, so {p} cannot be a folder")
            if not p.exists() and not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(f"{what}: cannot create {p}: {parent} is not writable")
            break
    if p.is_dir() and not os.access(p, os.W_OK | os.X_OK):
        raise UserError(f"{what}: folder {p} is not writable")
    return p


def check_output_file(path: str | Path, what: str = "--out") -> Path:
    """A file evalkit will write: refused when it is an existing folder or its parent is a file."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{what}: {p} is a folder; give a file path")
    check_output_dir(p.parent if str(p.parent) else Path("."), what)
    return p


def out_dir_option(value: Path | None) -> Path | None:
    """Typer callback for an option naming a folder to write: checked while parsing, before any work."""
    return None if value is None else check_output_dir(value)


def out_file_option(value: Path | None) -> Path | None:
    """Typer callback for an option naming a file to write: checked while parsing, before any work."""
    return None if value is None else check_output_file(value)
