"""Helpers every stage shares, one place each: file writes and output paths (``fs``), untrusted
text (``text``), progress bars (``progress``). Internal: not part of evalkit's API.
"""
