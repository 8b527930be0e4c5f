"""Where the kernels for runtimes (``plugins/``: the Triton kernel, the TensorRT plugin) are imported from.

Installed, ``plugins/`` is the package ``litefocus_export.plugins``; in a source checkout on ``sys.path`` that is
not installed, it is the top-level ``plugins``. Importing this module is cheap (nothing is imported here).
"""

from __future__ import annotations

import importlib
from types import ModuleType


def plugin_module(name: str) -> ModuleType:
    """``plugins/<name>`` as a module, e.g. ``plugin_module("triton.dual_sparse_attention")``."""
    try:
        return importlib.import_module(f"litefocus_export.plugins.{name}")
    except ModuleNotFoundError as missing:
        if not (missing.name or "").startswith("litefocus_export.plugins"):
            raise
        return importlib.import_module(f"plugins.{name}")
