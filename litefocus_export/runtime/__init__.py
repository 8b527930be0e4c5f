"""The engine runtime: numpy + ONNX Runtime / TensorRT, never torch or diffusers (docs/design.md §5)."""

from .engine import EngineFolder
from .sampler import Sampler, generate_from_engines

__all__ = ["EngineFolder", "Sampler", "generate_from_engines"]
