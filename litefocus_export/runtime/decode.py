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
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ..errors import EngineError, UsageError
from .conditioning import StageRunner

VOCODER_FIELD_KEY = "litefocus.vocoder_field"  # ONNX metadata of the vocoder stage: VocoderField.to_json()
# Mel frames per vocoder chunk (0: one-shot), ``LITEFOCUS_VOCODER_CHUNK`` overrides it (benchmarks). Any
# value gives the same waveform (to float rounding); measured at 80 s on random:audioldm2: README "Decode".
DEFAULT_CHUNK_FRAMES = int(os.environ.get("LITEFOCUS_VOCODER_CHUNK", "1000") or 0)

Array = TypeVar("Array")


@dataclass(frozen=True)
class Conv:
    """One time-axis convolution: ``transposed`` (ConvTranspose1d) or not, kernel, stride, dilation, padding."""

    kernel: int
    stride: int = 1
    dilation: int = 1
    padding: int = 0
    transposed: bool = False

    def exact(self, lo: int, hi: int) -> tuple[int, int]:
        """Output positions whose every input lies in ``[lo, hi)`` (chunk-local coordinates)."""
        k, s, d, p = self.kernel, self.stride, self.dilation, self.padding
        if self.transposed:  # o = i * s - p + j, j in [0, k): i in [ceil((o + p - k + 1) / s), floor((o + p) / s)]
            return (lo - 1) * s + k - p, hi * s - p
        return lo + p, hi + p - d * (k - 1)  # y reads x in [y - p, y - p + d (k - 1)]


def hifigan_layers(config: Mapping[str, Any]) -> list[list[list[Conv]]]:
    """SpeechT5HifiGan's convolutions in forward order, from its config.

    Returns a list of stages; each stage is a list of parallel branches (the residual blocks of one
    resolution, averaged), each branch a sequence of convolutions. Residual sums and leaky ReLUs are
    pointwise and do not widen the field. ``conv_pre`` / ``conv_post`` are kernel 7, padding 3 (fixed in
    transformers' ``SpeechT5HifiGan``).
    """
    try:
        rates = [int(r) for r in config["upsample_rates"]]
        up_kernels = [int(k) for k in config["upsample_kernel_sizes"]]
        kernels = [int(k) for k in config["resblock_kernel_sizes"]]
        dilations = [[int(d) for d in ds] for ds in config["resblock_dilation_sizes"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"not a HiFi-GAN vocoder config ({exc})") from None
    stages: list[list[list[Conv]]] = [[[Conv(7, padding=3)]]]
    for rate, kernel in zip(rates, up_kernels, strict=True):
        stages.append([[Conv(kernel, stride=rate, padding=(kernel - rate) // 2, transposed=True)]])
        branches = []
        for k, ds in zip(kernels, dilations, strict=True):
            branch = []
            for d in ds:
                branch += [Conv(k, dilation=d, padding=(k * d - d) // 2), Conv(k, padding=(k - 1) // 2)]
            branches.append(branch)
        stages.append(branches)
    stages.append([[Conv(7, padding=3)]])
    return stages


@dataclass(frozen=True)
class VocoderField:
    """How far the vocoder looks in mel frames: ``hop`` samples per frame, ``left`` / ``right`` margins.

    A chunk of mel frames ``[a - left, b + right)`` (clipped to the clip) gives exactly the one-shot
    waveform samples ``[hop * a, hop * b)``; the chunk at the clip's end also gives the vocoder's tail
    past ``hop * frames`` (transposed convolutions add a few samples).
    """

    hop: int
    left: int
    right: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> VocoderField:
        """Margins computed from a HiFi-GAN config: forward propagation of the exactly computed interval of
        an interior chunk through every convolution (the parallel residual blocks: their intersection)."""
        stages = hifigan_layers(config)
        frames = 4096  # any interior chunk: the losses at its edges do not depend on its length
        lo, hi = 0, frames
        hop = 1
        for branches in stages:
            ends = []
            for branch in branches:
                b_lo, b_hi = lo, hi
                for conv in branch:
                    b_lo, b_hi = conv.exact(b_lo, b_hi)
                ends.append((b_lo, b_hi))
            lo, hi = max(e[0] for e in ends), min(e[1] for e in ends)
            hop *= branches[0][0].stride if branches[0][0].transposed else 1
        if hi <= lo:
            raise UsageError("vocoder receptive field is wider than the probe chunk")
        left = math.ceil(max(lo, 0) / hop)
        right = math.ceil(max(hop * frames - hi, 0) / hop)
        return cls(hop, left, right)

    def to_json(self) -> str:
        return json.dumps({"hop": self.hop, "left": self.left, "right": self.right}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> VocoderField:
        try:
            data = json.loads(text)
            field = cls(int(data["hop"]), int(data["left"]), int(data["right"]))
        except (ValueError, TypeError, KeyError) as exc:
            raise EngineError(f"bad {VOCODER_FIELD_KEY} metadata: {exc}") from None
        if field.hop < 1 or field.left < 0 or field.right < 0:
            raise EngineError(f"bad {VOCODER_FIELD_KEY} metadata: {text}")
        return field

    @classmethod
    def from_stage(cls, stage: Mapping[str, Any]) -> VocoderField | None:
        """The field a manifest's vocoder stage records, or None (folders made before it: one-shot decode)."""
        text = (stage.get("metadata") or {}).get(VOCODER_FIELD_KEY)
        return None if text is None else cls.from_json(text)

    def chunks(self, frames: int, chunk_frames: int) -> list[tuple[int, int, int, int]]:
        """``(a0, b0, a, b)`` per chunk: input frames ``[a0, b0)`` whose output keeps frames ``[a, b)``."""
        if chunk_frames < 1:
            raise UsageError(f"chunk_frames must be positive, got {chunk_frames}")
        return [(max(0, a - self.left), min(frames, b + self.right), a, b)
                for a in range(0, frames, chunk_frames) for b in [min(frames, a + chunk_frames)]]


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
    """``decode(latents) -> waveform``: VAE decoder (one run), then the vocoder (chunked when it can be).

    Args:
        run: runs a stage by name (``EngineFolder.run``).
        vocoder_field: the vocoder's receptive field (``VocoderField.from_stage``); None: one-shot vocoder.
        chunk_frames: mel frames per vocoder chunk (0: one-shot).
    """

    def __init__(self, run: StageRunner, vocoder_field: VocoderField | None = None,
                 chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> None:
        if chunk_frames < 0:
            raise UsageError(f"chunk_frames must be positive (or 0: one-shot), got {chunk_frames}")
        self.run, self.vocoder_field, self.chunk_frames = run, vocoder_field, chunk_frames

    @classmethod
    def for_engines(cls, engines: Any, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> AudioDecoder:
        """The decoder of an ``EngineFolder``: its ``run``, and the field its vocoder stage records."""
        field = VocoderField.from_stage(engines.stage("vocoder")) if "vocoder" in engines.manifest["stages"] else None
        return cls(engines.run, field, chunk_frames)

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
        return self.vocode(self.mel(latents))

    __call__ = decode


def trim_waveform(waveform: np.ndarray, num_samples: int) -> np.ndarray:
    """The pipelines' ``audio[:, :original_waveform_length]``: keep the first ``num_samples`` samples.

    ``num_samples`` is ``int(seconds * sample_rate)`` (``AudioGeometry.num_samples``).
    """
    if num_samples < 1:
        raise UsageError(f"num_samples must be positive, got {num_samples}")
    return waveform[..., :num_samples]
