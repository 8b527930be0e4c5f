"""Run one OpenVINO engine stage on the CPU: numpy in, numpy out (torch-free).

The stage is OpenVINO IR (``.xml`` + ``.bin``), compiled here at load for this CPU with the folder's activation
precision (``INFERENCE_PRECISION_HINT``): bf16 runs on the CPU's bf16 units, fp32 everywhere. Weights compressed to
int8 at build time stay int8 in memory and are expanded inside the matrix kernels.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import EngineError, first_line

log = logging.getLogger(__name__)
OV_PRECISION = {"bf16": "bf16", "fp32": "f32"}  # our names -> OpenVINO's element types


def compile_options(activations: str, threads: int = 0) -> dict[str, Any]:
    """CPU plugin settings a stage is compiled with: precision, latency hint (one request at a time uses every
    core), threads (0: OpenVINO's default, every core)."""
    options: dict[str, Any] = {"INFERENCE_PRECISION_HINT": OV_PRECISION[activations], "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        options["INFERENCE_NUM_THREADS"] = int(threads)
    return options


class OvStage:
    """One compiled OpenVINO model: ``stage(feeds) -> {output name: array}``; ``close()`` frees it.

    Args:
        path: the stage's ``.xml`` (its weights ``.bin`` beside it).
        activations: ``"bf16"`` or ``"fp32"``.
        threads: inference threads (0: OpenVINO's default).

    Feeds may hold extra arrays (ignored). Raises ``EngineError`` (one line) when the file does not load or a run
    fails.
    """

    def __init__(self, path: Path, activations: str = "fp32", threads: int = 0):
        import openvino as ov

        self.name = Path(path).name
        try:
            core = ov.Core()
            self.compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                               compile_options(activations, threads))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
            raise EngineError(f"cannot load {self.name} in OpenVINO: {first_line(exc)}") from None
        self.request = self.compiled.create_infer_request()
        self.inputs = {name for port in self.compiled.inputs for name in port.get_names()}
        # every name of an output tensor: the frontend may keep an inner name beside the ONNX graph output's
        self.outputs = [sorted(port.get_names()) for port in self.compiled.outputs]

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.request is None:
            raise EngineError(f"{self.name} was closed")
        try:
            results = self.request.infer({k: v for k, v in feeds.items() if k in self.inputs}, share_inputs=True)
        except Exception as exc:  # noqa: BLE001 - shape or type mismatches come as RuntimeError
            raise EngineError(f"running {self.name} failed: {first_line(exc)}") from None
        out = {}
        for names, port in zip(self.outputs, self.compiled.outputs):
            value = np.array(results[port])  # a copy: the request reuses its output buffers on the next call
            out.update(dict.fromkeys(names, value))
        return out

    def close(self) -> None:
        """Free the compiled model; calling the stage afterwards is an error."""
        self.request = None
        self.compiled = None

    def __enter__(self) -> OvStage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
