"""What each module may import: the runtime, contracts and CLI start without torch (docs/design.md §5)."""

from __future__ import annotations

import subprocess
import sys

import pytest

TORCH = ("torch", "diffusers", "transformers")
HEAVY = (*TORCH, "onnx", "onnxscript")
CASES = {
    "litefocus_export": HEAVY,
    "litefocus_export.cli": HEAVY,
    "litefocus_export.core.contract": (*HEAVY, "onnxruntime"),
    "litefocus_export.core.geometry": (*HEAVY, "onnxruntime"),
    "litefocus_export.core.durations": (*HEAVY, "onnxruntime"),
    "litefocus_export.artifacts.manifest": (*HEAVY, "onnxruntime"),
    "litefocus_export.core.request": (*HEAVY, "onnxruntime"),
    "litefocus_export.runtime": HEAVY,
    "litefocus_export.runtime.schedulers": HEAVY,
    "litefocus_export.backends": HEAVY,
    "litefocus_export.backends.onnxruntime": HEAVY,
    "litefocus_export.backends.build": TORCH,
    "litefocus_export.backends.tensorrt.builder": (*HEAVY, "tensorrt", "polygraphy"),
    "litefocus_export.backends.tensorrt.runner": (*HEAVY, "tensorrt", "polygraphy"),
    "litefocus_export.plugins.tensorrt.dual_sparse_attention_plugin": (*HEAVY, "triton", "tensorrt"),
    "litefocus_export.export": TORCH,
    "litefocus_export.models": TORCH,
    "litefocus_export.report": TORCH,
}


@pytest.mark.parametrize("module", list(CASES))
def test_import_is_light(module: str) -> None:
    forbidden = CASES[module]
    code = (f"import sys, {module}; "
            f"print(sorted(m for m in {forbidden!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"{module} imported {out.stdout.strip()}"
