"""OpenVINO engines for the CPU: every stage as OpenVINO IR, its error against fp32 measured at build.

Loader steps (polygraphy style): :class:`OvModelFromOnnx` (the ONNX frontend with the DualSparseAttention lowering,
``lowering.py``), :class:`CompressWeights` (int8 weights with NNCF, the ``int8`` extra), :class:`SaveIR`; then
:func:`stage_error` runs the saved stage at its precision against ONNX Runtime on the export's fp32 graph, on the
same seeded inputs, and the manifest keeps both errors per stage (``inspect`` and the report show them).

Precisions (``--precision``): ``fp32``; ``bf16`` (activations on the CPU's bf16 units, weights converted at load);
``int8`` (weights compressed to int8, activations bf16 where the CPU has bf16 units, else fp32). The default is
bf16 where the CPU has bf16 units, else fp32 (``cpu.py``). Softmax and normalisations accumulate in fp32 inside
OpenVINO's CPU kernels in every precision; the scheduler's arithmetic is numpy in the runtime.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...core.contract import BATCH, EXAMPLE_TOKENS, LATENT_FRAMES, MEL_FRAMES, UNET, example_feeds, example_unet_feeds
from ...core.errors import BuildError, UsageError, first_line
from ...core.geometry import AudioGeometry
from .cpu import CpuFeatures, activation_precision, cpu_features, required_features, resolve_precision
from .runner import STATIC_STAGES, OvStage

log = logging.getLogger(__name__)
LOWERING_VERSION = 3  # part of the engine key: a change to lowering.py or the steps here rebuilds
VALIDATION_SECONDS = 10.0  # stage errors are measured at min(this, the profile's longest duration)
INT8_MODE = "INT8_ASYM"  # NNCF's data-free per-channel int8 weight compression
# how each precision stores its weights (int8: the matrices int8, the rest fp16)
WEIGHTS = {"fp32": "fp32", "bf16": "fp16", "int8": "int8"}


def require_int8_extra() -> None:
    """One line (exit 2) when ``--precision int8`` is asked for without NNCF installed."""
    if importlib.util.find_spec("nncf") is None:
        raise UsageError("--precision int8 needs the int8 extra (nncf not installed): "
                         "pip install 'litefocus-export[int8]'")


class OvModelFromOnnx:
    """Loader step: ONNX file -> ``openvino.Model``; DualSparseAttention and the full-attention chains become fused
    attention (``lowering.py``). ``work`` is a folder for the rewritten ONNX, removed once converted."""

    def __init__(self, onnx_path: Path, work: Path):
        self.onnx_path, self.work = onnx_path, work
        self.rewrites: dict[str, int] = {}

    def __call__(self) -> Any:
        from openvino.frontend import FrontEndManager

        from ...graphs.files import rewrite_to_file
        from .lowering import conversion_extensions, softmax_attention_to_mha

        rewritten = self.work / f".openvino-{self.onnx_path.name}"
        side = rewritten.with_name(rewritten.name + ".data")
        try:
            self.rewrites = rewrite_to_file(self.onnx_path, rewritten, softmax_attention_to_mha, "OpenVINO")
            frontend = FrontEndManager().load_by_framework("onnx")
            for extension in conversion_extensions():
                frontend.add_extension(extension)
            source = rewritten if any(self.rewrites.values()) else self.onnx_path
            # the frontend alone, not convert_model: see lowering.py on its MOC passes
            return frontend.convert(frontend.load(str(source)))
        except Exception as exc:  # noqa: BLE001 - onnx and the frontend raise their own types
            raise BuildError(f"OpenVINO could not convert {self.onnx_path.name}: {first_line(exc)}") from None
        finally:
            for path in (rewritten, side):
                path.unlink(missing_ok=True)


class CompressWeights:
    """Loader step: a model -> the same model with its matrix weights compressed to int8 (NNCF, data-free)."""

    def __init__(self, model: Any):
        self.model = model

    def __call__(self) -> Any:
        import nncf

        model = self.model() if callable(self.model) else self.model
        if not logging.getLogger("litefocus_export").isEnabledFor(logging.DEBUG):
            nncf.set_log_level(logging.ERROR)  # its statistics table and progress bar only with --debug
        return nncf.compress_weights(model, mode=getattr(nncf.CompressWeightsMode, INT8_MODE))


class SaveIR:
    """Loader step: a model -> ``xml_path`` (+ ``.bin``). ``fp16_weights``: float weights stored in fp16 (bf16 and
    int8 builds: the CPU plugin converts them at compile and keeps the mapped file pages it read, so fp32 storage
    costs their size again in resident memory: T5's encoder took 2576 MB after its first run with fp32 storage, 1249
    MB with fp16); fp32 builds keep fp32."""

    def __init__(self, model: Any, xml_path: Path, fp16_weights: bool = False):
        self.model, self.xml_path, self.fp16_weights = model, xml_path, fp16_weights

    def __call__(self) -> Path:
        import openvino as ov

        model = self.model() if callable(self.model) else self.model
        ov.save_model(model, str(self.xml_path), compress_to_fp16=self.fp16_weights)
        return self.xml_path


def validation_sizes(geometry: AudioGeometry, seconds: float) -> dict[str, int]:
    frames = geometry.latent_frames(seconds)
    return {BATCH: 1, LATENT_FRAMES: frames, MEL_FRAMES: frames * geometry.vae_scale, **EXAMPLE_TOKENS}


def stage_feeds(name: str, desc: dict[str, Any], sizes: dict[str, int], sparse_ratio: float) -> dict[str, np.ndarray]:
    """The seeded inputs a stage's error is measured on: the UNet as it runs (batch 2, fresh samples)."""
    if name == UNET:
        return example_unet_feeds(desc["inputs"], sizes[LATENT_FRAMES], seed=0,
                                  layers=desc.get("litefocus_layers", []), sparse_ratio=sparse_ratio)
    return example_feeds(desc["inputs"], sizes, np.random.default_rng(0))


def relative_errors(actual: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """``max_rel``: max abs error / max abs expected; ``rms_rel``: RMS error / RMS expected."""
    diff = actual.astype(np.float64) - expected.astype(np.float64)
    scale = float(np.abs(expected).max())
    rms = float(np.sqrt(np.mean(np.square(expected, dtype=np.float64))))
    return {"max_rel": float(np.abs(diff).max()) / max(scale, 1e-30),
            "rms_rel": float(np.sqrt(np.mean(np.square(diff)))) / max(rms, 1e-30)}


def stage_error(onnx_path: Path, xml_path: Path, activations: str, feeds: dict[str, np.ndarray]) -> dict[str, float]:
    """The saved stage at ``activations`` vs ONNX Runtime running the export's fp32 graph, first output, same feeds."""
    from ..onnxruntime.runner import OrtStage

    with OrtStage(onnx_path) as reference:
        expected, first = reference(feeds), reference.outputs[0]
    with OvStage(xml_path, activations) as stage:
        actual = stage(feeds)
    return relative_errors(actual[first], expected[first])


def backend_info(precision: str, features: CpuFeatures) -> dict[str, Any]:
    import openvino as ov

    from ...artifacts.cache import cpu_architecture

    return {"name": "openvino", "version": ov.__version__, "device": "cpu", "architecture": cpu_architecture(),
            "precision": precision, "activations": activation_precision(precision, features),
            "weights": WEIGHTS[precision],
            "cpu_model": features.model, "cpu_features": features.names(),
            "cpu_features_required": required_features(precision, features),
            "lowering_version": LOWERING_VERSION}


class OpenVinoBackend:
    """The ``build`` step for OpenVINO on the CPU.

    Args:
        precision: ``fp32``, ``bf16``, ``int8``, or None / ``auto`` (bf16 where the CPU has bf16 units, else fp32).
        validate_seconds: the duration stage errors are measured at.

    Raises:
        UsageError: an unknown precision, bf16 on a CPU without bf16 units, int8 without NNCF.
    """

    def __init__(self, precision: str | None, validate_seconds: float = VALIDATION_SECONDS):
        self.features = cpu_features()
        self.precision = resolve_precision(precision, self.features)
        if self.precision == "int8":
            require_int8_extra()
        self.activations = activation_precision(self.precision, self.features)
        self.validate_seconds = validate_seconds
        self.info = backend_info(self.precision, self.features)  # part of the engine key

    def build(self, export_dir: Path, export_manifest: dict[str, Any], out: Path) -> dict[str, Any]:
        """Build every stage of the export into ``out``; returns the manifest's stage entries."""
        geometry = AudioGeometry.from_manifest(export_manifest["geometry"])
        sizes = validation_sizes(geometry, self.validate_seconds)
        ratio = float((export_manifest.get("litefocus") or {}).get("sparse_ratio", 0.0))
        stages = {}
        for name, desc in export_manifest["stages"].items():
            start = time.perf_counter()
            log.info("building %s for OpenVINO (%s) ...", desc["file"], self.precision)
            onnx_path = export_dir / desc["file"]
            xml = out / Path(desc["file"]).with_suffix(".xml").name
            convert = OvModelFromOnnx(onnx_path, out)
            model: Any = CompressWeights(convert) if self.precision == "int8" else convert
            SaveIR(model, xml, fp16_weights=self.precision != "fp32")()
            error = stage_error(onnx_path, xml, self.activations, stage_feeds(name, desc, sizes, ratio))
            log.info("built %s in %.1f s; error vs fp32 at %g s: max %.2e, rms %.2e", xml.name,
                     time.perf_counter() - start, self.validate_seconds, error["max_rel"], error["rms_rel"])
            stages[name] = {**desc, "engine": xml.name, "weights_file": xml.with_suffix(".bin").name,
                            "activations": self.activations, "openvino_rewrites": convert.rewrites,
                            "openvino_compile": "per_shape" if name in STATIC_STAGES else "dynamic",
                            "error_vs_fp32": {**error, "seconds": self.validate_seconds, "reference": "onnxruntime"}}
        return stages
