"""Run a TensorRT engine (plan) as one stage: numpy in, numpy out (torch-free).

tensorrt and polygraphy are imported when a stage is opened, never at module import. Engines built
with the LiteFocus plugin's AOT implementation embed their kernel and deserialize without Python
plugins; for one that does not (a JIT build), :class:`TrtStage` registers the plugin and retries.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import EngineError, LiteFocusError, first_line
from ...core.lifecycle import Closing
from .support import plugin_module, require_tensorrt

log = logging.getLogger(__name__)


def _polygraphy_error() -> type[Exception]:
    from polygraphy.exception import PolygraphyException

    return PolygraphyException


class TrtStage(Closing):
    """One TensorRT engine: ``stage(feeds) -> {output name: array}``.

    Args:
        engine_path: the serialized engine (plan).
        plugins: register the LiteFocus TensorRT plugin before deserializing: ``True`` always,
            ``False`` never, ``None`` (default) only when the engine does not deserialize without it.

    Feeds may hold extra arrays (ignored); each input is cast to the engine's dtype and checked against
    the engine's profile. Outputs are copies, safe to keep across calls.

    Raises:
        EngineError: tensorrt or a GPU missing, an engine that does not deserialize, an input missing or
            outside the engine's profile.
    """

    def __init__(self, engine_path: str | Path, *, plugins: bool | None = None):
        self.path = Path(engine_path)
        self.trt = require_tensorrt(error=EngineError)
        if not self.path.is_file():
            raise EngineError(f"no such engine file: {self.path}")
        if plugins:
            self._register_plugins()
        plan = self.path.read_bytes()
        engine = self._deserialize(plan)
        if engine is None and plugins is None:
            log.info("%s did not deserialize; registering the LiteFocus plugin and retrying", self.path.name)
            self._register_plugins()
            engine = self._deserialize(plan)
        if engine is None:
            raise EngineError(f"cannot load {self.path.name}: TensorRT {self.trt.__version__} could not deserialize "
                              f"it (built with another TensorRT version or GPU? rebuild it here)")
        from polygraphy.backend.trt import TrtRunner

        self.engine = engine
        self.runner = TrtRunner(engine, name=self.path.stem)
        self.runner.activate()
        io = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        mode = self.trt.TensorIOMode
        self.inputs = [n for n in io if engine.get_tensor_mode(n) == mode.INPUT]
        self.outputs = [n for n in io if engine.get_tensor_mode(n) == mode.OUTPUT]
        meta = self.runner.get_input_metadata(use_numpy_dtypes=False)
        self.dtypes = {name: meta[name].dtype.numpy() for name in self.inputs}
        # (min, max) shape of each input in the engine's one profile, checked on every call
        self.bounds = {name: tuple(tuple(s) for s in engine.get_tensor_profile_shape(name, 0))[::2]
                       for name in self.inputs}

    def _register_plugins(self) -> None:
        try:
            plugin_module().register_plugins()
        except LiteFocusError as exc:
            raise EngineError(f"{self.path.name} needs the LiteFocus TensorRT plugin: {exc}") from None

    def _deserialize(self, plan: bytes) -> Any:
        from polygraphy.backend.trt import engine_from_bytes

        try:
            return engine_from_bytes(plan)
        except _polygraphy_error():
            return None

    def _feed(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ready = {}
        for name in self.inputs:
            if name not in feeds:
                raise EngineError(f"{self.path.name}: input {name} missing (inputs: {', '.join(self.inputs)})")
            array = np.ascontiguousarray(feeds[name], dtype=self.dtypes[name])
            low, high = self.bounds[name]
            if len(array.shape) != len(low) or any(not lo <= d <= hi for d, lo, hi in zip(array.shape, low, high)):
                raise EngineError(f"{self.path.name}: input {name} of shape {array.shape} is outside the engine's "
                                  f"profile {low}..{high} (rebuild with a wider --profile)")
            ready[name] = array
        return ready

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ready = self._feed(feeds)
        try:
            results = self.runner.infer(ready)
        except _polygraphy_error() as exc:
            raise EngineError(f"TensorRT failed running {self.path.name}: {first_line(exc)}") from None
        # the runner reuses its host buffers on the next call
        return {name: np.array(results[name], copy=True) for name in self.outputs}

    def close(self) -> None:
        """Free the execution context and device buffers (the stage is unusable afterwards)."""
        runner = getattr(self, "runner", None)
        if runner is not None and runner.is_active:
            runner.deactivate()
