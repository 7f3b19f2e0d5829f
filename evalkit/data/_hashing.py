"""Text normalisation, 64-bit word hashes and n-gram/shingle hashes, vectorised with numpy.

Word hashes are deterministic across processes (blake2b), so MinHash signatures built on them,
and the audit report, are the same every time.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

_WORD = re.compile(r"\w+")
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd; the polynomial base of n-gram hashes
_U64 = np.uint64


def normalize(text: str) -> str:
    """Lowercase, whitespace collapsed: what "the same text" means for duplicates."""
    return " ".join(text.lower().split())


def words(text: str) -> list[str]:
    """Lowercased word tokens (punctuation dropped): the unit of n-grams and shingles."""
    return _WORD.findall(text.lower())


def hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


class WordHasher:
    """Word -> 64-bit hash with a bounded cache (vocabularies repeat, hashing does not need to)."""

    def __init__(self, max_cache: int = 1_000_000):
        self._cache: dict[str, int] = {}
        self._max = max_cache

    def __call__(self, toks: list[str]) -> list[int]:
        c = self._cache
        out = list(map(c.get, toks))
        if None in out:
            if len(c) >= self._max:
                c.clear()
            for i, h in enumerate(out):
                if h is None:
                    t = toks[i]
                    h = c.get(t)
                    if h is None:
                        h = c[t] = hash64(t)
                    out[i] = h
        return out  # type: ignore[return-value]


def text_key(text: str) -> int:
    """A 64-bit key of a text for equality tests within one process (not stable across processes)."""
    return hash(text) & 0xFFFFFFFFFFFFFFFF


def ngram_hashes(tok: np.ndarray, seg: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every n-gram that stays inside one segment, and the segment each belongs to.

    ``tok``: uint64 word hashes of many texts laid end to end; ``seg``: the text index of each word.
    """
    L = len(tok)
    if L < n:
        return np.zeros(0, np.uint64), np.zeros(0, seg.dtype)
    m = L - n + 1
    h = np.zeros(m, dtype=np.uint64)
    for j in range(n):
        h = h * _MULT + tok[j : j + m]
    ok = seg[:m] == seg[n - 1 : n - 1 + m]
    return h[ok], seg[:m][ok]


PAD = 0x5EED5EED5EED5EED  # the word hash that pads short texts (no real word hashes to it in practice)
