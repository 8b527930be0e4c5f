"""litefocus-export: LiteFocus dual-sparse attention for audio diffusion, from PyTorch to engines.

Importing the package is cheap and torch-free; the PyTorch API below loads on first use, so
``litefocus_export.runtime`` can be used where torch is not installed.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_TORCH_API = {
    "LiteFocusConfig": "litefocus_export.attention.config",
    "dual_sparse_attention": "litefocus_export.attention.op",
    "patch": "litefocus_export.attention.patching",
    "patch_unet": "litefocus_export.attention.patching",
    "unpatch": "litefocus_export.attention.patching",
    "patched": "litefocus_export.attention.patching",
    "litefocus_state": "litefocus_export.attention.patching",
    "load_pipeline": "litefocus_export.models",
}

__all__ = ["__version__", *_TORCH_API]


def __getattr__(name: str) -> Any:
    if name in _TORCH_API:
        import importlib

        return getattr(importlib.import_module(_TORCH_API[name]), name)
    raise AttributeError(f"module 'litefocus_export' has no attribute {name!r}")
