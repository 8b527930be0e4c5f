"""Cache keys and folders for exports and engines (torch-free).

A key is the sha256 of everything that decides the bytes of the result (docs/design.md §4: profile,
precision, backend version, device architecture, plugin hash, source files), so a stale engine is
never reused and two different builds never share a folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    """``$LITEFOCUS_CACHE`` or ``~/.cache/litefocus-export``."""
    return Path(os.environ.get("LITEFOCUS_CACHE", Path.home() / ".cache" / "litefocus-export"))


def cache_key(parts: dict[str, Any]) -> str:
    """Stable 16-hex-digit key of a JSON-able dict."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cpu_architecture() -> str:
    """What a CPU-optimised ONNX Runtime graph depends on: machine type and vector extensions."""
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"^flags\s*:\s*(.*)$", text, re.MULTILINE)
        wanted = ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "avx2", "fma", "avx_vnni", "neon", "sve")
        flags = ",".join(f for f in (match.group(1).split() if match else []) if f in wanted)
    except OSError:
        pass
    return f"{platform.machine()}[{flags}]"


def folder_name(*parts: str) -> str:
    """Join parts into a safe folder name (``random:audioldm2-tiny`` -> ``audioldm2-tiny``)."""
    cleaned = [re.sub(r"[^A-Za-z0-9._-]+", "-", p.split(":")[-1].rstrip("/").split("/")[-1]).strip("-") for p in parts]
    return "-".join(c for c in cleaned if c)
