"""What the TensorRT build and run sides share: the plugin module, the GPU probe, the version checks.

tensorrt is imported by ``require_tensorrt`` only, never at module import.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
from typing import Any

from ...core import kernels
from ...core.errors import EngineError, LiteFocusError, UsageError, first_line

log = logging.getLogger(__name__)

ATTENTION_IMPLS = ("plugin", "native")
# INT64 tensors and the TensorRT 10 I/O API; the plugin's own minimum is higher (plugins/tensorrt).
MIN_NATIVE_VERSION = (10, 0)
_INSTALL = "pip install 'litefocus-export[gpu]'"
# cuDeviceGetAttribute: CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR
_CC_MAJOR, _CC_MINOR = 75, 76


def plugin_module() -> Any:
    """The TensorRT plugin module (``plugins/tensorrt``), installed or from a source checkout."""
    return kernels.plugin_module("tensorrt.dual_sparse_attention_plugin")


def cuda_devices() -> list[tuple[str, str]]:
    """``(name, "sm_XY")`` of each visible CUDA device, from the driver library (empty without one)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        try:
            lib = ctypes.CDLL("nvcuda.dll")
        except OSError:
            return []
    count = ctypes.c_int(0)
    if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return []
    devices = []
    for index in range(count.value):
        device, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
        name = ctypes.create_string_buffer(256)
        if lib.cuDeviceGet(ctypes.byref(device), index) != 0:
            continue
        lib.cuDeviceGetName(name, len(name), device)
        lib.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, device)
        lib.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, device)
        devices.append((name.value.decode(errors="replace"), f"sm_{major.value}{minor.value}"))
    return devices


def require_tensorrt(attention_impl: str = "native", *, error: type[LiteFocusError] = EngineError) -> Any:
    """Import tensorrt, or raise ``error`` with one line saying what is missing.

    Checks, in order: tensorrt imports; its version is at least ``MIN_NATIVE_VERSION`` (or the plugin's
    ``MIN_TENSORRT_VERSION`` for ``attention_impl="plugin"``); a CUDA GPU is visible.
    """
    if attention_impl not in ATTENTION_IMPLS:
        raise UsageError(f"attention_impl must be plugin or native, got {attention_impl!r}")
    minimum = plugin_module().MIN_TENSORRT_VERSION if attention_impl == "plugin" else MIN_NATIVE_VERSION
    needs = f"the tensorrt backend needs TensorRT >= {'.'.join(map(str, minimum))} and an NVIDIA GPU"
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        raise error(f"{needs}: tensorrt is not installed here ({_INSTALL})") from None
    except Exception as exc:  # noqa: BLE001 - a broken install fails in many ways (missing libnvinfer, ...)
        raise error(f"{needs}: tensorrt is installed but does not load: {first_line(exc)}") from None
    version = getattr(trt, "__version__", "0")
    if plugin_module().version_tuple(version) < tuple(minimum):
        impl = " for --attention-impl plugin" if attention_impl == "plugin" else ""
        wanted = ".".join(map(str, minimum))
        raise error(f"{needs}{impl}: found TensorRT {version} (pip install -U 'tensorrt>={wanted}')")
    if not cuda_devices():
        raise error(f"{needs}: no CUDA device is visible here (driver library libcuda missing or no GPU)")
    return trt
