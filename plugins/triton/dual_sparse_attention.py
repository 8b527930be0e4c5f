"""LiteFocus dual sparse attention as one fused Triton kernel (docs/design.md §1).

One program owns ``BLOCK_T`` query frames of one frequency bin ``f`` of one (batch, head). It streams the
``T`` same-frequency keys of that bin (tokens ``t * F + f``), then the ``M`` sampled keys (rows gathered
through ``sample_index``: one ``(M,)`` sample for every batch row, or row ``b`` of a ``(B, M)`` one),
through a single online softmax in the flash-attention manner: a running max, a running sum and an fp32
accumulator. Nothing of size ``N x (T + M)`` is materialised, q/k/v are read in
place through their strides, and the output is written straight to the query tokens.

The kernel's arguments follow TensorRT's AOT plugin convention (input pointers, int32 scalars, output
pointer), so the same kernel serves the PyTorch launcher here and the TensorRT plugin
(``plugins/tensorrt``), which compiles it ahead of time with :func:`compile_for_aot`.

On CPU, Triton's interpreter runs it when ``TRITON_INTERPRET=1`` is set before this module is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl

from litefocus_export.attention.reference import check_inputs
from litefocus_export.core.errors import BuildError, UsageError

MAX_HEAD_DIM = 128
FP32_DOT_PRECISIONS = ("ieee", "tf32x3", "tf32")
SUPPORTED_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
_TENSOR_POINTERS = ("q_ptr", "k_ptr", "v_ptr", "out_ptr")
_HEAD_DIM_STRIDES = ("stride_qd", "stride_kd", "stride_vd", "stride_od")
_META_PARAMS = (
    "HEAD_DIM", "BLOCK_D", "BLOCK_T", "BLOCK_N", "SAME_FREQUENCY", "CROSS_FREQUENCY", "PRECISION", "UPCAST",
)
_LOG2_E = 1.4426950408889634  # softmax runs in base 2: exp(x) == exp2(x * log2(e))


@triton.jit
def _load_rows(base, rows, row_mask, offs_d, d_mask, stride_n, stride_d, UPCAST: tl.constexpr):
    """(rows, BLOCK_D) tile of the token rows ``rows``; padded rows and head-dim columns read 0."""
    ptrs = base + rows[:, None] * stride_n + offs_d[None, :] * stride_d
    tile = tl.load(ptrs, mask=row_mask[:, None] & d_mask[None, :], other=0.0)
    if UPCAST:  # only under the CPU interpreter, whose tl.dot cannot multiply bf16
        tile = tile.to(tl.float32)
    return tile


@triton.jit
def _online_softmax_step(q, k, v, key_mask, acc, m_i, l_i, qk_scale, PRECISION: tl.constexpr):
    """Fold one block of keys into the running (acc, max, sum); scores are in base-2 units."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
    s = tl.where(key_mask[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    alpha = tl.exp2(m_i - m_new)  # rescales what was summed under the old max
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return acc, m_new, l_i


@triton.jit
def dual_sparse_attention_kernel(
    q_ptr, k_ptr, v_ptr, index_ptr,
    heads, frames, freq_bins, num_samples, index_row_stride,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    out_ptr,
    qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr,
    SAME_FREQUENCY: tl.constexpr, CROSS_FREQUENCY: tl.constexpr, PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    # grid (query block, bin, batch*head): neighbouring programs share one (b, h) and its sampled keys
    pid_t, f, pid_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = (pid_bh // heads).to(tl.int64), (pid_bh % heads).to(tl.int64)  # int64: big batches stay exact
    q_base = q_ptr + b * stride_qb + h * stride_qh
    k_base = k_ptr + b * stride_kb + h * stride_kh
    v_base = v_ptr + b * stride_vb + h * stride_vh
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM  # head dims that are not a power of two are padded with zeros

    t_q = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    q_mask = t_q < frames
    q_rows = t_q.to(tl.int64) * freq_bins + f  # time-major tokens: n = t * F + f
    q = _load_rows(q_base, q_rows, q_mask, offs_d, d_mask, stride_qn, stride_qd, UPCAST)

    acc = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_T,), dtype=tl.float32)
    # finite start: the first block always holds a real key, and exp2(-1e30 - m) underflows to 0
    m_i = tl.full((BLOCK_T,), -1.0e30, dtype=tl.float32)
    offs_n = tl.arange(0, BLOCK_N)
    if SAME_FREQUENCY:
        for start in range(0, frames, BLOCK_N):
            t_k = start + offs_n
            key_mask = t_k < frames
            rows = t_k.to(tl.int64) * freq_bins + f
            k = _load_rows(k_base, rows, key_mask, offs_d, d_mask, stride_kn, stride_kd, UPCAST)
            v = _load_rows(v_base, rows, key_mask, offs_d, d_mask, stride_vn, stride_vd, UPCAST)
            acc, m_i, l_i = _online_softmax_step(q, k, v, key_mask, acc, m_i, l_i, qk_scale, PRECISION)
    if CROSS_FREQUENCY:
        # the batch row's sample (index_row_stride 0: one sample for every row), shared by every query of
        # the row; a key also seen above is counted again, as in the reference
        index_base = index_ptr + b * index_row_stride
        for start in range(0, num_samples, BLOCK_N):
            j = start + offs_n
            key_mask = j < num_samples
            rows = tl.load(index_base + j, mask=key_mask, other=0)
            k = _load_rows(k_base, rows, key_mask, offs_d, d_mask, stride_kn, stride_kd, UPCAST)
            v = _load_rows(v_base, rows, key_mask, offs_d, d_mask, stride_vn, stride_vd, UPCAST)
            acc, m_i, l_i = _online_softmax_step(q, k, v, key_mask, acc, m_i, l_i, qk_scale, PRECISION)

    out = acc / l_i[:, None]
    o_base = out_ptr + b * stride_ob + h * stride_oh
    o_ptrs = o_base + q_rows[:, None] * stride_on + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=q_mask[:, None] & d_mask[None, :])


@dataclass(frozen=True)
class BlockConfig:
    """Tile sizes and launch settings shared by the PyTorch launcher and the AOT compile.

    ``fp32_dot`` is the tl.dot input precision for fp32 q, k, v (fp16/bf16 ignore it): ``"ieee"`` (exact
    fp32 products), ``"tf32x3"`` (three TF32 products per fp32 one, fp32-level accuracy on tensor cores),
    ``"tf32"`` (one TF32 product: ~1e-3 relative error, as torch's own TF32 matmuls) or None: follow
    torch's fp32 matmul setting (``"tf32"`` where TF32 is allowed, else ``"ieee"``; the AOT compile
    takes ``"ieee"``).
    """

    block_t: int
    block_n: int
    block_d: int
    num_warps: int = 4
    num_stages: int = 2
    fp32_dot: str | None = None

    def __post_init__(self) -> None:
        if self.fp32_dot is not None and self.fp32_dot not in FP32_DOT_PRECISIONS:
            raise UsageError(f"dual_sparse_attention_triton: fp32_dot {self.fp32_dot!r} not in {FP32_DOT_PRECISIONS}")


def block_config(head_dim: int, dtype_name: str, block_t: int | None = None,
                 block_n: int | None = None, fp32_dot: str | None = None) -> BlockConfig:
    """Default tiles for ``head_dim`` and dtype (``"fp32"``, ``"fp16"``, ``"bf16"``).

    Tiles shrink as rows widen so that shared memory stays <= 48 KiB: TensorRT launches AOT kernels
    without opting into more. tl.dot needs every tile side >= 16, hence the padded ``block_d``.
    """
    if not 0 < head_dim <= MAX_HEAD_DIM:
        raise UsageError(f"dual_sparse_attention_triton: head dim {head_dim} not in 1..{MAX_HEAD_DIM}")
    block_d = max(16, triton.next_power_of_2(head_dim))
    row_bytes = block_d * (4 if dtype_name == "fp32" else 2)
    return BlockConfig(
        block_t=block_t or (64 if row_bytes <= 256 else 32),
        block_n=block_n or (64 if row_bytes <= 128 else 32),
        block_d=block_d,
        # 3 stages measured fastest at the 80 s fp16 shape (H200 sweep, docs/device_check_kernel_h200.log)
        num_stages=(3 if row_bytes <= 64 else 2) if row_bytes <= 256 else 1,
        fp32_dot=fp32_dot,
    )


def launch_grid(q_shape: Sequence[Any], freq_bins: Any, block_t: int,
                cdiv: Callable[[Any, int], Any] = triton.cdiv) -> tuple[Any, Any, Any]:
    """(query blocks, F, B*H). Works on ints and on TensorRT shape expressions (pass ``trtp.cdiv``)."""
    batch, heads, tokens, _ = q_shape
    return cdiv(tokens // freq_bins, block_t), freq_bins, batch * heads


def aot_scalar_args(q_shape: Sequence[Any], num_samples: Any, freq_bins: Any, index_row_stride: Any = 0) -> list[Any]:
    """The kernel's runtime int arguments for contiguous ``(B, H, N, D)`` q, k, v and output.

    ``index_row_stride``: 0 for one ``(M,)`` sample shared by the batch, ``M`` for a contiguous ``(B, M)``
    one. The head-dim strides are 1 and compiled in, so they are left out. Works on ints and on TensorRT
    shape expressions (symbolic dims must come first in each product, as only they overload ``*``).
    """
    _, heads, tokens, dim = q_shape
    strides = [heads * tokens * dim, tokens * dim, dim]  # (b, h, n) for one contiguous tensor
    return [heads, tokens // freq_bins, freq_bins, num_samples, index_row_stride, *strides * 4]


def torch_scalar_args(tensors: Sequence[torch.Tensor], num_samples: int, freq_bins: int,
                      index_row_stride: int = 0) -> list[int]:
    """Runtime int arguments for q, k, v, out with any strides (a (B, N, H, D) buffer's views: no copy)."""
    _, heads, tokens, _ = tensors[0].shape
    strides = [s for t in tensors for s in t.stride()]
    return [heads, tokens // freq_bins, freq_bins, num_samples, index_row_stride, *strides]


def index_layout(index_shape: Sequence[Any]) -> tuple[Any, Any]:
    """``(M, index_row_stride)`` of a contiguous sample index: ``(M,)`` -> ``(M, 0)``, ``(B, M)`` -> ``(M, M)``.

    Works on ints and on TensorRT shape expressions (``len`` and indexing only).
    """
    rank = len(index_shape)
    if rank not in (1, 2):
        raise UsageError(f"dual_sparse_attention_triton: sample_index must be (M,) or (B, M), rank {rank} given")
    samples = index_shape[rank - 1]
    return samples, (samples if rank == 2 else 0)


def _interpreted() -> bool:
    """Whether the kernel was decorated under TRITON_INTERPRET=1 (runs on CPU tensors, cannot compile)."""
    return not isinstance(dual_sparse_attention_kernel, triton.runtime.JITFunction)


def _check_tensors(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sample_index: torch.Tensor) -> None:
    if q.dtype not in SUPPORTED_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise UsageError(
            f"dual_sparse_attention_triton: q, k, v must share one dtype of fp32, fp16, bf16; got "
            f"{q.dtype}, {k.dtype}, {v.dtype}"
        )
    devices = {t.device for t in (q, k, v, sample_index)}
    if len(devices) != 1:
        names = sorted(map(str, devices))
        raise UsageError(f"dual_sparse_attention_triton: inputs are on several devices: {names}")
    if q.device.type == "cpu" and not _interpreted():
        raise UsageError(
            "dual_sparse_attention_triton: CPU tensors need Triton's interpreter: set TRITON_INTERPRET=1 "
            "before importing this module"
        )


def supports(q: torch.Tensor) -> bool:
    """Whether the fused kernel takes this query on the GPU (else callers use the dense form)."""
    return q.is_cuda and q.dtype in SUPPORTED_DTYPES and 0 < q.shape[-1] <= MAX_HEAD_DIM


def torch_fp32_dot() -> str:
    """``"tf32"`` where torch allows TF32 in its own fp32 CUDA matmuls, else ``"ieee"`` (torch's default).

    Reads the newer ``torch.backends.cuda.matmul.fp32_precision`` where it exists ("none" defers to the
    global setting), else ``torch.get_float32_matmul_precision()`` ("highest" is the only exact one).
    """
    matmul = getattr(torch.backends.cuda.matmul, "fp32_precision", None)
    if matmul == "none":
        matmul = getattr(torch.backends, "fp32_precision", "none")
    if matmul in ("ieee", "tf32"):
        return matmul
    try:
        return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    except RuntimeError:  # torch refuses to answer when its legacy and new precision APIs were mixed
        return "ieee"


def _precision(dtype_name: str, fp32_dot: str = "ieee") -> str:
    # fp32: "ieee" by default (exact, as torch's fp32 matmul by default); fp16/bf16 use tensor cores anyway
    return fp32_dot if dtype_name == "fp32" else "tf32"


def dual_sparse_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sample_index: torch.Tensor,
    *,
    freq_bins: int,
    scale: float | None = None,
    same_frequency: bool = True,
    cross_frequency: bool = True,
    out: torch.Tensor | None = None,
    config: BlockConfig | None = None,
) -> torch.Tensor:
    """Dual sparse attention with the fused Triton kernel. Same contract as the reference.

    Args:
        q, k, v: ``(B, H, N, D)`` fp32/fp16/bf16, any strides, ``N = T * freq_bins``, ``D <= 128``.
        sample_index: int64 ``(M,)`` token indices in ``[0, N)`` shared by every batch row, or ``(B, M)``
            (row ``b``'s own sample); not range-checked (that would synchronise the device); M may be 0.
        freq_bins, scale, same_frequency, cross_frequency: as in ``dual_sparse_attention``.
        out: optional ``(B, H, N, D)`` tensor of q's dtype to write into (any strides; must not
            overlap q, k, v).
        config: tiles and launch settings, default ``block_config(D, dtype)`` (tests shrink the tiles to
            cover ragged blocks; the device check sweeps them). Its ``fp32_dot`` picks the fp32 dot
            precision; None (default) follows torch's fp32 matmul setting, so fp32 stays exact unless
            the caller allowed TF32 (``torch.backends.cuda.matmul.fp32_precision = "tf32"``).

    Returns:
        ``out`` or a new tensor laid out like ``q``.

    Raises:
        UsageError: shapes, flags, dtypes or devices the op does not define.
    """
    check_inputs(q, k, v, sample_index, freq_bins, same_frequency, cross_frequency)
    _check_tensors(q, k, v, sample_index)
    dim = q.shape[-1]
    config = config or block_config(dim, SUPPORTED_DTYPES[q.dtype])
    if config.block_d < dim:
        raise UsageError(f"dual_sparse_attention_triton: block_d {config.block_d} < head dim {dim}")
    out = torch.empty_like(q) if out is None else out
    if out.shape != q.shape or out.dtype != q.dtype:
        raise UsageError(f"dual_sparse_attention_triton: out must be {tuple(q.shape)} {q.dtype}")
    index = sample_index.contiguous()
    num_samples, index_row_stride = index_layout(tuple(index.shape))
    num_samples = num_samples if cross_frequency else 0
    scale = dim**-0.5 if scale is None else float(scale)
    dtype_name = SUPPORTED_DTYPES[q.dtype]
    fp32_dot = config.fp32_dot or (torch_fp32_dot() if dtype_name == "fp32" else "ieee")
    grid = launch_grid(q.shape, freq_bins, config.block_t)
    dual_sparse_attention_kernel[grid](
        q, k, v, index,
        *torch_scalar_args((q, k, v, out), num_samples, freq_bins, index_row_stride),
        out, scale * _LOG2_E,
        HEAD_DIM=dim, BLOCK_D=config.block_d, BLOCK_T=config.block_t, BLOCK_N=config.block_n,
        SAME_FREQUENCY=same_frequency, CROSS_FREQUENCY=cross_frequency and num_samples > 0,
        PRECISION=_precision(dtype_name, fp32_dot), UPCAST=_interpreted() and q.dtype == torch.bfloat16,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return out


@dataclass(frozen=True)
class AotKernel:
    """A kernel compiled ahead of time for TensorRT: what ``trtp.aot_impl`` returns, plus its tiles."""

    name: str
    ptx: str
    config: BlockConfig
    threads: int
    shared_mem: int


def aot_signature(dtype_name: str) -> dict[str, str]:
    """Triton signature of the AOT variant: head-dim strides, scale and tiles are compiled in."""
    types = {name: "i32" for name in dual_sparse_attention_kernel.arg_names}
    types.update({name: f"*{dtype_name}" for name in _TENSOR_POINTERS})
    types["index_ptr"] = "*i64"
    types.update({name: "constexpr" for name in (*_HEAD_DIM_STRIDES, "qk_scale", *_META_PARAMS)})
    return types


def _alignment_attrs(head_dim: int) -> dict[tuple[int, ...], list[list[Any]]]:
    """Divisibility hints the JIT would derive from real arguments (TensorRT buffers are 256-byte aligned)."""
    names = dual_sparse_attention_kernel.arg_names
    aligned = [*_TENSOR_POINTERS, "index_ptr"]
    if head_dim % 16 == 0:  # every (b, h, n) stride of a contiguous tensor is a multiple of D
        aligned += [n for n in names if n.startswith("stride_") and n not in _HEAD_DIM_STRIDES]
    return {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}


def compile_for_aot(
    dtype_name: str,
    head_dim: int,
    scale: float,
    same_frequency: bool,
    cross_frequency: bool,
    target: Any = None,
) -> AotKernel:
    """Compile the kernel for contiguous ``(B, H, N, D)`` tensors, for TensorRT's AOT plugin.

    Args:
        dtype_name: ``"fp32"``, ``"fp16"`` or ``"bf16"`` (q, k, v and output).
        head_dim, scale, same_frequency, cross_frequency: fixed per plugin instance.
        target: a ``triton.backends.compiler.GPUTarget``; default: the current GPU.

    Raises:
        BuildError: under the interpreter, or if the kernel needs global scratch memory (TensorRT does
            not pass Triton's trailing scratch-pointer parameters).
    """
    if _interpreted():
        raise BuildError("compile_for_aot: the kernel was imported under TRITON_INTERPRET=1; unset it first")
    config = block_config(head_dim, dtype_name)
    constexprs = dict.fromkeys(_HEAD_DIM_STRIDES, 1) | {
        "qk_scale": float(scale) * _LOG2_E, "HEAD_DIM": head_dim, "BLOCK_D": config.block_d,
        "BLOCK_T": config.block_t, "BLOCK_N": config.block_n, "SAME_FREQUENCY": bool(same_frequency),
        "CROSS_FREQUENCY": bool(cross_frequency), "PRECISION": _precision(dtype_name, config.fp32_dot or "ieee"),
        "UPCAST": False,
    }
    source = triton.compiler.ASTSource(
        fn=dual_sparse_attention_kernel, signature=aot_signature(dtype_name), constexprs=constexprs,
        attrs=_alignment_attrs(head_dim),
    )
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    compiled = triton.compile(source, target=target, options=options)
    meta = compiled.metadata
    if getattr(meta, "global_scratch_size", 0) or getattr(meta, "profile_scratch_size", 0):
        raise BuildError(f"compile_for_aot: {meta.name} needs Triton scratch memory; TensorRT cannot pass it")
    return AotKernel(meta.name, compiled.asm["ptx"], config, meta.num_warps * 32, meta.shared)
