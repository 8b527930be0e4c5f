"""Latents -> waveform with the exported ``vae_decoder`` and ``vocoder`` stages (torch-free).

Mirrors the pipelines' ``decode_latents`` (the ``1 / scaling_factor`` is inside the ``vae_decoder`` graph)
and ``mel_spectrogram_to_waveform``; trimming to the requested length is :func:`trim_waveform`.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from .conditioning import StageRunner


class AudioDecoder:
    """``decode(latents) -> waveform``: VAE decoder then vocoder, each run as one stage.

    Args:
        run: runs a stage by name (``EngineFolder.run``).
    """

    def __init__(self, run: StageRunner) -> None:
        self.run = run

    def mel(self, latents: np.ndarray) -> np.ndarray:
        """Latents ``(B, C, T_lat, F_lat)`` -> mel spectrogram ``(B, 1, T_mel, mel_bins)`` (float32)."""
        latents = np.asarray(latents, dtype=np.float32)
        if latents.ndim != 4:
            raise UsageError(f"latents must be (batch, channels, frames, bins), got shape {latents.shape}")
        return self.run("vae_decoder", {"latents": latents})["mel"]

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Latents ``(B, C, T_lat, F_lat)`` -> float32 waveform ``(B, samples)`` (not trimmed)."""
        waveform = self.run("vocoder", {"mel": self.mel(latents)})["waveform"]
        return np.asarray(waveform, dtype=np.float32)

    __call__ = decode


def trim_waveform(waveform: np.ndarray, num_samples: int) -> np.ndarray:
    """The pipelines' ``audio[:, :original_waveform_length]``: keep the first ``num_samples`` samples.

    ``num_samples`` is ``int(seconds * sample_rate)`` (``AudioGeometry.num_samples``).
    """
    if num_samples < 1:
        raise UsageError(f"num_samples must be positive, got {num_samples}")
    return waveform[..., :num_samples]
