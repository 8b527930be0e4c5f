"""Where a patched layer gets its cross-frequency sample from at each call.

A sample source is a callable ``(layer_name, n_tokens) -> int64 indices``, ``(M,)`` (one sample for the
whole batch) or ``(B, M)`` (one per batch row, docs/design.md §1). ``RandomSamples`` draws fresh ``(M,)`` ones
(a new sample per layer call, as the reference and the diffusers pipeline do) with the same numpy function
the runtime uses; ``QueuedSamples`` replays samples supplied from outside (either form), for export tracing
and parity tests against engines.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Protocol

import numpy as np

from ..core.errors import UsageError
from ..core.seeds import draw_sample_index, seeded_streams


class SampleSource(Protocol):
    def __call__(self, layer: str, n_tokens: int) -> np.ndarray: ...


class RandomSamples:
    """Draws each layer call's sample from one seeded numpy generator, in call order."""

    def __init__(self, sparse_ratio: float, seed: int | None = 0, generator: np.random.Generator | None = None):
        self.sparse_ratio = sparse_ratio
        # the samples stream of seeded_streams(seed): the one the engine runtime draws from
        self.rng = generator if generator is not None else seeded_streams(seed)[1]

    def __call__(self, layer: str, n_tokens: int) -> np.ndarray:
        return draw_sample_index(self.rng, n_tokens, self.sparse_ratio)


class QueuedSamples:
    """Replays given samples: ``{layer_name: [index for call 0, call 1, ...]}``, each ``(M,)`` or ``(B, M)``."""

    def __init__(self, samples: Mapping[str, Iterable[np.ndarray]]):
        self.queues = {name: deque(np.asarray(s, dtype=np.int64) for s in seq) for name, seq in samples.items()}

    def __call__(self, layer: str, n_tokens: int) -> np.ndarray:
        queue = self.queues.get(layer)
        if not queue:
            raise UsageError(f"no queued LiteFocus sample left for layer {layer}")
        index = queue.popleft()
        if index.size and (index.min() < 0 or index.max() >= n_tokens):
            raise UsageError(f"queued sample for {layer} is out of range for {n_tokens} tokens")
        return index

