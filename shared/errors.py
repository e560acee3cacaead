"""Errors that report a user mistake: the CLI prints them as one line and exits with status 2."""

from __future__ import annotations


class ScenarioLabError(Exception):
    """A mistake in user input: a file, a field or a value that is not allowed.

    The message names the file, the field and what is allowed, so it can stand alone on one line.
    """

    exit_code = 2


class ScenarioError(ScenarioLabError):
    """An invalid scenario file or override."""


class CheckpointError(ScenarioLabError):
    """A checkpoint that is missing, corrupt or does not match the scenario."""


class OutputError(ScenarioLabError):
    """An output folder that cannot be created or written."""


def located(source: str | None, field: str | None, message: str) -> str:
    """Format ``message`` as ``source: field: message``, leaving out the parts that are unknown."""
    parts = [part for part in (source, field) if part]
    return ": ".join([*parts, message])
