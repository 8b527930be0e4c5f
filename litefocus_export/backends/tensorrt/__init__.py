"""TensorRT backend (through polygraphy): profile shapes and the builder (build side), ``TrtStage`` (run side).

tensorrt and polygraphy are imported inside the steps, never at package import.
"""

from .runner import TrtStage

__all__ = ["TrtStage"]
