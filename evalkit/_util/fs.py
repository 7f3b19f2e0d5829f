"""File-system helpers shared by every stage: atomic writes with the umask's mode, and output paths
checked before any work.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

from ..errors import ConfigError, DataError, UserError


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
    check_output_dir(p.parent, what)
    return p


def out_dir_option(value: Path | None) -> Path | None:
    """Typer callback for an option naming a folder to write: checked while parsing, before any work."""
    return None if value is None else check_output_dir(value)


def out_file_option(value: Path | None) -> Path | None:
    """Typer callback for an option naming a file to write: checked while parsing, before any work."""
    return None if value is None else check_output_file(value)


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[IO[str]]:
    """Write a text file via a temp file in the same folder + rename: readers never see half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.fchmod(fd, default_file_mode())
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json_atomic(path: str | Path, obj: Any) -> None:
    with atomic_writer(path) as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False, sort_keys=False)
        fh.write("\n")


def write_files_atomic(folder: str | Path, files: Mapping[str, str]) -> list[Path]:
    """Write several files into ``folder`` all or nothing: every file goes to a temp file first and
    they are renamed into place only when all are written, so an error (or a kill) never leaves a
    half-written file beside whole ones.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    mode = default_file_mode()
    temps: list[tuple[str, Path]] = []
    try:
        for name, text in files.items():
            fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out)
            os.fchmod(fd, mode)
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            temps.append((name, Path(tmp_name)))
        written: list[Path] = []
        for name, tmp in temps:
            os.replace(tmp, out / name)
            written.append(out / name)
        return written
    except BaseException:
        for _, tmp in temps:
            tmp.unlink(missing_ok=True)
        raise


def read_utf8(path: Path) -> str:
    """A text file that must be UTF-8, without NUL bytes; the error names the line of the first bad byte."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); save the file as UTF-8", where=path, line=line) from None
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise ConfigError("contains a NUL byte; this is a text file", where=path, line=raw.count(b"\n", 0, nul) + 1)
    return text


def read_json(path: Path) -> Any:
    """A JSON file (strict UTF-8, no NUL); a syntax error names the file and line."""
    try:
        return json.loads(read_utf8(path))
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON: {e.msg}", where=path, line=e.lineno) from None
