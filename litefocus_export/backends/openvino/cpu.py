"""The CPU's matrix units, and the OpenVINO precision they make worth running (torch-free, openvino-free).

bf16 pays only where the CPU has bf16 arithmetic: AMX-BF16 (Intel Xeon 4th gen and later) or AVX512-BF16
(Intel Cooper Lake and later, AMD Zen4 and later). Elsewhere OpenVINO would emulate it, slower than fp32.
int8 (weight compression) needs no special unit; VNNI is reported because it is what int8 matrix work uses.

``LITEFOCUS_CPU_FEATURES_OFF`` (comma-separated ``amx``, ``avx512_bf16``, ``vnni``; ``bf16`` = both bf16 units)
hides features this CPU has, so the paths for CPUs without them are tested on any machine.
"""

from __future__ import annotations

import logging
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from ...core.errors import EngineError, UsageError

log = logging.getLogger(__name__)
OpenVinoPrecision = Literal["fp32", "bf16", "int8"]
OPENVINO_PRECISIONS: tuple[str, ...] = get_args(OpenVinoPrecision)
FEATURES_OFF_ENV = "LITEFOCUS_CPU_FEATURES_OFF"
FEATURE_NAMES = ("amx", "avx512_bf16", "vnni")
_ALIASES = {"bf16": ("amx", "avx512_bf16")}


@dataclass(frozen=True)
class CpuFeatures:
    """What this CPU offers for reduced-precision matrix work."""

    model: str
    amx: bool
    avx512_bf16: bool
    vnni: bool

    @property
    def bf16(self) -> bool:
        """The CPU has bf16 arithmetic units (AMX-BF16 or AVX512-BF16)."""
        return self.amx or self.avx512_bf16

    def names(self) -> list[str]:
        """The features present, e.g. ``["avx512_bf16", "vnni"]``."""
        return [name for name in FEATURE_NAMES if getattr(self, name)]

    def describe(self) -> str:
        return f"{self.model} ({', '.join(self.names()) or 'no bf16/int8 units'})"


def features_off() -> set[str]:
    """The features ``LITEFOCUS_CPU_FEATURES_OFF`` hides; an unknown name is a one-line error."""
    text = os.environ.get(FEATURES_OFF_ENV, "")
    off: set[str] = set()
    for name in (n.strip().lower() for n in text.split(",") if n.strip()):
        if name not in (*FEATURE_NAMES, *_ALIASES):
            raise UsageError(f"{FEATURES_OFF_ENV}: unknown feature {name!r}; valid: "
                             f"{', '.join((*FEATURE_NAMES, *_ALIASES))}")
        off.update(_ALIASES.get(name, (name,)))
    return off


def cpu_features(cpuinfo: str | None = None) -> CpuFeatures:
    """This CPU's features from ``/proc/cpuinfo`` (or the given text), less those ``features_off`` hides."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags_line = re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
    flags = set(flags_line.group(1).split()) if flags_line else set()
    model_line = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
    off = features_off()
    return CpuFeatures(
        model=model_line.group(1).strip() if model_line else platform.processor() or platform.machine(),
        amx="amx_bf16" in flags and "amx" not in off,
        avx512_bf16="avx512_bf16" in flags and "avx512_bf16" not in off,
        vnni=bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"}) and "vnni" not in off,
    )


def default_precision(features: CpuFeatures) -> OpenVinoPrecision:
    """bf16 where the CPU has bf16 units, else fp32."""
    return "bf16" if features.bf16 else "fp32"


def activation_precision(precision: str, features: CpuFeatures) -> Literal["bf16", "fp32"]:
    """The arithmetic of the activations: bf16 for ``bf16``, and for ``int8`` (compressed weights) where the CPU
    has bf16 units; fp32 otherwise."""
    return "bf16" if precision == "bf16" or (precision == "int8" and features.bf16) else "fp32"


def resolve_precision(requested: str | None, features: CpuFeatures) -> OpenVinoPrecision:
    """The precision a build uses: ``requested``, or (None / ``"auto"``) the CPU's default.

    Raises:
        UsageError: an unknown precision, or ``bf16`` asked for explicitly on a CPU without bf16 units (it would
            run emulated, slower than fp32).
    """
    if requested in (None, "auto"):
        chosen = default_precision(features)
        if not features.bf16:
            log.warning("this CPU (%s) has no bf16 units (AMX-BF16 or AVX512-BF16): building fp32", features.model)
        return chosen
    if requested not in OPENVINO_PRECISIONS:
        raise UsageError(f"unknown OpenVINO precision {requested!r}; valid: auto, {', '.join(OPENVINO_PRECISIONS)}")
    if requested == "bf16" and not features.bf16:
        raise UsageError(f"bf16 needs a CPU with AMX-BF16 or AVX512-BF16; this one ({features.model}) has neither: "
                         f"use --precision fp32 (or auto)")
    return requested  # type: ignore[return-value]


def required_features(precision: str, features: CpuFeatures) -> list[str]:
    """What an engine of ``precision`` built on this CPU needs where it runs: ``["bf16"]`` when its activations are
    bf16 (any bf16 unit will do), else nothing."""
    return ["bf16"] if activation_precision(precision, features) == "bf16" else []


def check_runs_here(backend: dict, features: CpuFeatures) -> None:
    """Refuse (one line) an OpenVINO engine folder whose precision needs CPU features this CPU lacks."""
    if "bf16" in backend.get("cpu_features_required", []) and not features.bf16:
        raise EngineError(f"this engine folder runs {backend.get('precision')} with bf16 activations, built on a CPU "
                          f"with bf16 units; this CPU ({features.describe()}) has none (AMX-BF16 or AVX512-BF16): "
                          f"rebuild it here with --precision fp32")


__all__ = ["FEATURES_OFF_ENV", "OPENVINO_PRECISIONS", "CpuFeatures", "OpenVinoPrecision", "activation_precision",
           "check_runs_here", "cpu_features", "default_precision", "required_features",
           "resolve_precision"]
