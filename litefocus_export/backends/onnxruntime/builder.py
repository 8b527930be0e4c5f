"""ONNX Runtime engines: each stage saved as an offline-optimised graph plus its session settings.

Each stage is first rewritten for ORT (``rewrites.py``: DualSparseAttention and the full
attention layers as contrib MultiHeadAttention, flash-style kernels instead of materialised scores);
the manifest records per stage how often each rewrite fired.
The saved graph then has ORT's portable graph optimisations applied once at build time (constants
folded, ops fused); the runtime session adds the hardware-specific ones at load for the VAE decoder only
(``runner.LOAD_LEVELS``). The engine key records the CPU features anyway.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ...core.errors import BuildError, first_line
from ...graphs.files import rewrite_to_file
from .rewrites import REWRITES, REWRITES_VERSION, rewrite_for_onnxruntime
from .runner import session_options

log = logging.getLogger(__name__)
SAVED_LEVEL = "ORT_ENABLE_EXTENDED"  # part of the engine key: a change rebuilds
PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def device_of(providers: list[str]) -> str:
    return "cuda" if providers and providers[0] == "CUDAExecutionProvider" else "cpu"


def available_device(device: str) -> list[str]:
    import onnxruntime as ort

    providers = PROVIDERS[device]
    if providers[0] not in ort.get_available_providers():
        raise BuildError(f"ONNX Runtime here has no {providers[0]} (installed: "
                         f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu or use --device cpu")
    return providers


class OrtEngineFromOnnx:
    """Loader step: ONNX file -> optimised ONNX Runtime graph written to ``out_path``."""

    def __init__(self, onnx_path: Path, out_path: Path, providers: list[str]):
        self.onnx_path, self.out_path, self.providers = onnx_path, out_path, providers
        self.rewrites: dict[str, int] = {}  # how often each engine rewrite fired, once built

    def __call__(self) -> Path:
        import onnxruntime as ort

        start = time.perf_counter()
        log.info("building %s for ONNX Runtime (rewrites, graph optimisation) ...", self.onnx_path.name)
        work = self.out_path.with_name(f".rewritten-{self.onnx_path.name}")
        side = work.with_name(work.name + ".data")
        try:
            self.rewrites = rewrite_to_file(self.onnx_path, work, rewrite_for_onnxruntime, "ONNX Runtime")
            source = work if any(self.rewrites.values()) else self.onnx_path
            # EXTENDED, not ALL: the saved graph keeps standard layouts; the runtime session applies the
            # CPU-specific layout transforms (NCHWc) at load where they pay (runner.LOAD_LEVELS). A saved
            # ALL-level graph measured 7% slower.
            options = session_options(arena=True, optimization_level=SAVED_LEVEL, optimized_path=self.out_path)
            ort.InferenceSession(str(source), options, providers=self.providers)
        except Exception as exc:  # noqa: BLE001 - onnx and ORT raise their own exception types
            raise BuildError(f"ONNX Runtime could not build {self.onnx_path.name}: {first_line(exc)}") from exc
        finally:
            for path in (work, side):
                path.unlink(missing_ok=True)
        log.info("built %s in %.1f s", self.out_path.name, time.perf_counter() - start)
        return self.out_path


def backend_info(providers: list[str]) -> dict[str, Any]:
    import onnxruntime as ort

    from ...artifacts.cache import cpu_architecture

    info = {"name": "onnxruntime", "version": ort.__version__, "providers": providers,
            "device": device_of(providers), "architecture": cpu_architecture(),
            "saved_graph_optimization": SAVED_LEVEL,
            "graph_rewrites": {"version": REWRITES_VERSION, "passes": list(REWRITES)}}
    if info["device"] == "cuda":
        info["architecture"] = _cuda_architecture() or info["architecture"]
    return info


def _cuda_architecture() -> str | None:
    try:
        import subprocess

        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return out.strip().splitlines()[0]
    except Exception:  # noqa: BLE001 - absent tool or driver
        return None


class OnnxRuntimeBackend:
    """The ``build`` step for ONNX Runtime: every stage as a rewritten, offline-optimised graph."""

    def __init__(self, device: str):
        self.providers = available_device(device)
        self.info = backend_info(self.providers)  # part of the engine key; asked for once per build

    def build(self, export_dir: Path, export_manifest: dict[str, Any], out: Path) -> dict[str, Any]:
        """Build every stage of the export into ``out``; returns the manifest's stage entries."""
        stages = {}
        for name, desc in export_manifest["stages"].items():
            engine = OrtEngineFromOnnx(export_dir / desc["file"], out / desc["file"], self.providers)
            engine()
            stages[name] = {**desc, "engine": desc["file"], "ort_rewrites": engine.rewrites}
        return stages
