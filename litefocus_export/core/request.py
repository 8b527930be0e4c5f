"""A text-to-audio request, the same for every backend, checked when made (torch-free).

Documented ranges (README "What is refused"): seconds in (0, ``MAX_SECONDS``]; steps in 1..``MAX_STEPS`` (a
scheduler may allow fewer: the sampler checks its own limit before any work); seed in 0..2**63-1; guidance
None (the pipeline's default) or in [1, ``MAX_GUIDANCE``], 1 meaning no classifier-free guidance; prompts
valid Unicode text of at most ``MAX_PROMPT_CHARS`` characters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .choices import SCHEDULERS, SchedulerName
from .errors import UsageError
from .geometry import check_seconds

MAX_STEPS = 1000  # the training schedule's length: no sampler takes more
MAX_SEED = 2**63 - 1  # numpy's seed sequences take any non-negative int; KServe's INT64 stops here
MAX_GUIDANCE = 20.0  # the pipelines default to 2-3.5; far above, audio turns to noise
MAX_PROMPT_CHARS = 10_000  # the text encoders read at most 512 tokens; this bounds the work of tokenizing


def check_text(value: Any, what: str, *, optional: bool = False) -> str | None:
    """A prompt: a string of valid Unicode (no lone surrogates from undecodable bytes), bounded in length."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise UsageError(f"{what} must be text, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid UTF-8 text (undecodable bytes?)") from None
    if len(value) > MAX_PROMPT_CHARS:
        raise UsageError(f"{what} is {len(value)} characters long; at most {MAX_PROMPT_CHARS}")
    return value


def _check_int(value: Any, what: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise UsageError(f"{what} must be an integer in {low}..{high}, got {value!r}")
    return value


def check_guidance(value: Any) -> float | None:
    """None (the pipeline's default) or a finite number in [1, MAX_GUIDANCE]."""
    if value is None:
        return None
    try:
        guidance = float(value)
    except (TypeError, ValueError):
        guidance = math.nan
    if isinstance(value, bool) or not 1.0 <= guidance <= MAX_GUIDANCE:  # NaN fails the comparison too
        raise UsageError(f"guidance must be a number in [1, {MAX_GUIDANCE:g}] (1: no classifier-free guidance), "
                         f"got {value!r}")
    return guidance


@dataclass(frozen=True)
class GenerationRequest:
    """One text-to-audio request (shared by every backend); every field is checked when it is made."""

    prompt: str
    seconds: float
    steps: int = 10
    seed: int = 0
    guidance: float | None = None  # None: the pipeline's default
    negative_prompt: str | None = None
    scheduler: SchedulerName = "ddim"

    def __post_init__(self) -> None:
        check_text(self.prompt, "prompt")
        check_text(self.negative_prompt, "negative prompt", optional=True)
        object.__setattr__(self, "seconds", check_seconds(self.seconds))
        _check_int(self.steps, "steps", 1, MAX_STEPS)
        _check_int(self.seed, "seed", 0, MAX_SEED)
        object.__setattr__(self, "guidance", check_guidance(self.guidance))
        if self.scheduler not in SCHEDULERS:
            raise UsageError(f"scheduler must be ddim or dpm, got {self.scheduler!r}")
