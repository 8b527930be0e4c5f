"""Duration profiles: the range of audio lengths one engine build serves (torch-free).

docs/design.md §3: a profile ``(min_s, opt_s, max_s)`` maps to latent lengths; ``build --seconds 80``
makes ``(1, 80, 80)``. A request outside every built profile is an error naming the profiles there are.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import EngineError, UsageError
from .geometry import DEFAULT_GEOMETRY, AudioGeometry, check_seconds

MIN_SECONDS = 1.0
# --attention auto: full attention up to this length, LiteFocus beyond. Measured (docs/report/report.md, 2 cores,
# real-size AudioLDM2 UNet step): LiteFocus saves 1.15x at 10 s on ONNX Runtime (1.70 vs 1.96 s), 1.33x at 40 s,
# 2.0x at 80 s. Up to the 10.24 s clips the checkpoints were trained on, the full model is what was trained and
# LiteFocus buys little; past it the saving grows with length and is LiteFocus's reason to exist.
LITEFOCUS_FROM_SECONDS = 10.24


@dataclass(frozen=True)
class DurationProfile:
    """Audio lengths in seconds an engine is built for: ``min_s <= opt_s <= max_s``."""

    min_s: float
    opt_s: float
    max_s: float

    def __post_init__(self) -> None:
        values = [check_seconds(v) for v in (self.min_s, self.opt_s, self.max_s)]
        if not values[0] <= values[1] <= values[2]:
            raise UsageError(f"profile needs min <= opt <= max seconds, got {self.min_s}:{self.opt_s}:{self.max_s}")
        for name, value in zip(("min_s", "opt_s", "max_s"), values):
            object.__setattr__(self, name, value)

    @classmethod
    def for_seconds(cls, seconds: float | str) -> DurationProfile:
        """The profile ``build --seconds S`` makes: up to S seconds, tuned for S."""
        value = check_seconds(seconds)
        return cls(min(MIN_SECONDS, value), value, value)

    @classmethod
    def parse(cls, text: str) -> DurationProfile:
        """``"MIN:OPT:MAX"`` in seconds."""
        parts = text.split(":")
        if len(parts) != 3:
            raise UsageError(f"profile must be MIN:OPT:MAX seconds, got {text!r}")
        return cls(*(check_seconds(p) for p in parts))

    @property
    def name(self) -> str:
        """Folder-friendly name: ``80s`` for (1, 80, 80), else ``10-40-80s``."""
        fmt = lambda v: f"{v:g}"  # noqa: E731
        if self.opt_s == self.max_s and self.min_s == min(MIN_SECONDS, self.max_s):
            return f"{fmt(self.max_s)}s"
        return f"{fmt(self.min_s)}-{fmt(self.opt_s)}-{fmt(self.max_s)}s"

    def latent_frames(self, geometry: AudioGeometry = DEFAULT_GEOMETRY) -> tuple[int, int, int]:
        """(min, opt, max) latent time lengths."""
        return tuple(geometry.latent_frames(v) for v in (self.min_s, self.opt_s, self.max_s))  # type: ignore[return-value]

    def covers(self, seconds: float) -> bool:
        return self.min_s <= check_seconds(seconds) <= self.max_s

    def to_dict(self) -> dict[str, float]:
        return {"min_s": self.min_s, "opt_s": self.opt_s, "max_s": self.max_s}

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> DurationProfile:
        return cls(data["min_s"], data["opt_s"], data["max_s"])


def resolve_attention(requested: str, longest_seconds: float) -> tuple[str, dict[str, object]]:
    """The attention for audio up to ``longest_seconds`` and the policy record the manifest keeps.

    ``"auto"``: full attention up to ``LITEFOCUS_FROM_SECONDS``, LiteFocus beyond; an engine build decides once, by
    its profile's longest duration (serve a short build beside a long one for both).
    """
    if requested not in ("full", "litefocus", "auto"):
        raise UsageError(f"attention must be full, litefocus or auto, got {requested!r}")
    if requested != "auto":
        return requested, {"requested": requested}
    chosen = "litefocus" if check_seconds(longest_seconds) > LITEFOCUS_FROM_SECONDS else "full"
    return chosen, {"requested": "auto", "litefocus_from_s": LITEFOCUS_FROM_SECONDS, "longest_s": longest_seconds,
                    "chosen": chosen}


def require_covered(profiles: list[DurationProfile], seconds: float) -> DurationProfile:
    """The first profile covering ``seconds``, else an error that lists what is built."""
    for profile in profiles:
        if profile.covers(seconds):
            return profile
    built = ", ".join(f"{p.min_s:g}-{p.max_s:g} s" for p in profiles) or "none"
    raise EngineError(f"{check_seconds(seconds):g} s is outside every built profile (built: {built}); rebuild with "
                      f"--seconds {seconds} or a wider --profile")
