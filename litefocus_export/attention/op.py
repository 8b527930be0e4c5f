"""``litefocus::dual_sparse_attention``: the op as one PyTorch custom op.

Export traces it as a single node (it has a fake kernel), which the ONNX exporter turns into
``ai.litefocus::DualSparseAttention``. CPU runs the dense SDPA form; a fused CUDA kernel registers
itself for CUDA when Triton is available (``plugins/triton``), with the dense form as the fallback.
"""

from __future__ import annotations

import torch

from .fast import dual_sparse_attention_fast
from .reference import check_inputs, dual_sparse_attention_reference

OP_NAMESPACE = "litefocus"
OP_NAME = "dual_sparse_attention"


@torch.library.custom_op(f"{OP_NAMESPACE}::{OP_NAME}", mutates_args=())
def dual_sparse_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sample_index: torch.Tensor,
    freq_bins: int,
    scale: float,
    same_frequency: bool,
    cross_frequency: bool,
) -> torch.Tensor:
    return dual_sparse_attention_fast(
        q, k, v, sample_index, freq_bins=freq_bins, scale=scale,
        same_frequency=same_frequency, cross_frequency=cross_frequency,
    )


@dual_sparse_attention_op.register_fake
def _fake(q, k, v, sample_index, freq_bins, scale, same_frequency, cross_frequency):  # noqa: ANN001
    return torch.empty_like(q)


def dual_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sample_index: torch.Tensor,
    *,
    freq_bins: int,
    scale: float | None = None,
    same_frequency: bool = True,
    cross_frequency: bool = True,
    impl: str = "op",
) -> torch.Tensor:
    """LiteFocus dual sparse attention (docs/design.md §1).

    Args:
        q, k, v: ``(B, H, N, D)`` with tokens time-major, ``N = T * freq_bins``.
        sample_index: int64 ``(M,)`` token indices for cross-frequency compensation, shared by every
            batch row, or ``(B, M)``: row ``b``'s own sample (M may be 0; indices that are also
            same-frequency keys are counted twice, as in the reference).
        freq_bins: frequency bins ``F`` of the layer's latent grid.
        scale: softmax scale, default ``D ** -0.5``.
        same_frequency, cross_frequency: the two key sets; at least one must be on.
        impl: ``"op"`` (the custom op: dense SDPA form on CPU, fused kernel on CUDA when present),
            ``"fast"`` (dense form directly) or ``"reference"`` (einsum, materialises scores).

    Returns:
        ``(B, H, N, D)``, same dtype as ``q``.

    Raises:
        UsageError: inconsistent shapes, both flags off, or no keys at all.
    """
    kwargs = dict(freq_bins=freq_bins, scale=scale, same_frequency=same_frequency, cross_frequency=cross_frequency)
    if impl == "reference":
        return dual_sparse_attention_reference(q, k, v, sample_index, **kwargs)
    if impl == "fast":
        return dual_sparse_attention_fast(q, k, v, sample_index, **kwargs)
    check_inputs(q, k, v, sample_index, freq_bins, same_frequency, cross_frequency)
    kwargs["scale"] = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return dual_sparse_attention_op(q, k, v, sample_index, **kwargs)


# --- Fused Triton kernel for CUDA tensors (plugins/triton) ---------------------------------------------
# Registered only where Triton is installed and not under its CPU interpreter (whose kernels take CPU
# tensors); imported on the first CUDA call, so CPU-only use never pays for it. CPU keeps the dense form.
def _register_triton_cuda_kernel() -> None:
    import functools
    import importlib
    import importlib.util
    import os

    interpreter = os.environ.get("TRITON_INTERPRET", "").lower() in ("1", "true", "on")
    if interpreter or importlib.util.find_spec("triton") is None:
        return

    from ..core.kernels import plugin_module

    @functools.cache
    def kernel_module():  # noqa: ANN202
        return plugin_module("triton.dual_sparse_attention")

    @dual_sparse_attention_op.register_kernel("cuda")
    def _cuda(q, k, v, sample_index, freq_bins, scale, same_frequency, cross_frequency):  # noqa: ANN001
        kwargs = dict(
            freq_bins=freq_bins, scale=scale, same_frequency=same_frequency, cross_frequency=cross_frequency
        )
        fused = kernel_module()
        if fused.supports(q):
            return fused.dual_sparse_attention_triton(q, k, v, sample_index, **kwargs)
        return dual_sparse_attention_fast(q, k, v, sample_index, **kwargs)


_register_triton_cuda_kernel()
