"""--no-progress reaches the Hugging Face libraries' own bars, and leaves them as they were after."""

import pytest

from evalkit._util.hf_bars import library_progress_bars


def test_bars_off_inside_and_restored_after():
    datasets = pytest.importorskip("datasets")
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    datasets.enable_progress_bars()
    with library_progress_bars(False):
        assert not hf_logging.is_progress_bar_enabled() and not datasets.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled() and datasets.is_progress_bar_enabled()
    with library_progress_bars(True):
        assert hf_logging.is_progress_bar_enabled()


def test_bars_restored_when_the_block_raises():
    from transformers.utils import logging as hf_logging

    with pytest.raises(RuntimeError):
        with library_progress_bars(False):
            raise RuntimeError("boom")
    assert hf_logging.is_progress_bar_enabled()


def test_a_user_who_turned_them_off_keeps_them_off():
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        with library_progress_bars(False):
            pass
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
