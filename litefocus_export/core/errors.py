"""One exception family for everything the toolchain raises on purpose (torch-free)."""

from __future__ import annotations


class LiteFocusError(Exception):
    """Base class: the CLI prints the message as one line and exits 1."""


class UsageError(LiteFocusError):
    """Bad user input (unknown model spec, bad duration, ...): exit code 2."""


class ExportError(LiteFocusError):
    """ONNX export failed or produced a graph that breaks the contract."""


class BuildError(LiteFocusError):
    """An engine could not be built (missing backend, bad profile, ...)."""


class EngineError(LiteFocusError):
    """An engine folder is missing, corrupt, from a newer format or does not cover a request."""


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message (its type name when the message is empty)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def check_choice(what: str, value: object, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a UsageError naming them."""
    if value not in choices:
        raise UsageError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return value  # type: ignore[return-value]
