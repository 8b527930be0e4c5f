"""Cross-frequency samples: which tokens every patched layer also attends to (torch-free).

docs/design.md §1: each patched layer gets a fresh uniform sample without replacement of
``M = floor(sparse_ratio * N)`` token indices at every UNet evaluation. The PyTorch path and the
engine runtime draw them with this one function, from a numpy generator, in the same order (patched
layers in execution order), so one seed gives the same samples, and the same audio, on every backend.
"""

from __future__ import annotations

import math

import numpy as np


def num_samples(n_tokens: int, sparse_ratio: float) -> int:
    """``M = floor(sparse_ratio * N)`` (the reference's ``int(N * ratio)``)."""
    return int(math.floor(n_tokens * sparse_ratio + 1e-9))


def draw_sample_index(rng: np.random.Generator, n_tokens: int, sparse_ratio: float, *, minimum: int = 0) -> np.ndarray:
    """One layer's sample: ``M`` distinct token indices in ``[0, n_tokens)``, int64, random order.

    ``minimum`` raises ``M`` (up to ``n_tokens``): example inputs for tracing need at least 2.
    """
    m = min(max(num_samples(n_tokens, sparse_ratio), minimum), n_tokens)
    if m == 0:
        return np.zeros((0,), dtype=np.int64)
    return rng.choice(n_tokens, size=m, replace=False).astype(np.int64)


def seeded_streams(seed: int | None) -> tuple[np.random.Generator, np.random.Generator]:
    """(initial-noise generator, LiteFocus-sample generator) for one generation with ``seed``.

    Two independent streams, so the noise does not depend on how many samples were drawn.
    """
    root = np.random.SeedSequence(seed)
    noise_seq, samples_seq = root.spawn(2)
    return np.random.default_rng(noise_seq), np.random.default_rng(samples_seq)


def initial_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 latents (the same on every backend for the same generator)."""
    return rng.standard_normal(shape, dtype=np.float32)
