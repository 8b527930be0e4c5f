"""Report settings and state: what ``matrix`` measures and ``output`` writes, shared by both (torch-free).

``ReportSettings`` is checked when constructed, so a bad value costs no build and no measurement.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..core.choices import ATTENTIONS, ENGINE_BACKENDS
from ..core.contract import DEFAULT_LEVELS, DEFAULT_SPARSE_RATIO, check_levels, check_sparse_ratio
from ..core.errors import UsageError
from ..core.geometry import check_seconds
from ..models.specs import DEFAULT_SPEC, check_spec

# a report "backend" is a backend at a precision: plain names run at their default (OpenVINO: the CPU's, auto)
PRECISION_VARIANTS = ("torch-bf16", "openvino-fp32", "openvino-bf16", "openvino-int8")
BACKENDS = ("torch", *ENGINE_BACKENDS, *PRECISION_VARIANTS)
DEFAULT_BACKENDS = ("torch", *ENGINE_BACKENDS)
# what the report fits a growth exponent to (time ~ seconds^k): per-step and per-stage times, and peak memory
GROWTH_KEYS = ("unet_step_s", "conditioning_s", "vae_decode_s", "vocoder_s", "end_to_end_s", "peak_rss_mb")


def split_variant(name: str) -> tuple[str, str | None]:
    """``"openvino-bf16"`` -> ``("openvino", "bf16")``; ``"torch"`` -> ``("torch", None)`` (its default precision)."""
    backend, _, precision = name.partition("-")
    return backend, precision or None
DEFAULT_PROMPT = "a dog barking in the rain"


@dataclass(frozen=True)
class ReportSettings:
    """What to measure and where to write it.

    Args:
        out: output folder (report.md, report.json, latency.png, speedup.png).
        model: model spec (default the tiny random AudioLDM2).
        seconds: audio durations.
        backends: ``torch``, ``onnxruntime``, ``tensorrt``, ``openvino`` (engines built with ``build_engines``;
            OpenVINO at the CPU's default precision), and precision variants: ``torch-bf16`` (the stock pipeline
            after ``.to(torch.bfloat16)``), ``openvino-fp32``, ``openvino-bf16``, ``openvino-int8``.
        attention: ``full`` and/or ``litefocus``.
        steps: denoising steps per generation (``stages="all"``).
        repeats: timed repeats per configuration (medians are reported); ``warmup`` untimed runs before.
        stages: ``"unet"`` (one UNet evaluation at batch 2) or ``"all"`` (whole generations).
        accuracy: also compare outputs (engine vs PyTorch, LiteFocus vs full) with the same seed.
        quality: also score each waveform (``stages="all"`` only): CLAP audio-text score with the pipeline's own
            CLAP model, and the log-mel distance of LiteFocus to full attention (``quality.py``).
        threads: intra-op threads for torch and ONNX Runtime (0: the libraries' default).
        engines_dir: where engine folders are built (default ``$LITEFOCUS_CACHE/report-engines``).
    """

    out: Path
    model: str = DEFAULT_SPEC
    seconds: tuple[float, ...] = (10.0, 20.0, 40.0, 80.0)
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    attention: tuple[str, ...] = ATTENTIONS
    steps: int = 10
    repeats: int = 3
    warmup: int = 1
    stages: Literal["unet", "all"] = "all"
    accuracy: bool = False
    quality: bool = False
    seed: int = 0
    prompt: str = DEFAULT_PROMPT
    threads: int = 0
    sparse_ratio: float = DEFAULT_SPARSE_RATIO
    levels: tuple[int, ...] = DEFAULT_LEVELS
    engines_dir: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        check_spec(self.model)
        object.__setattr__(self, "sparse_ratio", check_sparse_ratio(self.sparse_ratio))
        object.__setattr__(self, "levels", check_levels(self.levels))
        object.__setattr__(self, "seconds", tuple(sorted({check_seconds(s) for s in self.seconds})))
        _check_choices("backend", self.backends, BACKENDS)
        _check_choices("attention", self.attention, ATTENTIONS)
        if self.stages not in ("unet", "all"):
            raise UsageError(f"stages must be unet or all, got {self.stages!r}")
        if self.quality and self.stages != "all":
            raise UsageError("quality scores whole generations' waveforms: it needs stages all (--stages all)")
        for name, minimum in (("steps", 1), ("repeats", 1), ("warmup", 0), ("threads", 0), ("seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                kind = "a positive integer" if minimum == 1 else "an integer >= 0"
                raise UsageError(f"{name} must be {kind}, got {value!r}")


def _check_choices(what: str, values: tuple[str, ...], valid: tuple[str, ...]) -> None:
    if not values:
        raise UsageError(f"give at least one {what}; choices: {', '.join(valid)}")
    for value in values:
        if value not in valid:
            raise UsageError(f"unknown {what} {value!r}; choices: {', '.join(valid)}")


def parse_list(text: str, what: str) -> tuple[str, ...]:
    """``"a, b,a"`` -> ``("a", "b")`` (order kept, duplicates dropped)."""
    items = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    if not items:
        raise UsageError(f"--{what} needs at least one value")
    return items


@dataclass
class ReportState:
    """Everything the outputs are written from; grows row by row."""

    settings: ReportSettings
    machine: dict[str, Any]
    flops: list[dict[str, Any]]
    engines: dict[tuple[str, str], Path] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    planned: int = 0
    clap: dict[str, Any] | None = None  # CLAP scores (report --quality), once measured
    interrupted: bool = False
    started: float = field(default_factory=time.time)


def config_stem(seconds: float, backend: str, attention: str) -> str:
    """File-name stem of one configuration (``2.5s-torch-full``: it may contain a dot)."""
    return f"{seconds:g}s-{backend}-{attention}"


def output_path(work: Path, seconds: float, backend: str, attention: str) -> Path:
    return work / f"{config_stem(seconds, backend, attention)}.npy"


def settings_dict(settings: ReportSettings) -> dict[str, Any]:
    data = asdict(settings)
    data.update(out=str(settings.out), engines_dir=str(settings.engines_dir) if settings.engines_dir else None,
                seconds=list(settings.seconds), backends=list(settings.backends),
                attention=list(settings.attention), levels=list(settings.levels))
    return data
