"""Large buffers go straight back to the OS: glibc's mmap threshold fixed at 1 MiB for the engines' activations.

Why: glibc serves an allocation from the mmap'd pages only above its mmap threshold, and after the first large
free it raises that threshold dynamically, up to 32 MiB. From then on every 1-32 MiB activation comes from the
heap, which grows while a stage runs and is not given back until it ends. ONNX Runtime's engines (no arena:
``OrtStage``) allocate and free such buffers node by node, so resident memory grows far past the graph's live
bytes. Measured on random:audioldm2, 2 threads, one run each (README "Long audio"): the VAE decoder at 40 s
peaked at 2975 MB with glibc's default and at 944 MB with a fixed 1 MiB threshold; a 160 s UNet step (batch 2)
at 5247 MB and 3516 MB. A fixed threshold also turns off the dynamic one.

``LITEFOCUS_MMAP_THRESHOLD`` sets the threshold in bytes (``0``: leave glibc's default; measurements only).
Elsewhere than glibc (macOS, musl) nothing is set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Mapping

from .errors import UsageError

log = logging.getLogger(__name__)
ENV = "LITEFOCUS_MMAP_THRESHOLD"
DEFAULT_THRESHOLD = 1 << 20
MAX_THRESHOLD = 32 << 20  # glibc refuses more (HEAP_MAX_SIZE / 2 on 64-bit)
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
_applied: int | None = None  # the threshold this process set, once set


def threshold_from_env(environ: Mapping[str, str] | None = None) -> int:
    """The threshold asked for (bytes; 0: glibc's default). A value that is not 0..32 MiB is one line."""
    text = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not text:
        return DEFAULT_THRESHOLD
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_THRESHOLD:
        raise UsageError(f"{ENV}={text[:40]!r} is not a byte count from 0 to {MAX_THRESHOLD} (0: glibc's default)")
    return value


def set_mmap_threshold(threshold: int) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process; False where there is no glibc
    ``mallopt`` or it refused the value."""
    if os.name != "posix" or not 0 < threshold <= MAX_THRESHOLD:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, threshold) == 1


def return_large_buffers_to_os() -> int | None:
    """Once per process, before an engine runs: the threshold of ``threshold_from_env`` set, and returned
    (None when left at glibc's default or not settable here)."""
    global _applied
    threshold = threshold_from_env()
    if _applied == threshold:
        return _applied
    if threshold and set_mmap_threshold(threshold):
        _applied = threshold
        log.debug("glibc mmap threshold fixed at %d bytes", threshold)
        return threshold
    return None
