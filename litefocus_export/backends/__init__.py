"""Engine backends, one subpackage each (polygraphy's ``backend/<name>/``): its builder (loader steps) and
its torch-free runner together, with its own support code.

- ``onnxruntime/``: graph rewrites, ``OnnxRuntimeBackend`` (builder), ``OrtStage`` (runner), ``memory.py`` (the
  peak memory of a generation on the engines, from the engine graphs);
- ``tensorrt/``: version/plugin support, profile shapes, ``TensorRTBackend`` (builder), ``TrtStage`` (runner);
- ``openvino/``: the DualSparseAttention lowering, CPU features and precisions, ``OpenVinoBackend`` (builder),
  ``OvStage`` (runner);
- ``build.py``: ``build_engines`` (export, memory check, then one backend's build).

The runtime opens stages through :func:`open_stage`, by the backend an engine manifest names; importing
this package loads no build code (``backends.build`` imports the export side).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..core.choices import ENGINE_BACKENDS as BACKENDS
from ..core.errors import EngineError


class Runner(Protocol):
    """What every backend's stage runner is (polygraphy's runner lifecycle): loaded when constructed, ``runner(feeds)
    -> {output name: array}`` (extra feeds ignored), ``close()`` frees it, usable as a context manager."""

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc: object) -> None: ...


def open_stage(backend: Mapping[str, Any], path: Path, threads: int = 0,
               stage: Mapping[str, Any] | None = None, name: str | None = None) -> Runner:
    """The runner of one engine stage file, for the backend a manifest's ``backend`` entry describes (``stage``: the
    stage's manifest entry, for settings a backend keeps per stage; ``name``: the stage's name, for settings a
    backend's runtime chooses per stage).

    Raises:
        EngineError: an unknown backend, or a file the backend cannot load.
    """
    kind = backend.get("name")
    if kind == "onnxruntime":
        from .onnxruntime.runner import CPU_PROVIDERS, OrtStage, load_level

        return OrtStage(path, backend.get("providers") or CPU_PROVIDERS, threads,
                        optimization_level=load_level(name))
    if kind == "tensorrt":
        from .tensorrt.runner import TrtStage

        return TrtStage(path)
    if kind == "openvino":
        from .openvino.cpu import check_runs_here, cpu_features
        from .openvino.runner import OvStage

        check_runs_here(dict(backend), cpu_features())
        stage = stage or {}
        activations = stage.get("activations") or backend.get("activations", "fp32")
        static = {"per_shape": True, "dynamic": False}.get(stage.get("openvino_compile", ""))
        return OvStage(path, activations, threads, static_shapes=static)
    raise EngineError(f"unknown engine backend {kind!r} in the manifest; this tool runs {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Runner", "open_stage"]
