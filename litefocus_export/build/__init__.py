"""Engines per duration profile: export (cached) -> per-backend engine folder with a manifest.

``build_engines`` is what ``litefocus-export build`` runs. The folder is written to a temp name and
renamed when complete; a folder whose manifest carries the same key is reused as it is.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import BuildError, EngineError, UsageError
from ..manifest import read_manifest, tool_versions, write_manifest
from ..profiles import DurationProfile
from .cache import cache_key, cache_root, folder_name

log = logging.getLogger(__name__)
COPIED = ("tokenizer", "tokenizer_2", "scheduler_config.json")


@dataclass(frozen=True)
class BuildSettings:
    """What to build. ``export`` holds the ONNX export settings (attention, ratio, levels, precision)."""

    model: str = "random:audioldm2-tiny"
    profile: DurationProfile = DurationProfile.for_seconds(10)
    backend: Literal["onnxruntime", "tensorrt"] = "onnxruntime"
    device: Literal["cpu", "cuda"] = "cpu"
    attention_impl: Literal["plugin", "native"] = "native"
    export: Any = None  # ExportSettings

    def __post_init__(self) -> None:
        if self.backend not in ("onnxruntime", "tensorrt"):
            raise UsageError(f"backend must be onnxruntime or tensorrt, got {self.backend!r}")


def cached_export(settings: BuildSettings) -> Path:
    """The ONNX export for ``settings`` from the cache, exporting it first when absent."""
    from ..export import export_pipeline
    from ..models import spec_fingerprint

    export = settings.export
    tools = tool_versions("litefocus-export", "torch", "diffusers", "transformers", "onnx")
    key = cache_key({"model": spec_fingerprint(settings.model), "attention": export.attention,
                     "ratio": export.sparse_ratio, "levels": export.levels, "opset": export.opset,
                     "precision": export.precision, "stages": export.stages, "tools": tools})
    folder = cache_root() / "exports" / f"{folder_name(settings.model)}-{export.attention}-{key}"
    try:
        read_manifest(folder)
        log.info("reusing cached export %s", folder)
    except EngineError:
        log.info("exporting %s to ONNX (cached at %s) ...", settings.model, folder)
        export_pipeline(settings.model, folder, export)
    return folder


def engine_key(settings: BuildSettings, export_manifest: dict[str, Any], backend: dict[str, Any]) -> str:
    return cache_key({"files": {k: v["sha256"] for k, v in export_manifest["files"].items()},
                      "litefocus": export_manifest.get("litefocus"), "stages": sorted(export_manifest["stages"]),
                      "profile": settings.profile.to_dict(), "precision": settings.export.precision,
                      "backend": backend})


def engine_folder(out_root: Path, settings: BuildSettings) -> Path:
    export = settings.export
    return out_root / folder_name(settings.model, settings.profile.name, export.attention, settings.backend,
                                  settings.device if settings.backend == "onnxruntime" else settings.attention_impl,
                                  export.precision)


def build_engines(settings: BuildSettings, out_root: str | os.PathLike = "engines") -> Path:
    """Build (or reuse) the engine folder for ``settings`` under ``out_root``; returns its path."""
    from ..export import check_output_folder

    out_root = Path(out_root)
    check_output_folder(out_root)
    backend = _backend(settings)
    export_dir = cached_export(settings)
    export_manifest = read_manifest(export_dir)
    key = engine_key(settings, export_manifest, backend.info)
    target = engine_folder(out_root, settings)
    try:
        if read_manifest(target).get("engine_key") == key:
            log.info("engines up to date: %s", target)
            return target
    except EngineError:
        pass
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=out_root))
    try:
        start = time.perf_counter()
        stages = backend.build(export_dir, export_manifest, tmp)
        for name in COPIED:
            src = export_dir / name
            if src.is_dir():
                shutil.copytree(src, tmp / name)
            elif src.is_file():
                shutil.copy2(src, tmp / name)
        data = {"kind": "engine", "engine_key": key, "model": export_manifest["model"],
                "geometry": export_manifest["geometry"], "attention": export_manifest["attention"],
                "litefocus": export_manifest["litefocus"], "precision": export_manifest["precision"],
                "profiles": [settings.profile.to_dict()],
                "latent_frames": list(settings.profile.latent_frames()),
                "backend": backend.info, "stages": stages,
                "export": {"folder": str(export_dir), "manifest_sha256": _sha(export_dir / "manifest.json")},
                "tools": tool_versions("litefocus-export", "onnxruntime", "numpy", "tensorrt", "polygraphy"),
                "build_seconds": round(time.perf_counter() - start, 2)}
        write_manifest(tmp, data, sorted(os.listdir(tmp)))
        from ..export import replace_folder

        replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _sha(path: Path) -> str:
    from ..manifest import sha256_file

    return sha256_file(path)


class OnnxRuntimeBackend:
    """Every stage as an offline-optimised ONNX Runtime graph."""

    def __init__(self, device: str):
        from .onnxruntime import available_device, backend_info

        self.providers = available_device(device)
        self.info = backend_info(self.providers)  # part of the engine key; asked for once per build

    def build(self, export_dir: Path, export_manifest: dict[str, Any], out: Path) -> dict[str, Any]:
        from .onnxruntime import OrtEngineFromOnnx

        stages = {}
        for name, desc in export_manifest["stages"].items():
            engine = OrtEngineFromOnnx(export_dir / desc["file"], out / desc["file"], self.providers)
            engine()
            stages[name] = {**desc, "engine": desc["file"], "ort_rewrites": engine.rewrites}
        return stages


class TensorRTBackend:
    """UNet (and other stages) as TensorRT engines with one optimisation profile (build/tensorrt.py)."""

    def __init__(self, settings: BuildSettings):
        from .tensorrt import require_tensorrt, tensorrt_backend_info

        require_tensorrt()
        self.settings = settings
        # TensorRT version, GPU architecture and plugin hash: probed once per build (they query the driver)
        self.info = tensorrt_backend_info(settings.attention_impl)

    def build(self, export_dir: Path, export_manifest: dict[str, Any], out: Path) -> dict[str, Any]:
        from .tensorrt import TrtEngineFromOnnx, profile_shapes, text_token_ranges

        frames = self.settings.profile.latent_frames()
        info = self.info
        # timing caches are only valid for one TensorRT version on one GPU architecture
        cache = cache_root() / f"timing-trt{info.get('version')}-{info.get('architecture')}.cache"
        tokens = text_token_ranges(export_dir)
        stages = {}
        for name, desc in export_manifest["stages"].items():
            engine = Path(desc["file"]).with_suffix(".plan").name
            shapes = profile_shapes(name, desc["inputs"], frames, litefocus=export_manifest.get("litefocus"),
                                    layers=desc.get("litefocus_layers", []),
                                    text_tokens=tokens.get(name, (1, 64, 512)))
            TrtEngineFromOnnx(export_dir / desc["file"], out / engine, shapes,
                              precision=export_manifest["precision"], timing_cache=cache,
                              attention_impl=self.settings.attention_impl)()
            stages[name] = {**desc, "engine": engine}
        return stages


def _backend(settings: BuildSettings) -> Any:
    if settings.backend == "onnxruntime":
        return OnnxRuntimeBackend(settings.device)
    try:
        return TensorRTBackend(settings)
    except ImportError as exc:
        raise BuildError(f"the tensorrt backend is unavailable: {exc}") from None
