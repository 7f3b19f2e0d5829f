"""Rubrics shipped inside the package, so a pip-installed evalkit finds them by name.

``rubric: default`` (or ``reference``, ``pairwise``) in eval.yaml resolves to the file here; any value
that looks like a path (a ``/``, or a ``.yaml``/``.yml`` suffix) is a rubric file of your own,
relative to eval.yaml's folder. ``evalkit judges list`` shows the built-in ones.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

BUILTIN_DIR = Path(__file__).resolve().parent


def builtin_rubrics() -> dict[str, Path]:
    """Built-in rubric name -> its file, sorted by name."""
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}


def looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.endswith((".yaml", ".yml"))


def resolve_rubric(value: str, config_dir: str | Path = ".", where: str | None = None) -> Path:
    """The rubric file a ``rubric:`` value names: a built-in by name, else a path (relative to ``config_dir``).

    Raises ConfigError for an unknown name or a missing file, listing the built-in names.
    """
    label = f"{where}: " if where else ""
    builtins = builtin_rubrics()
    if not looks_like_path(value):
        if value in builtins:
            return builtins[value]
        raise ConfigError(f"{label}unknown built-in rubric '{value}': built-in are {', '.join(builtins)}; a rubric file of your own is a path ending in .yaml")
    p = Path(value)
    path = p if p.is_absolute() else Path(config_dir) / p
    if not path.is_file():
        hint = f" (the built-in rubric is named '{p.stem}': rubric: {p.stem})" if p.stem in builtins else ""
        raise ConfigError(f"{label}rubric file not found: {path}{hint}")
    return path
