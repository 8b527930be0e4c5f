"""Engine folders loaded once; each request routed to the smallest profile that covers it; compatible
requests batched (torch-free).

A failure of one batch (a stage error, out of memory) fails only that batch's requests; a bad request only
itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.errors import EngineError, LiteFocusError, UsageError, first_line
from ..core.request import GenerationRequest
from ..runtime import EngineFolder, Sampler

log = logging.getLogger(__name__)


class Router:
    """Samplers of several engine folders (e.g. a 10 s and an 80 s build), smallest profile first.

    Args:
        folders: engine folders (checked and opened here, once).
        threads: intra-op threads per stage (0: the backend's default).
    """

    def __init__(self, folders: Sequence[str | Path], threads: int = 0):
        if not folders:
            raise UsageError("give at least one engine folder")
        samplers = [Sampler(EngineFolder(folder, threads=threads), progress=False) for folder in folders]
        self.samplers = sorted(samplers, key=lambda s: max(p.max_s for p in s.engines.profiles))

    def describe(self) -> str:
        """``name (1-10 s), name (1-80 s)``: what is served."""
        spans = [", ".join(f"{p.min_s:g}-{p.max_s:g} s" for p in s.engines.profiles) for s in self.samplers]
        return ", ".join(f"{s.engines.folder.name} ({span})" for s, span in zip(self.samplers, spans))

    def route(self, request: GenerationRequest) -> Sampler:
        """The sampler of the smallest profile covering ``request.seconds``; UsageError naming what is served."""
        for sampler in self.samplers:
            if any(p.covers(request.seconds) for p in sampler.engines.profiles):
                return sampler
        raise UsageError(f"{request.seconds:g} s is outside every served profile ({self.describe()})")

    def run(self, requests: Sequence[GenerationRequest | LiteFocusError]) -> list[np.ndarray | LiteFocusError]:
        """Waveforms (or the error of each failed request), in order; errors given in are passed through."""
        results: list[np.ndarray | LiteFocusError | None] = [r if isinstance(r, LiteFocusError) else None
                                                             for r in requests]
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            if results[index] is not None:
                continue
            try:
                sampler = self.route(request)
                key = (self.samplers.index(sampler), sampler.batch_key(request))
            except LiteFocusError as exc:
                results[index] = exc
                continue
            groups.setdefault(key, []).append(index)
        for (which, _), members in groups.items():
            batch = [requests[i] for i in members]
            try:
                waveforms = self.samplers[which].generate_batch(batch)
            except LiteFocusError as exc:
                waveforms = [exc] * len(batch)
            except Exception as exc:  # noqa: BLE001 - a stage's own failure fails this batch, not the server
                log.exception("a batch of %d failed", len(batch))
                waveforms = [EngineError(f"generation failed: {first_line(exc)}")] * len(batch)
            for index, waveform in zip(members, waveforms):
                results[index] = waveform
        return results  # type: ignore[return-value]

    def sample_rate(self, request: GenerationRequest) -> int:
        return self.route(request).engines.geometry.sample_rate
