"""Run one ONNX Runtime engine stage: numpy in, numpy out (torch-free)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ...errors import EngineError, first_line

CPU_PROVIDERS = ("CPUExecutionProvider",)


def ort_log_severity() -> int:
    """ONNX Runtime's own log: its warnings (e.g. ~150 "Removing initializer" lines per UNet) only with --debug."""
    return 0 if logging.getLogger("litefocus_export").isEnabledFor(logging.DEBUG) else 3


class OrtStage:
    """One ONNX Runtime session: ``stage(feeds) -> {output name: array}``.

    Args:
        path: the stage's ``.onnx`` file.
        providers: ONNX Runtime execution providers, in order of preference.
        threads: intra-op threads (0: ONNX Runtime's default).

    Feeds may hold extra arrays (ignored). Raises ``EngineError`` (one line) when the file does not load
    or a run fails.
    """

    def __init__(self, path: Path, providers: list[str] | tuple[str, ...] = CPU_PROVIDERS, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = ort_log_severity()
        self.name = Path(path).name
        try:
            self.session = ort.InferenceSession(str(path), options, providers=list(providers))
        except Exception as exc:  # noqa: BLE001 - ORT's own exception types
            raise EngineError(f"cannot load {self.name}: {first_line(exc)}") from None
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            results = self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})
        except Exception as exc:  # noqa: BLE001 - ORT's own exception types (shapes, memory)
            raise EngineError(f"running {self.name} failed: {first_line(exc)}") from None
        return dict(zip(self.outputs, results))
