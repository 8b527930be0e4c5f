"""How far the HiFi-GAN vocoder looks along time: the receptive field that makes chunked vocoding exact (torch-free).

Computed from the vocoder config (kernel sizes, strides, paddings, dilations) at export time, recorded in the
vocoder stage's metadata (``contract.VOCODER_FIELD_KEY``) and read by the runtime's decoder (``runtime/decode.py``):
the export and the runtime share it here, so neither imports the other.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .contract import VOCODER_FIELD_KEY
from .errors import EngineError, UsageError

# Mel frames per vocoder chunk (0: one shot), read by the runtime's decoder and the build's memory estimate;
# ``LITEFOCUS_VOCODER_CHUNK`` overrides it (benchmarks). Any value gives the same waveform (to float rounding);
# 1000 was the fastest at 80 s on random:audioldm2 (README "Exact chunked vocoder").
DEFAULT_CHUNK_FRAMES = int(os.environ.get("LITEFOCUS_VOCODER_CHUNK", "1000") or 0)


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
