"""Checks for a machine with a CUDA GPU, run as ``litefocus-export device-check CHECK`` (``scripts/device_check.sh``
runs all three on a lent device):

- ``kernel``: the fused Triton kernel, correctness then speed at the 80 s shape (``kernel.py``);
- ``e2e``: the real-size UNet and a whole generation, stock diffusers vs LiteFocus, measured (``e2e.py``; its
  ``e2e.md`` is rendered by ``render.py``);
- ``tensorrt``: the tiny model's TensorRT UNet engines (plugin and native) against ONNX Runtime (``tensorrt.py``).

Each check parses its own arguments (``--help``) and returns its exit status: 0 passed, 1 a check failed, 2 bad
arguments or a missing device. On CPU, ``kernel --cpu-smoke`` and ``e2e --device cpu`` run through Triton's
interpreter (the tests do).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

CHECKS = ("kernel", "e2e", "tensorrt")


def check_main(name: str) -> Callable[[list[str] | None], int]:
    """The ``main(argv) -> exit status`` of one check (imported on demand: each needs torch or TensorRT)."""
    return importlib.import_module(f"{__name__}.{name}").main
