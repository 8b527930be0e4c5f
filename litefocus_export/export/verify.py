"""Exported files vs PyTorch: ONNX Runtime (CPU) and the pipeline on the same inputs and samples."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..attention import QueuedSamples, patched
from ..core.contract import index_input_name, unet_call_arguments
from ..core.errors import ExportError
from .unet import unet_signature

log = logging.getLogger(__name__)
VERIFY_FRAMES = (21, 27)  # two odd latent lengths, neither the traced one (37)
# the largest max-relative error (max abs error / max abs PyTorch output) an export may show per precision, kept with
# the export settings as optimum keeps ``atol`` with its export config; per stage where one needs its own
VERIFY_TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2}
STAGE_TOLERANCE: dict[tuple[str, str], float] = {}


def tolerance(stage: str, precision: str) -> float:
    """The verification tolerance of ``stage`` (``unet@21`` counts as ``unet``) at ``precision``."""
    return STAGE_TOLERANCE.get((stage.split("@")[0], precision), VERIFY_TOLERANCE[precision])


def check_errors(results: dict[str, tuple[float, float]], precision: str) -> None:
    """Raise ``ExportError`` (one line, every failing stage) when a stage's error is beyond its tolerance."""
    failed = [f"{name} max rel {rel:.2e} > {tolerance(name, precision):.0e}" for name, (_, rel) in results.items()
              if not rel <= tolerance(name, precision)]  # NaN fails too
    if failed:
        raise ExportError(f"export --verify: ONNX Runtime differs from PyTorch beyond the {precision} tolerance: "
                          f"{'; '.join(failed)}")


def errors(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(max abs error, max abs error / max abs expected)."""
    diff = float(np.abs(actual.astype(np.float64) - expected).max())
    return diff, diff / max(float(np.abs(expected).max()), 1e-30)


def verify_unet(pipe: Any, path: Path, settings: Any, frames: int) -> tuple[float, float]:
    """Run ``path`` (the UNet ONNX) and the PyTorch UNet at ``frames`` latent frames; return errors.

    The example batch has a different LiteFocus sample per row (``(L, batch, M)`` index inputs); PyTorch
    replays the same ``(B, M)`` rows, so per-row gathering is verified too.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    litefocus = settings.attention == "litefocus"
    config = settings.litefocus_config()
    with patched(pipe, config) if litefocus else contextlib.nullcontext():
        signature = unet_signature(pipe, frames=frames, min_samples=0)
    feeds = {name: t.numpy() for name, t in signature.inputs.items()}
    sample, timestep, kwargs = unet_call_arguments(signature.inputs)
    with torch.no_grad():
        if litefocus:
            queued = {layer: [feeds[index_input_name(width)][row]]
                      for width, layers in signature.levels.items() for row, layer in enumerate(layers)}
            with patched(pipe, config, QueuedSamples(queued)):
                expected = pipe.unet(sample, timestep, **kwargs, return_dict=False)[0].numpy()
        else:
            expected = pipe.unet(sample, timestep, **kwargs, return_dict=False)[0].numpy()
    (actual,) = session.run(None, feeds)
    return errors(actual, expected)


def verify_export(pipe: Any, folder: Path, manifest: dict[str, Any], settings: Any) -> dict[str, tuple[float, float]]:
    """Errors per stage (``unet@<frames>`` for the UNet at each verified length), also logged."""
    from .stages import verify_stages

    results: dict[str, tuple[float, float]] = {}
    stages = manifest["stages"]
    if "unet" in stages:
        for frames in VERIFY_FRAMES:
            results[f"unet@{frames}"] = verify_unet(pipe, folder / stages["unet"]["file"], settings, frames)
    others = {name: desc for name, desc in stages.items() if name != "unet"}
    if others:
        results.update(verify_stages(pipe, folder, others))
    for name, (abs_err, rel_err) in results.items():
        log.debug("verify %-22s max abs %.3e  max rel %.3e", name, abs_err, rel_err)
    check_errors(results, settings.precision)
    return results
