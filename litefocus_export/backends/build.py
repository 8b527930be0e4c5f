"""Engines per duration profile: export (cached) -> per-backend engine folder with a manifest.

``build_engines`` is what ``litefocus-export build`` runs. The folder is written to a temp name and
renamed when complete; a folder whose manifest carries the same key is reused as it is.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..artifacts.cache import cache_key, cache_root, folder_name
from ..artifacts.manifest import read_manifest, sha256_file, tool_versions, write_manifest
from ..artifacts.outputs import check_output_folder, path_lock, staged_folder
from ..core.choices import EngineBackend
from ..core.contract import DEFAULT_LEVELS, DEFAULT_SPARSE_RATIO, MIN_OPSET
from ..core.durations import DurationProfile
from ..core.errors import BuildError, EngineError, UsageError, check_choice
from ..export import EXPORT_FORMAT, ExportSettings
from ..models.specs import DEFAULT_SPEC, RANDOM_PREFIX, check_spec, spec_fingerprint
from . import BACKENDS
from .onnxruntime.memory import check_generation_memory
from .tensorrt.support import ATTENTION_IMPLS

log = logging.getLogger(__name__)
COPIED = ("tokenizer", "tokenizer_2", "scheduler_config.json")


DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class BuildSettings:
    """What to build; checked when constructed, so a bad value costs no model load.

    Args:
        model: model spec (default ``models.DEFAULT_SPEC``).
        profile: the durations the engines serve.
        backend: ``"onnxruntime"``, ``"tensorrt"`` or ``"openvino"`` (CPU).
        device: ONNX Runtime execution provider, ``"cpu"`` or ``"cuda"`` (OpenVINO: ``"cpu"``).
        attention_impl: TensorRT's LiteFocus implementation, ``"native"`` or ``"plugin"``.
        export: the ONNX export settings (attention, ratio, levels, precision).
        attention_policy: how the attention was chosen (``durations.resolve_attention``), kept in the manifest.
        engine_precision: OpenVINO only: ``"fp32"``, ``"bf16"``, ``"int8"``, or None / ``"auto"`` (bf16 where the CPU
            has bf16 units, else fp32); built from the fp32 export.
        skip_memory_check: build even when a generation at the profile's longest duration would need more
            memory than this machine has available (default False: refused, ``backends/onnxruntime/memory.py``); for a
            build made here for a host with more memory.

    Raises:
        UsageError: any value outside its choices, or of the wrong type.
    """

    model: str = DEFAULT_SPEC
    profile: DurationProfile = field(default_factory=lambda: DurationProfile.for_seconds(10))
    backend: EngineBackend = "onnxruntime"
    device: Literal["cpu", "cuda"] = "cpu"
    attention_impl: Literal["plugin", "native"] = "native"
    export: ExportSettings = field(default_factory=ExportSettings)
    skip_memory_check: bool = False
    engine_precision: str | None = None
    attention_policy: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_spec(self.model)
        check_choice("backend", self.backend, BACKENDS)
        check_choice("device", self.device, DEVICES)
        check_choice("attention_impl", self.attention_impl, ATTENTION_IMPLS)
        if not isinstance(self.profile, DurationProfile):
            raise UsageError(f"profile must be a DurationProfile, got {type(self.profile).__name__}")
        if not isinstance(self.export, ExportSettings):
            raise UsageError(f"export must be ExportSettings, got {type(self.export).__name__}")
        if not isinstance(self.skip_memory_check, bool):
            raise UsageError(f"skip_memory_check must be True or False, got {self.skip_memory_check!r}")
        if self.backend == "openvino":
            self._check_openvino()
        elif self.engine_precision is not None:
            raise UsageError(f"precision {self.engine_precision} is an OpenVINO precision: use --backend openvino, "
                             f"or --precision fp32|fp16 for {self.backend}")

    def _check_openvino(self) -> None:
        from .openvino.cpu import OPENVINO_PRECISIONS

        if self.device != "cpu":
            raise UsageError("the openvino backend builds for the CPU: leave --device at cpu")
        if self.export.precision != "fp32":
            raise UsageError(f"OpenVINO engines are built from the fp32 export, not {self.export.precision}: "
                             f"use --precision {'|'.join(OPENVINO_PRECISIONS)} (or auto)")
        if self.engine_precision not in (None, "auto", *OPENVINO_PRECISIONS):
            raise UsageError(f"precision must be one of auto, {', '.join(OPENVINO_PRECISIONS)} for the openvino "
                             f"backend, got {self.engine_precision!r}")

    @property
    def precision(self) -> str:
        """What the engines compute in: the export's precision, or OpenVINO's (auto resolved for this CPU)."""
        if self.backend != "openvino":
            return self.export.precision
        if self.engine_precision not in (None, "auto"):
            return self.engine_precision
        from .openvino.cpu import cpu_features, default_precision

        return default_precision(cpu_features())

    @property
    def attention_record(self) -> dict[str, Any]:
        """How the attention was chosen, as the manifest keeps it: ``attention_policy``, or the attention asked for
        (so a build that named the attention and one that did not share one key and one folder)."""
        return self.attention_policy or {"requested": self.export.attention}


def export_folder(settings: BuildSettings, stages: tuple[str, ...] | None) -> Path:
    """Where the cache keeps the export of ``settings`` with ``stages`` (None: every stage)."""
    export = settings.export
    tools = tool_versions("litefocus-export", "torch", "diffusers", "transformers", "onnx")
    key = cache_key({"model": spec_fingerprint(settings.model), "attention": export.attention,
                     "ratio": export.sparse_ratio, "levels": export.levels, "opset": export.opset,
                     "precision": export.precision, "stages": stages, "tools": tools, "format": EXPORT_FORMAT})
    return cache_root() / "exports" / f"{folder_name(settings.model)}-{export.attention}-{key}"


def cached_export(settings: BuildSettings) -> Path:
    """The ONNX export for ``settings`` from the cache, exporting it first when absent.

    A build of some stages also takes a cached export of every stage (the build uses the stages it asks
    for). Two processes wanting one entry take turns (a lock); an entry that fails its checks (a killed
    export, a changed file) is exported again, with one line saying why.
    """
    from ..export import export_pipeline

    wanted = settings.export.stages
    if wanted is not None:
        superset = export_folder(settings, None)
        with path_lock(superset):
            if superset.exists() and _intact(superset):
                log.info("reusing cached export %s", superset)
                return superset
    folder = export_folder(settings, wanted)
    with path_lock(folder):
        if folder.exists():
            try:
                read_manifest(folder)
            except EngineError as exc:
                log.warning("cached export %s is damaged (%s); exporting it again", folder.name, exc)
            else:
                log.info("reusing cached export %s", folder)
                return folder
        else:
            log.info("exporting %s to ONNX (cached at %s) ...", settings.model, folder)
        export_pipeline(settings.model, folder, settings.export, force=True)
    return folder


def _intact(folder: Path) -> bool:
    try:
        read_manifest(folder)
    except EngineError:
        return False
    return True


def built_stages(settings: BuildSettings, export_manifest: dict[str, Any]) -> dict[str, Any]:
    """The export manifest with only the stages ``settings`` asks for (all when it names none)."""
    wanted = settings.export.stages
    if wanted is None:
        return export_manifest
    missing = [s for s in wanted if s not in export_manifest["stages"]]
    if missing:
        have = ", ".join(export_manifest["stages"])
        raise BuildError(f"the export has no {', '.join(missing)} stage (stages: {have})")
    return {**export_manifest, "stages": {k: v for k, v in export_manifest["stages"].items() if k in wanted}}


def engine_key(settings: BuildSettings, export_manifest: dict[str, Any], backend: dict[str, Any]) -> str:
    # the model's fingerprint (configs, and for a hub id the commit it resolved to) as well as the files
    return cache_key({"model": export_manifest["model"].get("fingerprint"),
                      "files": {k: v["sha256"] for k, v in export_manifest["files"].items()},
                      "litefocus": export_manifest.get("litefocus"), "stages": sorted(export_manifest["stages"]),
                      "profile": settings.profile.to_dict(), "precision": settings.export.precision,
                      "backend": backend, "attention_policy": settings.attention_record})


def engine_folder_name(settings: BuildSettings) -> str:
    """``<model>-<profile>-<attention>[-<other settings>]-<backend>-<device or impl>-<precision>``.

    Every setting of the build is in the name, the ones left at their defaults omitted (``r0.2`` sparse ratio,
    ``l8_4`` levels, ``opset19``, the stages when not all): builds with other settings never share a folder,
    and the default build keeps a name a person can type.
    """
    export = settings.export
    extras = []
    if export.attention == "litefocus" and export.sparse_ratio != DEFAULT_SPARSE_RATIO:
        extras.append(f"r{export.sparse_ratio:g}")
    if export.attention == "litefocus" and export.levels != DEFAULT_LEVELS:
        extras.append("l" + "_".join(map(str, export.levels)))
    if export.opset != MIN_OPSET:
        extras.append(f"opset{export.opset}")
    if export.stages is not None:
        extras.append("_".join(export.stages))
    # two snapshot folders may share a name: theirs carries the configs' fingerprint (built-in specs are unique)
    model = settings.model if str(settings.model).startswith(RANDOM_PREFIX) else \
        f"{folder_name(settings.model)}-{spec_fingerprint(settings.model)[:8]}"
    return folder_name(model, settings.profile.name, export.attention, *extras, settings.backend,
                       settings.attention_impl if settings.backend == "tensorrt" else settings.device,
                       settings.precision)


def build_engines(settings: BuildSettings, out_root: str | os.PathLike = "engines", *, force: bool = False) -> Path:
    """Build (or reuse) the engine folder for ``settings`` under ``out_root``; returns its path.

    The folder's name carries the engine key, so builds with other settings never overwrite each other. Two
    builds of one folder take turns (a lock): the second finds the first's result up to date. The folder is
    written in a partial folder beside it and renamed into place; one already there that is not an engine
    or export folder is refused (``force`` replaces it). A profile whose longest generation would not fit in this
    machine's available memory is refused before anything is written (:func:`check_memory`).
    """
    out_root = Path(out_root)
    if out_root.exists() and not out_root.is_dir():
        raise UsageError(f"cannot build into {out_root}: it exists and is not a folder")
    backend = _backend(settings)
    target = check_output_folder(out_root / engine_folder_name(settings), force=force)
    export_dir = cached_export(settings)
    export_manifest = built_stages(settings, read_manifest(export_dir))
    check_memory(settings, export_dir, export_manifest)
    key = engine_key(settings, export_manifest, backend.info)
    with path_lock(target):
        try:
            if read_manifest(target).get("engine_key") == key:
                log.info("engines up to date: %s", target)
                return target
        except EngineError:
            pass
        with staged_folder(target, force=force) as tmp:
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
                    "litefocus": export_manifest["litefocus"],
                    "attention_policy": settings.attention_record,
                    "precision": backend.info.get("precision", export_manifest["precision"]),
                    "profiles": [settings.profile.to_dict()],
                    "latent_frames": list(settings.profile.latent_frames()),
                    "backend": backend.info, "stages": stages,
                    "export": {"folder": str(export_dir),
                               "manifest_sha256": sha256_file(export_dir / "manifest.json")},
                    "tools": tool_versions("litefocus-export", "onnxruntime", "numpy", "tensorrt", "polygraphy",
                                           "openvino", "nncf"),
                    "build_seconds": round(time.perf_counter() - start, 2)}
            write_manifest(tmp, data, sorted(os.listdir(tmp)))
    return target


def check_memory(settings: BuildSettings, export_dir: Path, export_manifest: dict[str, Any]) -> None:
    """Refuse (``BuildError``) CPU engines whose generation at the profile's longest duration would not fit in this
    machine's available memory (``memory.check_generation_memory``), unless skipped.

    The estimate models ONNX Runtime's graphs; OpenVINO engines run the same fused attention and are checked with it.
    GPU engines (TensorRT, ONNX Runtime on CUDA) hold their activations in GPU memory, which this does not check.
    """
    if settings.skip_memory_check:
        log.debug("memory check skipped (skip_memory_check)")
        return
    if settings.backend == "tensorrt" or settings.device != "cpu":
        log.info("memory: not checked for %s engines on the GPU", settings.backend)
        return
    check_generation_memory(export_dir, export_manifest, settings.profile.max_s)


def _backend(settings: BuildSettings) -> Any:
    """The backend's build step (``build(export_dir, export_manifest, out) -> stage entries`` and ``info``)."""
    if settings.backend == "onnxruntime":
        from .onnxruntime.builder import OnnxRuntimeBackend

        return OnnxRuntimeBackend(settings.device)
    if settings.backend == "openvino":
        from .openvino.builder import VALIDATION_SECONDS, OpenVinoBackend

        return OpenVinoBackend(settings.engine_precision, min(VALIDATION_SECONDS, settings.profile.max_s))
    from .tensorrt.builder import TensorRTBackend

    try:
        return TensorRTBackend(settings.profile.latent_frames(), settings.attention_impl)
    except ImportError as exc:
        raise BuildError(f"the tensorrt backend is unavailable: {exc}") from None
