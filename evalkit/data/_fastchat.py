"""The fast path of ``data validate``: well-formed chat lines decoded and checked in C (msgspec).

A line that msgspec decodes into :class:`_Example` (roles from the allowed set, string contents, no
unknown keys, an id that is a string or an integer, ...) and whose role order matches is well formed
except, possibly, for an empty content, which the token counts reveal. Every other line goes to the
slow path (``json.loads`` + ``check_example``), which names each problem; the fast path never decides
that a line is bad, so both paths report exactly the same problems.

Whitespace token counts (the default length unit) are computed for a block of lines at once with
numpy; a block holding non-ASCII whitespace (which ``str.split`` also splits on) is counted with
``str.split`` instead, so the counts are always exactly ``len(content.split())``.
"""

from __future__ import annotations

import operator
import re
from typing import Any, Callable, Sequence, Union

import numpy as np

from ._chat import _EVAL_ORDER, _ROLE_CHAR, _TRAIN_ORDER

try:
    import msgspec
except ImportError:  # pragma: no cover - msgspec is a core dependency
    msgspec = None  # type: ignore[assignment]


if msgspec is not None:

    class _Message(msgspec.Struct, forbid_unknown_fields=True, gc=False):
        role: str
        content: str
        name: Any = None

    class _Example(msgspec.Struct, forbid_unknown_fields=True, gc=False):
        messages: list[_Message]
        id: Union[str, int, msgspec.UnsetType] = msgspec.UNSET
        tags: Union[list[str], None] = None
        metadata: Union[dict, msgspec.UnsetType] = msgspec.UNSET
        reference: Any = None
        schema: Any = None
        must_pass: bool = False


# UTF-8 of the non-ASCII characters str.split() splits on (U+0085, U+00A0, U+1680, U+2000-200A,
# U+2028, U+2029, U+202F, U+205F, U+3000)
_UNICODE_SPACE = re.compile(rb"\xc2[\x85\xa0]|\xe1\x9a\x80|\xe2\x80[\x80-\x8a\xa8\xa9\xaf]|\xe2\x81\x9f|\xe3\x80\x80")


def available() -> bool:
    return msgspec is not None


class Block:
    """Columns of the well-formed lines of one block (the fast path's reading), and the other lines."""

    __slots__ = ("first", "raws", "lines", "n_msgs", "contents", "systems", "id_hashes", "id_lines", "slow")

    def __init__(self, raws: Sequence[bytes] = (), first: int = 1) -> None:
        self.first = first  # line number of raws[0]
        self.raws = raws  # kept for the slow path, should a content turn out empty
        self.lines: list[int] = []
        self.n_msgs: list[int] = []
        self.contents: list[str] = []
        self.systems: list[str | None] = []
        self.id_hashes: list[int] = []  # of the lines in ``lines`` that have an id
        self.id_lines: list[int] = []
        self.slow: list[tuple[int, bytes]] = []


def id_hash(sid: str | int) -> int:
    """A 64-bit key of an id, for the duplicate check (ids equal as text share it: 5 and "5")."""
    return hash(sid if sid.__class__ is str else str(sid)) & 0xFFFF_FFFF_FFFF_FFFF


def make_reader(require_assistant: bool) -> Callable[[Sequence[bytes], int], Block]:
    """``read(raws, first_lineno) -> Block``: each line that passes every check but the empty-content
    one goes into the block's columns; any other line into ``block.slow`` (the slow path names its
    problems). One call per block of lines keeps the per-line Python work to a few local appends.
    """
    assert msgspec is not None
    decode = msgspec.json.Decoder(_Example).decode
    order = _TRAIN_ORDER if require_assistant else _EVAL_ORDER
    role_char = _ROLE_CHAR
    patterns: dict[tuple[str, ...], bool] = {}
    errors = (msgspec.DecodeError, msgspec.ValidationError)
    unset = msgspec.UNSET

    def pattern_ok(roles: tuple[str, ...]) -> bool:
        chars = [role_char.get(r) for r in roles]
        ok = patterns[roles] = bool(roles) and None not in chars and order.fullmatch("".join(chars)) is not None  # type: ignore[arg-type]
        return ok

    def read(raws: Sequence[bytes], first_lineno: int) -> Block:
        block = Block(raws, first_lineno)
        lines, n_msgs, systems, slow = block.lines, block.n_msgs, block.systems, block.slow
        id_hashes, id_lines = block.id_hashes, block.id_lines
        add_contents = block.contents.extend
        get_pattern = patterns.get
        get_role, get_content = operator.attrgetter("role"), operator.attrgetter("content")
        for lineno, raw in enumerate(raws, first_lineno):
            try:
                msgs = (ex := decode(raw)).messages
            except errors:
                slow.append((lineno, raw))
                continue
            roles = tuple(map(get_role, msgs))
            ok = get_pattern(roles)
            if ok is None:
                ok = pattern_ok(roles)
            sid = ex.id
            if not ok or sid == "":
                slow.append((lineno, raw))
                continue
            lines.append(lineno)
            n_msgs.append(len(msgs))
            add_contents(map(get_content, msgs))
            systems.append(msgs[0].content if roles[0] == "system" else None)
            if sid is not unset:
                id_hashes.append(hash(sid if sid.__class__ is str else str(sid)) & 0xFFFF_FFFF_FFFF_FFFF)
                id_lines.append(lineno)
        return block

    return read


def example_lengths(block: Block) -> tuple[np.ndarray, np.ndarray]:
    """(whitespace tokens per example, whether one of its contents is empty) for the block's columns."""
    counts = token_counts(block.contents)
    starts = np.zeros(len(block.n_msgs), dtype=np.int64)
    np.cumsum(block.n_msgs[:-1], out=starts[1:])
    return np.add.reduceat(counts, starts), np.minimum.reduceat(counts, starts) == 0


def token_counts(contents: Sequence[str]) -> np.ndarray:
    """``len(c.split())`` for every string, computed for all of them at once.

    The strings are joined with NUL separators and counted as bytes: a token starts at a byte above
    32 that follows a byte at most 32 (ASCII whitespace, and our separator). Where that is not
    exactly ``str.split`` — a control character that is not whitespace, a NUL inside a string,
    non-ASCII whitespace — the block is counted with ``str.split`` instead.
    """
    if not contents:
        return np.zeros(0, dtype=np.int64)
    # a NUL before every string and after the last: every token start follows a byte <= 32
    data = ("\0" + "\0".join(contents) + "\0").encode("utf-8", "surrogatepass")
    arr = np.frombuffer(data, dtype=np.uint8)
    seps = np.flatnonzero(arr == 0)
    low = arr[arr < 28]  # separators, \t \n \v \f \r, and any control byte that is not whitespace
    odd_control = bool(((low != 0) & ((low < 9) | (low > 13))).any())
    if odd_control or len(seps) != len(contents) + 1 or _exotic_space(data):
        return np.fromiter((len(c.split()) for c in contents), dtype=np.int64, count=len(contents))
    # starts[j]: a token starts at byte j + 1 (a byte above 32 after one at most 32)
    nonws = arr > 32
    starts = nonws[1:] & ~nonws[:-1]
    return np.add.reduceat(starts.view(np.uint8), seps[:-1], dtype=np.int64)


_SPACE_LEADS = (b"\xc2\x85", b"\xc2\xa0", b"\xe1\x9a\x80", b"\xe2\x80", b"\xe2\x81\x9f", b"\xe3\x80\x80")


def _exotic_space(data: bytes) -> bool:
    """Whether UTF-8 ``data`` holds a non-ASCII character that ``str.split`` treats as whitespace."""
    if data.isascii():
        return False
    # cheap substring scans first; the exact pattern only when a lead sequence is there at all
    return any(lead in data for lead in _SPACE_LEADS) and _UNICODE_SPACE.search(data) is not None
