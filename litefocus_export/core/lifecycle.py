"""The lifecycle every runner shares (polygraphy's runners): loaded when constructed, freed by ``close()``,
and closed on leaving a ``with`` block (torch-free)."""

from __future__ import annotations

from typing import TypeVar

Self = TypeVar("Self", bound="Closing")


class Closing:
    """Base of every runner: subclasses free what they hold in :meth:`close` (safe to call twice)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: Self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
