"""CSV export / import for reviewers who prefer a spreadsheet. Still blinded.

The export has the same things the page shows (prompt, reference, output A, output B) keyed by the
pair's opaque token; no model name, path, id, suite or sample id. Cells that a spreadsheet would run
as a formula (starting with = + - @ or a tab) are prefixed with ``'`` (model output is untrusted).
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import DataError
from ..store import Store
from .sessions import blind_pairs, clean_reviewer, get_session, reviewer_verdicts, save_verdicts

COLUMNS = ("item", "token", "prompt", "reference", "output_a", "output_b", "verdict", "a_would_ship", "b_would_ship", "note", "reviewer")
_VERDICT_OUT = {"left": "A", "right": "B", "tie": "tie", "both_bad": "both bad"}
_VERDICT_IN = {
    "a": "left", "a better": "left", "1": "left",
    "b": "right", "b better": "right", "2": "right",
    "tie": "tie", "3": "tie", "=": "tie",
    "both bad": "both_bad", "both_bad": "both_bad", "bothbad": "both_bad", "bad": "both_bad", "4": "both_bad",
}
_YES = {"yes", "y", "true", "1", "ship", "x"}
_NO = {"no", "n", "false", "0", "no ship"}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str | None) -> str:
    text = text or ""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _uncell(text: str) -> str:
    return text[1:] if text.startswith("'") and text[1:].startswith(_FORMULA_START) else text


def prompt_text(messages: tuple[tuple[str, str], ...]) -> str:
    if len(messages) == 1:
        return messages[0][1]
    return "\n\n".join(f"[{role}] {content}" for role, content in messages)


def export_csv(store: Store, session_id: str, out: Path, reviewer: str | None = None) -> int:
    """Write the session's pairs to ``out`` (UTF-8 with BOM, so spreadsheets read accents right).

    With ``reviewer``, that reviewer's verdicts so far are filled in. Returns the number of rows.
    """
    session = get_session(store, session_id)
    pairs = blind_pairs(store, session)
    done = {v.token: v for v in reviewer_verdicts(store, session.session_id, reviewer)} if reviewer else {}
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8-sig", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for p in pairs:
            v = done.get(p.token)
            w.writerow([
                p.position + 1, p.token, _cell(prompt_text(p.messages)), _cell(p.reference), _cell(p.output_left), _cell(p.output_right),
                _VERDICT_OUT.get(v.verdict or "", "") if v else "",
                _ship_out(v.ship_left) if v else "", _ship_out(v.ship_right) if v else "",
                _cell(v.note) if v else "", reviewer or "",
            ])
    return len(pairs)


def _ship_out(x: bool | None) -> str:
    return "" if x is None else ("yes" if x else "no")


def _ship_in(text: str, path: Path, line: int, column: str) -> bool | None:
    t = text.strip().lower()
    if not t:
        return None
    if t in _YES:
        return True
    if t in _NO:
        return False
    raise DataError(f"{column} must be yes, no or empty (got '{text.strip()[:40]}')", where=path, line=line)


def import_csv(store: Store, session_id: str, path: Path, reviewer: str | None = None) -> int:
    """Read verdicts from a CSV made by :func:`export_csv`; returns how many were saved.

    Rows with no verdict, no ship answer and no note are skipped. The reviewer comes from the row's
    ``reviewer`` column, else from ``reviewer``. Every row is checked before anything is saved.
    """
    session = get_session(store, session_id)
    if not path.is_file():
        raise DataError("file not found", where=path)
    rows: list[tuple[str, str, str | None, bool | None, bool | None, str]] = []
    tokens = {p.token for p in blind_pairs(store, session)}
    seen: dict[tuple[str, str], int] = {}
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DataError("empty file; expected a header row with 'token' and 'verdict'", where=path, line=1)
            cols = {h.strip().lower(): i for i, h in enumerate(header)}
            for needed in ("token", "verdict"):
                if needed not in cols:
                    raise DataError(f"missing column '{needed}' (columns: {', '.join(header)})", where=path, line=1)
            last_line = reader.line_num
            for rec in reader:
                line, last_line = last_line + 1, reader.line_num

                def get(name: str) -> str:
                    i = cols.get(name)
                    return rec[i] if i is not None and i < len(rec) else ""  # noqa: B023

                if not any(c.strip() for c in rec):
                    continue
                token = get("token").strip()
                if token not in tokens:
                    raise DataError(f"token '{token[:40]}' is not a pair of session {session.session_id}", where=path, line=line)
                raw = get("verdict").strip()
                verdict = _VERDICT_IN.get(raw.lower().replace("_", " ").strip(), None) if raw else None
                if raw and verdict is None:
                    raise DataError(f"verdict must be A, B, tie or both bad (got '{raw[:40]}')", where=path, line=line)
                ship_l = _ship_in(get("a_would_ship"), path, line, "a_would_ship")
                ship_r = _ship_in(get("b_would_ship"), path, line, "b_would_ship")
                note = _uncell(get("note"))
                if verdict is None and ship_l is None and ship_r is None and not note.strip():
                    continue
                who = get("reviewer").strip() or (reviewer or "")
                if not who:
                    raise DataError("no reviewer: fill the 'reviewer' column or pass --reviewer NAME", where=path, line=line)
                who = clean_reviewer(who, where=f"{path}:{line}")
                if (token, who) in seen:
                    raise DataError(f"pair {token} already answered by {who} on line {seen[(token, who)]}", where=path, line=line)
                seen[(token, who)] = line
                rows.append((token, who, verdict, ship_l, ship_r, note))
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason}); save the sheet as CSV UTF-8", where=path) from None
    except csv.Error as e:
        raise DataError(f"malformed CSV: {e}", where=path) from None
    return save_verdicts(store, session.session_id, rows, source="csv")
