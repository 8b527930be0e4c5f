"""LiteFocus settings: which key sets, how many samples, which UNet levels."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.contract import DEFAULT_LEVELS, DEFAULT_SPARSE_RATIO, check_levels, check_sparse_ratio
from ..core.errors import UsageError


@dataclass(frozen=True)
class LiteFocusConfig:
    """What LiteFocus does and where.

    Args:
        same_frequency: attend to the T keys of the query's own frequency bin.
        cross_frequency: also attend to a random ``sparse_ratio`` sample of all tokens.
        sparse_ratio: fraction of tokens sampled per layer call, ``0 <= r <= 1`` (default 0.1).
        levels: UNet attention levels to patch, named by their latent width in frequency bins
            (default ``(8,)``: the reference's highest-resolution attention level).
        seed: seed of the numpy generator the samples are drawn from (None: fresh entropy).
    """

    same_frequency: bool = True
    cross_frequency: bool = True
    sparse_ratio: float = DEFAULT_SPARSE_RATIO
    levels: tuple[int, ...] = field(default=DEFAULT_LEVELS)
    seed: int | None = 0

    def __post_init__(self) -> None:
        if not (self.same_frequency or self.cross_frequency):
            raise UsageError("LiteFocus needs same_frequency or cross_frequency (both are off)")
        object.__setattr__(self, "sparse_ratio", check_sparse_ratio(self.sparse_ratio))
        object.__setattr__(self, "levels", check_levels(self.levels))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["levels"] = list(self.levels)
        return data
