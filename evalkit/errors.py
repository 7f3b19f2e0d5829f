"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input, bad config, unreachable server: something the user can fix.

    ``where`` is a file (optionally with ``:line``) or a config key path; the message says what.
    """

    exit_code = 2

    def __init__(self, message: str, where: str | Path | None = None, line: int | None = None):
        self.message = message
        self.where = str(where) if where is not None else None
        self.line = line
        super().__init__(self.one_line())

    def one_line(self) -> str:
        if self.where is None:
            return self.message
        loc = f"{self.where}:{self.line}" if self.line is not None else self.where
        return f"{loc}: {self.message}"


class ConfigError(UserError):
    """A config file is malformed or names something that does not exist."""


class DataError(UserError):
    """A data file (JSONL, schema) is malformed."""


class BackendUnavailable(UserError):
    """A model server or API cannot be reached, or a local model cannot be loaded."""


def missing_extra(feature: str, extra: str, exc: BaseException | None = None) -> UserError:
    """The message for an optional dependency that is not installed."""
    detail = f" ({exc})" if exc else ""
    return UserError(f"{feature} needs optional dependencies{detail}: pip install 'evalkit[{extra}]'")
