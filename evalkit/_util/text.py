"""Untrusted text: model output, API error bodies, file contents echoed back to a user.

Three rules, one place each:

* ``terminal_safe``: nothing printed to a terminal carries control characters (an ANSI sequence in an
  error body could clear the screen or fake a "PASS" line); used for every line evalkit prints from
  text it did not write itself.
* ``redact_url`` / ``redact_secrets``: credentials in URLs and configured API keys never reach a
  log, a report, a summary or the store.
* ``encodable`` / ``displayable``: text with lone surrogates (``"\\ud800"``, which UTF-8 cannot
  encode) is stored losslessly by the store and shown with U+FFFD in reports.
"""

from __future__ import annotations

import re
from typing import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), other two-byte ESC sequences
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]?")
# C0 controls except tab and newline, DEL, C1 controls; bidi overrides that reorder a line
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_SECRET_QUERY_KEYS = {"key", "api_key", "apikey", "token", "access_token", "password", "secret", "sig", "signature"}


def terminal_safe(text: object, *, one_line: bool = False) -> str:
    """``text`` with escape sequences removed and other control characters shown as ``?``.

    ``one_line``: newlines and tabs become spaces too (a one-line error stays one line).
    """
    s = _SURROGATE.sub("\ufffd", str(text))
    s = _ANSI.sub("", s)
    s = s.replace("\r\n", "\n")
    if one_line:
        s = s.replace("\n", " ").replace("\t", " ")
    return _CONTROL.sub("?", s)


def visible_controls(text: str) -> str:
    """``text`` with control characters made visible for a report: C0 controls (but tab and newline)
    as their Unicode control pictures (ESC -> U+241B), DEL as U+2421, C1 controls and bidi overrides
    as ``<U+XXXX>``, lone surrogates as U+FFFD. A report that is ``cat`` in a terminal then carries no
    live escape sequence; the raw bytes stay in the store and items.jsonl.
    """
    s = _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text
    if not _CONTROL.search(s):
        return s
    return _CONTROL.sub(_picture, s)


def _picture(m: re.Match[str]) -> str:
    c = ord(m.group(0))
    if c < 0x20:
        return chr(0x2400 + c)
    if c == 0x7F:
        return "\u2421"
    return f"<U+{c:04X}>"


def displayable(text: str) -> str:
    """``text`` that can be written as UTF-8: lone surrogates become U+FFFD (for pages and reports)."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def encodable(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (no lone surrogates)."""
    return _SURROGATE.search(text) is None


def redact_url(url: str) -> str:
    """``url`` without credentials: ``user:password@`` becomes ``***@``, secret query values ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^/@\s]*@", "//***@", url)
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _SECRET_QUERY_KEYS for k, _ in pairs):
            query = urlencode([(k, "***" if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret (4 characters or more) replaced by ``***``."""
    for s in secrets:
        if s and len(s) >= 4 and s in text:
            text = text.replace(s, "***")
    return text


_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s]+@")


def redact_userinfo(text: str) -> str:
    """Every ``scheme://user:pass@`` in free text becomes ``scheme://***@``."""
    return _USERINFO.sub(r"\1***@", text)
