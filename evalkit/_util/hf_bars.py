"""The Hugging Face libraries' own progress bars ("Loading weights", "Writing model shards",
tokenizing) follow evalkit's ``--no-progress``, and are restored afterwards.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator


@contextlib.contextmanager
def library_progress_bars(show: bool) -> Iterator[None]:
    """Within the block, transformers' and datasets' bars are on only when ``show``. No-op for a
    library that is not installed (nothing is imported when ``show`` is true).
    """
    if show:
        yield
        return
    restore = []
    if importlib.util.find_spec("transformers") is not None:
        from transformers.utils import logging as hf_logging

        if hf_logging.is_progress_bar_enabled():
            hf_logging.disable_progress_bar()
            restore.append(hf_logging.enable_progress_bar)
    if importlib.util.find_spec("datasets") is not None:
        import datasets

        if datasets.is_progress_bar_enabled():
            datasets.disable_progress_bars()
            restore.append(datasets.enable_progress_bars)
    try:
        yield
    finally:
        for fn in restore:
            fn()
