"""Where code and libraries came from: the git state of evalkit's tree and package versions
(the run record's reproducibility block and candidate.json both record them).
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Iterable


@lru_cache(maxsize=8)
def git_state(root: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git tree at ``root``; (None, None) outside a checkout (an installed package)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None, None
    if commit.returncode != 0 or not commit.stdout.strip():
        return None, None
    return commit.stdout.strip(), (bool(status.stdout.strip()) if status.returncode == 0 else None)


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Name -> installed version, or None when it is not installed."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
