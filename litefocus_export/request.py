"""A text-to-audio request, the same for every backend (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import UsageError
from .geometry import check_seconds

SchedulerName = Literal["ddim", "dpm"]


@dataclass(frozen=True)
class GenerationRequest:
    """One text-to-audio request (shared by every backend)."""

    prompt: str
    seconds: float
    steps: int = 10
    seed: int = 0
    guidance: float | None = None  # None: the pipeline's default
    negative_prompt: str | None = None
    scheduler: SchedulerName = "ddim"

    def __post_init__(self) -> None:
        object.__setattr__(self, "seconds", check_seconds(self.seconds))
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise UsageError(f"steps must be a positive integer, got {self.steps!r}")
        if self.scheduler not in ("ddim", "dpm"):
            raise UsageError(f"scheduler must be ddim or dpm, got {self.scheduler!r}")
