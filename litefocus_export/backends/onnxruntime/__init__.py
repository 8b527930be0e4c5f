"""ONNX Runtime backend: graph rewrites and the builder (build side), ``OrtStage`` (run side).

Importing this package is cheap: onnx and onnxruntime load inside the steps that use them.
"""

from .runner import OrtStage

__all__ = ["OrtStage"]
