"""Small I/O helpers of the data pipeline: atomic writes and streaming JSONL lines."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from .._util.progress import progress_bar as _bar
from ..errors import DataError


def line_problem(raw: bytes) -> str | None:
    """Why one raw line is not text evalkit accepts (strict UTF-8, no NUL byte), or None."""
    nul = raw.find(b"\x00")
    if nul >= 0:
        return f"NUL byte at column {nul + 1}; JSONL is text"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); save the file as UTF-8"
    return None


def iter_raw_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` for every line (blank ones included), read one at a time.

    Every command reads data the same way: strict UTF-8, no NUL bytes. A line that breaks this raises
    DataError naming FILE:LINE; nothing is silently replaced (``validate`` reads bytes itself and
    reports the same problem, from :func:`line_problem`, beside the others).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError("file not found", where=p)
    with p.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8") if b"\x00" not in raw else None
            except UnicodeDecodeError:
                text = None
            if text is None:
                raise DataError(line_problem(raw) or "unreadable line", where=p, line=lineno)
            yield lineno, text


def file_sha256(path: str | Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def progress_bar(total: int | None, desc: str, enabled: bool, unit: str = "line"):
    """The data stage's bars: lines, scaled (k, M)."""
    return _bar(total, desc, enabled, unit, unit_scale=True)
