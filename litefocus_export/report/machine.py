"""The machine a report ran on: CPU model, cores, memory, OS and tool versions; what its measuring processes used
and why one failed (no torch import)."""

from __future__ import annotations

import logging
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from ..artifacts.manifest import tool_versions

log = logging.getLogger(__name__)

PACKAGES = ("litefocus-export", "torch", "onnxruntime", "onnxruntime-gpu", "openvino", "nncf", "tensorrt", "diffusers",
            "transformers", "numpy")


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU, cores (logical, physical, usable by this process), memory, OS, load and package versions."""
    import psutil

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": usable,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "load_average_at_start": [round(v, 2) for v in load] if load else None,
        "versions": tool_versions(*PACKAGES),
    }


def process_status_mb(field: str) -> float | None:
    """A memory field of this process's ``/proc/self/status`` (``VmHWM`` peak, ``VmRSS`` now) in MiB; None
    where /proc is missing."""
    try:
        match = re.search(rf"^{field}:\s*(\d+)\s*kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None


def failure_reason(proc: subprocess.CompletedProcess) -> str:
    if proc.returncode < 0:
        hint = " (out of memory?)" if proc.returncode == -9 else ""
        return f"the measuring process was killed by signal {-proc.returncode}{hint}"
    lines = [line.strip() for line in (proc.stderr or "").splitlines() if line.strip()]
    log.debug("measuring process failed:\n%s", proc.stderr)
    return lines[-1] if lines else f"the measuring process exited with code {proc.returncode}"


