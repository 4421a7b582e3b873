"""One exception root for everything llmdeploy reports to a user.

Library code raises these with the bad value, the valid choices and the fix;
only the CLI catches them (``llmdeploy.cli.main``) and turns them into one
line on stderr and an exit status: 2 for usage errors, 1 for the rest.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(value: str, choices: Iterable[str]) -> str | None:
    """The closest valid choice to a mistyped value, or None."""
    matches = difflib.get_close_matches(str(value).lower(), [str(c).lower() for c in choices], n=1, cutoff=0.5)
    if not matches:
        return None
    by_lower = {str(c).lower(): str(c) for c in choices}
    return by_lower[matches[0]]


class LlmdeployError(Exception):
    """Root of every error meant for a user. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class UsageError(LlmdeployError):
    """The user asked for something that cannot be: a bad flag value, an unknown name."""

    exit_code = 2


class UnknownChoiceError(UsageError):
    """A name (model, region, instance type, dtype, mode...) that is not among the valid ones."""

    def __init__(self, kind: str, value: str, choices: Iterable[str], *, fix: str | None = None, show: int = 12):
        choices = sorted({str(c) for c in choices})
        self.kind, self.value, self.choices = kind, value, choices
        suggestion = did_you_mean(value, choices)
        parts = [f"unknown {kind} {value!r}."]
        if suggestion:
            parts.append(f"Did you mean {suggestion!r}?")
        listed = ", ".join(choices[:show]) + (f", ... ({len(choices)} in all)" if len(choices) > show else "")
        parts.append(f"Valid: {listed}.")
        super().__init__(" ".join(parts), hint=fix)


class ConfigError(UsageError):
    """A model config, stack config or data file that is malformed or unsupported."""


class InfeasibleError(LlmdeployError):
    """The request is well-formed but cannot be met (e.g. a mode that cannot host the model)."""


class MissingDependencyError(LlmdeployError):
    """An optional part (Pulumi CLI, an extra) is not installed; the message says how to get it."""


class CloudError(LlmdeployError):
    """An AWS or Pulumi call failed in a way the user must act on (credentials, permissions)."""


class FileError(LlmdeployError):
    """A file could not be written or read for a reason outside the command line (a full disk, an I/O error)."""
