"""Latent geometry of the AudioLDM family: seconds <-> mel frames <-> latent grid (torch-free).

docs/design.md §3: 16 kHz audio, hop 160 samples (100 mel frames per second), a VAE that divides both
axes by 4, 64 mel bins. Token ``n = t * F + f`` inside attention (time-major).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import UsageError

SAMPLE_RATE = 16_000
HOP_LENGTH = 160
VAE_SCALE = 4
MEL_BINS = 64
# The longest audio a request or a profile may ask for. AudioLDM-family models were trained on ~10 s clips and
# LiteFocus targets long-form generation (the paper: 80 s); 10 minutes bounds memory (the VAE decoder's mid-block
# attention grows with the square of the length) and keeps folder names plain.
MAX_SECONDS = 600.0


@dataclass(frozen=True)
class AudioGeometry:
    """Audio/latent constants of one pipeline (the AudioLDM family defaults)."""

    sample_rate: int = SAMPLE_RATE
    hop_length: int = HOP_LENGTH
    vae_scale: int = VAE_SCALE
    mel_bins: int = MEL_BINS

    @property
    def hop_seconds(self) -> float:
        return self.hop_length / self.sample_rate

    def mel_frames(self, seconds: float) -> int:
        """Mel frames for ``seconds`` of audio, rounded up to the VAE factor."""
        seconds = check_seconds(seconds)
        # A tiny tolerance keeps 10.24 s (1023.9999... hops in floating point) at 1024 frames.
        frames = math.ceil(seconds / self.hop_seconds - 1e-6)
        return math.ceil(frames / self.vae_scale) * self.vae_scale

    def latent_frames(self, seconds: float) -> int:
        """Latent time length ``T_lat`` for ``seconds`` of audio (80 s -> 2000)."""
        return self.mel_frames(seconds) // self.vae_scale

    @property
    def latent_freq_bins(self) -> int:
        """Latent frequency bins ``F_lat`` (64 mel bins -> 16)."""
        return self.mel_bins // self.vae_scale

    def num_samples(self, seconds: float) -> int:
        """Waveform length the pipelines trim their output to."""
        return int(check_seconds(seconds) * self.sample_rate)

    @classmethod
    def from_configs(cls, vocoder: Any, vae: Any) -> AudioGeometry:
        """The geometry a pipeline has, from its vocoder and VAE configs (mappings or config objects).

        The one place it is derived: sample rate and mel bins are the HiFi-GAN's, the hop is the product of
        its upsample rates, and the VAE factor is the pipelines' ``2 ** (len(block_out_channels) - 1)``.
        """
        def get(config: Any, key: str) -> Any:
            return config[key] if isinstance(config, Mapping) else getattr(config, key)

        return cls(sample_rate=int(get(vocoder, "sampling_rate")),
                   hop_length=int(math.prod(get(vocoder, "upsample_rates"))),
                   vae_scale=2 ** (len(get(vae, "block_out_channels")) - 1),
                   mel_bins=int(get(vocoder, "model_in_dim")))

    @classmethod
    def from_manifest(cls, geometry: Mapping[str, Any]) -> AudioGeometry:
        """The geometry an export or engine manifest records (its ``geometry`` entry)."""
        return cls(int(geometry["sample_rate"]), int(geometry["hop_length"]), int(geometry["vae_scale"]),
                   int(geometry["mel_bins"]))


DEFAULT_GEOMETRY = AudioGeometry()


def check_seconds(seconds: float) -> float:
    """Validate a duration: a positive finite number of seconds, at most ``MAX_SECONDS``."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        raise UsageError(f"seconds must be a number, got {seconds!r}") from None
    if isinstance(seconds, bool) or not math.isfinite(value) or value <= 0:
        raise UsageError(f"seconds must be a positive number, got {seconds!r}")
    if value > MAX_SECONDS:
        raise UsageError(f"seconds must be at most {MAX_SECONDS:g} (the longest audio this tool generates), "
                         f"got {seconds!r}")
    return value


def latent_frames(seconds: float, geometry: AudioGeometry = DEFAULT_GEOMETRY) -> int:
    """Latent time length for ``seconds`` of audio with the default AudioLDM geometry."""
    return geometry.latent_frames(seconds)


def downsampled_length(length: int, times: int) -> int:
    """Length after ``times`` stride-2 downsamplings (conv, kernel 3, padding 1: ceil(n / 2))."""
    for _ in range(times):
        length = (length + 1) // 2
    return length


def level_width(latent_freq_bins: int, level: int) -> int:
    """Frequency bins at UNet resolution ``level`` (0 = full latent resolution)."""
    return downsampled_length(latent_freq_bins, level)
