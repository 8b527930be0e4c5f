"""Latents -> waveform with the exported ``vae_decoder`` and ``vocoder`` stages (torch-free).

Mirrors the pipelines' ``decode_latents`` (the ``1 / scaling_factor`` is inside the ``vae_decoder`` graph)
and ``mel_spectrogram_to_waveform``; trimming to the requested length is :func:`trim_waveform`.

The vocoder (HiFi-GAN: convolutions, transposed convolutions, leaky ReLUs, residual sums; no norm over
time) has a finite receptive field, so it runs in overlapping time chunks that are stitched into exactly
the one-shot waveform (:class:`VocoderField`, :func:`chunked_vocode`): its memory no longer grows with the
clip. The margins are computed from the vocoder config (kernel sizes, strides, paddings, dilations), at
export time, and recorded in the vocoder stage's metadata (``VOCODER_FIELD_KEY``); an engine folder without
it decodes one-shot. The VAE decoder stays whole: its GroupNorm layers normalise over the whole clip, so a
chunk's statistics differ from the clip's (no exact chunking).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from ..core.errors import UsageError
from ..core.vocoder_field import DEFAULT_CHUNK_FRAMES, VocoderField
from .conditioning import StageRunner

__all__ = ["DEFAULT_CHUNK_FRAMES", "AudioDecoder", "chunked_torch_vocoder", "chunked_vocode", "trim_waveform"]

Array = TypeVar("Array")


def chunked_vocode(vocode: Callable[[Array], Array], mel: Array, field: VocoderField | None,
                   chunk_frames: int = DEFAULT_CHUNK_FRAMES, *,
                   concat: Callable[[Sequence[Array]], Array] | None = None, time_axis: int = -2) -> Array:
    """``vocode(mel)`` in overlapping time chunks, stitched into the one-shot waveform.

    Works on numpy arrays and torch tensors alike (slicing only, plus ``concat``).

    Args:
        vocode: mel ``(..., frames, bins)`` (time on ``time_axis``) -> waveform ``(..., samples)``.
        mel: the whole mel spectrogram.
        field: the vocoder's receptive field; None runs one-shot.
        chunk_frames: mel frames each chunk keeps (the waveform does not depend on it); 0: one-shot.
        concat: joins waveform pieces on their last axis (default ``numpy.concatenate``).
        time_axis: the mel's time axis.
    """
    frames = mel.shape[time_axis]
    if field is None or chunk_frames == 0 or frames <= chunk_frames:
        return vocode(mel)
    concat = concat or (lambda parts: np.concatenate(parts, axis=-1))
    axis = time_axis % len(mel.shape)
    pieces = []
    for a0, b0, a, b in field.chunks(frames, chunk_frames):
        index = (slice(None),) * axis + (slice(a0, b0),)
        wave = vocode(mel[index])
        start = field.hop * (a - a0)
        stop = None if b == frames else field.hop * (b - a0)
        pieces.append(wave[..., start:stop])
    return concat(pieces)


@contextlib.contextmanager
def chunked_torch_vocoder(vocoder: Any, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> Iterator[Any]:
    """The PyTorch path: ``pipe.vocoder`` (a transformers ``SpeechT5HifiGan``) decodes in exact chunks inside.

    ``with chunked_torch_vocoder(pipe.vocoder): audio = pipe(...).audios`` -- the pipeline's
    ``mel_spectrogram_to_waveform`` calls ``self.vocoder(mel)``, which now runs :func:`chunked_vocode` with the
    margins of the vocoder's own config. torch is imported only when this is used.
    """
    import torch

    field = VocoderField.from_config(vocoder.config.to_dict())
    forward = vocoder.forward
    had_own = "forward" in vars(vocoder)

    def chunked(spectrogram: Any, *args: Any, **kwargs: Any) -> Any:
        if spectrogram.dim() != 3 or args or kwargs:
            return forward(spectrogram, *args, **kwargs)
        return chunked_vocode(forward, spectrogram, field, chunk_frames, concat=lambda p: torch.cat(p, -1))

    vocoder.forward = chunked
    try:
        yield vocoder
    finally:
        if had_own:
            vocoder.forward = forward
        else:
            del vocoder.forward


class AudioDecoder:
    """``decode(latents) -> waveform``: VAE decoder, then the vocoder (chunked when it can be).

    Args:
        run: runs a stage by name (``EngineFolder.run``).
        vocoder_field: the vocoder's receptive field (``VocoderField.from_stage``); None: one-shot vocoder.
        chunk_frames: mel frames per vocoder chunk (0: one-shot).
        rows_per_run: batch rows per VAE decoder / vocoder run (None: the whole batch in one run). On CPU one
            row at a time is faster: 4 real-size 10 s clips decoded in 21.5 s one by one vs 25.9 s as one batch
            (ONNX Runtime, 2 threads: the batched activations leave the caches).
    """

    def __init__(self, run: StageRunner, vocoder_field: VocoderField | None = None,
                 chunk_frames: int = DEFAULT_CHUNK_FRAMES, rows_per_run: int | None = None) -> None:
        if chunk_frames < 0:
            raise UsageError(f"chunk_frames must be positive (or 0: one-shot), got {chunk_frames}")
        if rows_per_run is not None and rows_per_run < 1:
            raise UsageError(f"rows_per_run must be at least 1 (or None: all), got {rows_per_run}")
        self.run, self.vocoder_field, self.chunk_frames = run, vocoder_field, chunk_frames
        self.rows_per_run = rows_per_run

    @classmethod
    def for_engines(cls, engines: Any, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> AudioDecoder:
        """The decoder of an ``EngineFolder``: its ``run``, the field its vocoder stage records, one row per run
        on the CPU backends (measured faster on ONNX Runtime's CPU provider: every stage already keeps the cores
        busy at batch 1), the batch's rows together elsewhere."""
        field = VocoderField.from_stage(engines.stage("vocoder")) if "vocoder" in engines.manifest["stages"] else None
        backend = engines.manifest["backend"]
        on_cpu = backend["name"] in ("onnxruntime", "openvino") and backend.get("device", "cpu") == "cpu"
        return cls(engines.run, field, chunk_frames, rows_per_run=1 if on_cpu else None)

    def mel(self, latents: np.ndarray) -> np.ndarray:
        """Latents ``(B, C, T_lat, F_lat)`` -> mel spectrogram ``(B, 1, T_mel, mel_bins)`` (float32)."""
        latents = np.asarray(latents, dtype=np.float32)
        if latents.ndim != 4:
            raise UsageError(f"latents must be (batch, channels, frames, bins), got shape {latents.shape}")
        return self.run("vae_decoder", {"latents": latents})["mel"]

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        """Mel ``(B, 1, T_mel, mel_bins)`` -> float32 waveform ``(B, samples)``, in chunks when the field is known."""
        def one(part: np.ndarray) -> np.ndarray:
            return np.asarray(self.run("vocoder", {"mel": np.ascontiguousarray(part)})["waveform"], dtype=np.float32)

        return chunked_vocode(one, mel, self.vocoder_field, self.chunk_frames)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Latents ``(B, C, T_lat, F_lat)`` -> float32 waveform ``(B, samples)`` (not trimmed)."""
        step = self.rows_per_run or len(latents) or 1
        return np.concatenate([self.vocode(self.mel(latents[i:i + step])) for i in range(0, len(latents), step)])

    __call__ = decode


def trim_waveform(waveform: np.ndarray, num_samples: int) -> np.ndarray:
    """The pipelines' ``audio[:, :original_waveform_length]``: keep the first ``num_samples`` samples.

    ``num_samples`` is ``int(seconds * sample_rate)`` (``AudioGeometry.num_samples``).
    """
    if num_samples < 1:
        raise UsageError(f"num_samples must be positive, got {num_samples}")
    return waveform[..., :num_samples]
