"""Run one OpenVINO engine stage on the CPU: numpy in, numpy out (torch-free).

The stage is OpenVINO IR (``.xml`` + ``.bin``, the weights memory-mapped), compiled here for this CPU with the
folder's activation precision (``INFERENCE_PRECISION_HINT``): bf16 runs on the CPU's bf16 units, fp32 everywhere.
Weights are stored in fp32 (fp32 builds) or fp16 (bf16 builds; int8 builds keep their compressed matrices int8)
and converted by the plugin at compile.

Large stages (``STATIC_STAGES``) are compiled per input shape: OpenVINO's CPU plugin plans and reuses activation
memory only for static shapes. Measured on the real-size AudioLDM2 UNet at 80 s (bf16, batch 2, 2 threads, AMD
EPYC with AVX512-BF16): dynamic 11.2 s per step at 3356 MB peak RSS, static 10.1 s at 2566 MB, the compile 5.2 s
once per shape (every step of a generation has the same shape). The text stages, called with growing token counts,
stay dynamic.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import EngineError, first_line
from ...core.lifecycle import Closing

log = logging.getLogger(__name__)
OV_PRECISION = {"bf16": "bf16", "fp32": "f32"}  # our names -> OpenVINO's element types
# stage -> how many shapes stay compiled: one UNet or VAE (each holds its own repacked weights), the vocoder's
# full chunk and its last one
STATIC_STAGES = {"unet": 1, "vae_decoder": 1, "vocoder": 2}


def compile_options(activations: str, threads: int = 0) -> dict[str, Any]:
    """CPU plugin settings a stage is compiled with: precision, latency hint (one request at a time uses every
    core), threads (0: OpenVINO's default, every core)."""
    options: dict[str, Any] = {"INFERENCE_PRECISION_HINT": OV_PRECISION[activations], "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        options["INFERENCE_NUM_THREADS"] = int(threads)
    return options


class OvStage(Closing):
    """One OpenVINO model: ``stage(feeds) -> {output name: array}``; ``close()`` frees it.

    Args:
        path: the stage's ``.xml`` (its weights ``.bin`` beside it).
        activations: ``"bf16"`` or ``"fp32"``.
        threads: inference threads (0: OpenVINO's default).
        static_shapes: compile once per input shape (the most recent ``STATIC_STAGES[stage]`` kept, else 1) instead
            of once for every shape; default: for the stages named in ``STATIC_STAGES``.

    Feeds may hold extra arrays (ignored). Raises ``EngineError`` (one line) when the file does not load or a run
    fails.
    """

    def __init__(self, path: Path, activations: str = "fp32", threads: int = 0, static_shapes: bool | None = None):
        import openvino as ov

        self.name, self.path = Path(path).name, Path(path)
        self.options = compile_options(activations, threads)
        self.static = Path(path).stem in STATIC_STAGES if static_shapes is None else static_shapes
        self.keep = STATIC_STAGES.get(Path(path).stem, 1)
        self.compiled: OrderedDict[tuple, Any] = OrderedDict()
        try:
            self.core = ov.Core()
            model = self.core.read_model(str(path))
            self.inputs = {name for port in model.inputs for name in port.get_names()}
            if not self.static:
                self._remember(None, self.core.compile_model(model, "CPU", self.options))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
            raise EngineError(f"cannot load {self.name} in OpenVINO: {first_line(exc)}") from None
        # the model (its weights mapped from the .bin) is dropped once compiled: a bf16 compile holds its own copy,
        # and the mapped fp32 pages it read would otherwise stay resident; a new shape reads the file again
        self.closed = False

    def _remember(self, shapes: tuple | None, compiled: Any) -> Any:
        # every name of an output tensor: the frontend may keep an inner name beside the ONNX graph output's
        entry = (compiled, compiled.create_infer_request(), [sorted(port.get_names()) for port in compiled.outputs])
        self.compiled[shapes] = entry
        return entry

    def _for(self, feeds: dict[str, np.ndarray]) -> Any:
        """The compiled model (and its request) for these feeds' shapes."""
        if not self.static:
            return self.compiled[None]
        shapes = tuple(sorted((name, feeds[name].shape) for name in feeds))
        if shapes in self.compiled:
            self.compiled.move_to_end(shapes)
            return self.compiled[shapes]
        while len(self.compiled) >= self.keep:  # free older shapes before the new compile, not after
            self.compiled.popitem(last=False)
        wanted = dict(shapes)
        model = self.core.read_model(str(self.path))
        model.reshape({port: list(wanted[next(n for n in port.get_names() if n in wanted)]) for port in model.inputs})
        log.debug("compiling %s for %s", self.name, wanted)
        return self._remember(shapes, self.core.compile_model(model, "CPU", self.options))

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.closed:
            raise EngineError(f"{self.name} was closed")
        feeds = {k: v for k, v in feeds.items() if k in self.inputs}
        try:
            compiled, request, outputs = self._for(feeds)
            results = request.infer(feeds, share_inputs=True)
        except Exception as exc:  # noqa: BLE001 - shape or type mismatches come as RuntimeError
            raise EngineError(f"running {self.name} failed: {first_line(exc)}") from None
        out = {}
        for names, port in zip(outputs, compiled.outputs):
            value = np.array(results[port])  # a copy: the request reuses its output buffers on the next call
            out.update(dict.fromkeys(names, value))
        return out

    def close(self) -> None:
        """Free the compiled models; calling the stage afterwards is an error."""
        self.compiled.clear()
        self.closed = True
