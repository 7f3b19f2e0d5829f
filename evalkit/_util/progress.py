"""Progress bars: one helper, so every long step shows one the same way (stderr, off with --no-progress)."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(total: int | None, desc: str, enabled: bool, unit: str = "it", *, unit_scale: bool = False, leave: bool = False) -> Any:
    """A tqdm bar on stderr; disabled, a no-op object with the same ``update`` / ``close``."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, leave=leave, mininterval=0.5)
