"""TensorRT plugin for ``ai.litefocus::DualSparseAttention`` nodes, as a TensorRT Python plugin.

The plugin is defined with ``tensorrt.plugin`` (quickly deployable plugins): a shape/type descriptor
(``@trtp.register``), an ahead-of-time implementation (``@trtp.aot_impl``) that compiles the fused Triton
kernel of ``plugins/triton`` to PTX with its launch grid and int32 arguments as symbolic shape
expressions, so built engines run without Python, and a JIT fallback (``@trtp.impl``) that calls the
Triton launcher on torch views of TensorRT's buffers.

Minimum TensorRT: 10.9. ``tensorrt.plugin`` itself arrived in 10.6, but only with JIT (Python
callback) implementations; ``tensorrt.plugin.aot_impl``, ``KernelLaunchParams``/``SymInt32`` and the
ONNX parser's support for AOT Python plugins arrived in 10.9. The AOT compile needs Triton >= 3.3
(``ASTSource`` with a dict signature and ``constexprs``).

Plugin namespace: TensorRT rejects dots in a Python plugin's namespace, so the plugin registers as
``litefocus::DualSparseAttention`` while the ONNX node's domain stays ``ai.litefocus``; the node's
``plugin_namespace`` attribute (``PLUGIN_NAMESPACE``) tells the parser which plugin takes it. Build
the network with ``network_creation_flags()`` so that the AOT implementation is chosen.

Nothing here imports tensorrt, triton or torch at module import.
"""

import functools
import hashlib
import importlib
import re
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from litefocus_export.core.contract import OP_ATTRIBUTES, OP_DOMAIN, OP_TYPE, PLUGIN_NAMESPACE
from litefocus_export.core.errors import BuildError

# The plugin claims the ONNX node the export writes (docs/design.md §2): the contract's names, not copies.
ONNX_DOMAIN, PLUGIN_NAME = OP_DOMAIN, OP_TYPE
PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{PLUGIN_NAME}"
PLUGIN_VERSION = "1"
# The AOT implementation receives attributes by position, in the node's order: the export writes this one.
PLUGIN_ATTRIBUTES = OP_ATTRIBUTES
MIN_TENSORRT_VERSION = (10, 9)

_PLUGINS_ROOT = Path(__file__).resolve().parent.parent
_KERNEL_FILE = _PLUGINS_ROOT / "triton" / "dual_sparse_attention.py"
# TensorRT type name -> (Triton pointer type, __cuda_array_interface__ typestr, torch dtype name)
_TYPES = {
    "FLOAT": ("fp32", "<f4", "float32"),
    "HALF": ("fp16", "<f2", "float16"),
    "BF16": ("bf16", "<i2", "bfloat16"),  # the array interface has no bf16: travel as int16, view back
    "INT64": ("i64", "<i8", "int64"),
}
_IO_TYPES = "FP32|FP16|BF16"
_registered = False


def plugin_files() -> list[Path]:
    """Source files that decide what the plugin computes (this module and the Triton kernel)."""
    return [Path(__file__).resolve(), _KERNEL_FILE]


def plugin_hash(files: Sequence[Path] | None = None) -> str:
    """sha256 over the plugin sources (``plugin_files()`` by default), for manifests and engine cache keys.

    Each file enters as ``<folder>/<name>`` plus its bytes, so the hash does not depend on where the
    package is installed.
    """
    digest = hashlib.sha256()
    for path in files if files is not None else plugin_files():
        path = Path(path)
        digest.update(f"{path.parent.name}/{path.name}".encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def version_tuple(version: str) -> tuple[int, ...]:
    """``"10.9.0.34"`` -> ``(10, 9, 0, 34)``; a suffix such as ``rc1`` or ``+cuda12`` is ignored."""
    match = re.match(r"\d+(\.\d+)*", version)
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def _require_tensorrt() -> ModuleType:
    """Import tensorrt and check that it has AOT Python plugins, else raise a one-line BuildError."""
    minimum = ".".join(map(str, MIN_TENSORRT_VERSION))
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as missing:
        raise BuildError(f"TensorRT plugin: tensorrt is not installed (need >= {minimum})") from missing
    version = getattr(trt, "__version__", "0")
    if version_tuple(version) < MIN_TENSORRT_VERSION or not hasattr(trt, "QuickPluginCreationRequest"):
        raise BuildError(
            f"TensorRT plugin: tensorrt {version} is too old, need >= {minimum} (AOT Python plugins)"
        )
    return trt


def _kernel_module() -> ModuleType:
    """The Triton kernel module, installed (``litefocus_export.plugins``) or from a source checkout."""
    try:
        return importlib.import_module("litefocus_export.plugins.triton.dual_sparse_attention")
    except ModuleNotFoundError as missing:
        if not (missing.name or "").startswith("litefocus_export.plugins"):
            raise BuildError(f"TensorRT plugin: the kernel needs {missing.name}, not installed") from missing
        return importlib.import_module("plugins.triton.dual_sparse_attention")


def register_plugins() -> None:
    """Register ``litefocus::DualSparseAttention`` with TensorRT's plugin registry (idempotent).

    Call before parsing an ONNX model with the op, and before building. Engines built with the AOT
    implementation need no registration (nor Python) to run.

    Raises:
        BuildError: tensorrt missing or older than ``MIN_TENSORRT_VERSION``, or the kernel's
            dependencies (torch, triton) missing.
    """
    global _registered
    if _registered:
        return
    _require_tensorrt()
    _define_plugin(importlib.import_module("tensorrt.plugin"), _kernel_module())
    _registered = True


def network_creation_flags() -> int:
    """``createNetworkV2`` flags that make TensorRT pick the AOT implementation (OR in your others)."""
    trt = _require_tensorrt()
    return 1 << int(trt.NetworkDefinitionCreationFlag.PREFER_AOT_PYTHON_PLUGINS)


def check_attributes(freq_bins: Any, scale: Any, same_frequency: Any, cross_frequency: Any) -> None:
    """Raise ``BuildError`` for attribute values of the wrong kind (e.g. exported in another order)."""
    flags_ok = all(isinstance(f, int) and f in (0, 1) for f in (same_frequency, cross_frequency))
    if not (isinstance(freq_bins, int) and freq_bins > 0 and isinstance(scale, float) and flags_ok):
        raise BuildError(
            f"{PLUGIN_ID}: bad attributes freq_bins={freq_bins!r} scale={scale!r} same_frequency="
            f"{same_frequency!r} cross_frequency={cross_frequency!r}; the node must carry them in the order "
            f"{', '.join(PLUGIN_ATTRIBUTES)}"
        )
    if not (same_frequency or cross_frequency):
        raise BuildError(f"{PLUGIN_ID}: same_frequency and cross_frequency are both off")


def aot_launch(q_shape: Sequence[Any], index_shape: Sequence[Any], freq_bins: int, block_t: int,
               cdiv: Any, kernels: ModuleType) -> tuple[tuple[Any, Any, Any], list[Any]]:
    """(grid, int32 kernel arguments) for contiguous ``(B, H, N, D)`` tensors and a contiguous sample index
    of shape ``index_shape``: ``(M,)`` (one sample for the batch) or ``(B, M)`` (one per batch row).

    Pure: on ints (tests) or TensorRT shape expressions with ``trtp.cdiv`` (the AOT implementation).
    """
    shape = tuple(q_shape[i] for i in range(4))
    grid = kernels.launch_grid(shape, freq_bins, block_t, cdiv)
    samples, index_row_stride = kernels.index_layout([index_shape[i] for i in range(len(index_shape))])
    return grid, kernels.aot_scalar_args(shape, samples, freq_bins, index_row_stride)


def cuda_array_interface(data_ptr: int, shape: Sequence[int], strides: Sequence[int],
                         type_name: str) -> dict[str, Any]:
    """``__cuda_array_interface__`` (v3) of a TensorRT buffer; strides in elements, as TensorRT gives them."""
    _, typestr, _ = _TYPES[type_name]
    itemsize = int(typestr[2:])
    return {
        "shape": tuple(int(d) for d in shape),
        "strides": tuple(int(s) * itemsize for s in strides),
        "typestr": typestr,
        "data": (int(data_ptr), False),
        "version": 3,
        "stream": None,  # the JIT implementation already runs on TensorRT's stream
    }


class _CudaArray:
    """Exposes a TensorRT plugin tensor to ``torch.as_tensor`` without a copy."""

    def __init__(self, tensor: Any) -> None:
        self.__cuda_array_interface__ = cuda_array_interface(
            tensor.data_ptr, tuple(tensor.shape), tuple(tensor.strides), tensor.dtype.name
        )
        self.torch_dtype = _TYPES[tensor.dtype.name][2]


def _as_torch(tensor: Any) -> Any:
    import torch

    wrapped = _CudaArray(tensor)
    return torch.as_tensor(wrapped, device="cuda").view(getattr(torch, wrapped.torch_dtype))


@functools.cache
def _compile(kernels: ModuleType, *key: Any) -> Any:
    # one compile per (dtype, head dim, scale, flags): every patched layer of a level shares it
    return kernels.compile_for_aot(*key)


def _head_dim(q: Any) -> int:
    dim = q.shape_expr[3]
    if not dim.is_constant:
        raise BuildError(f"{PLUGIN_ID}: the head dim (last axis of q) must be static")
    return dim.constant_value()


def _define_plugin(trtp: ModuleType, kernels: ModuleType) -> None:
    """The plugin's descriptor, type combinations, AOT and JIT implementations."""
    tensor = trtp.TensorDesc

    @trtp.register(PLUGIN_ID)
    def describe(q: tensor, k: tensor, v: tensor, sample_index: tensor, freq_bins: int, scale: float,
                 same_frequency: int, cross_frequency: int) -> tensor:
        return q.like()

    @trtp.autotune(PLUGIN_ID)
    def io_types(q, k, v, sample_index, outputs):
        # q, k, v and the output share one float type; the sample is int64 (docs/design.md §2)
        types = ", ".join([_IO_TYPES] * 3 + ["INT64", _IO_TYPES])
        return [trtp.AutoTuneCombination(types, "LINEAR")]

    @trtp.aot_impl(PLUGIN_ID)
    def compile_kernel(
        q, k, v, sample_index, freq_bins, scale, same_frequency, cross_frequency, outputs, tactic
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        check_attributes(freq_bins, scale, same_frequency, cross_frequency)
        key = (_TYPES[q.dtype.name][0], _head_dim(q), scale, bool(same_frequency), bool(cross_frequency))
        compiled = _compile(kernels, *key)
        grid, args = aot_launch(q.shape_expr, sample_index.shape_expr, freq_bins,
                                compiled.config.block_t, trtp.cdiv, kernels)
        launch = trtp.KernelLaunchParams()
        launch.grid_x, launch.grid_y, launch.grid_z = grid
        launch.block_x = compiled.threads
        launch.shared_mem = compiled.shared_mem
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(a) for a in args])
        return compiled.name, compiled.ptx, launch, extra

    @trtp.impl(PLUGIN_ID)
    def run(q, k, v, sample_index, freq_bins, scale, same_frequency, cross_frequency, outputs, stream):
        import torch

        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            q_t, k_t, v_t, index_t, out_t = (_as_torch(t) for t in (q, k, v, sample_index, outputs[0]))
            kernels.dual_sparse_attention_triton(
                q_t, k_t, v_t, index_t, freq_bins=freq_bins, scale=scale,
                same_frequency=bool(same_frequency), cross_frequency=bool(cross_frequency), out=out_t,
            )
