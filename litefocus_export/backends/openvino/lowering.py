"""``ai.litefocus::DualSparseAttention`` in OpenVINO: the dense form of docs/design.md §1 on OpenVINO's fused
``ScaledDotProductAttention``, so no score matrix is ever materialised.

The frequency bins are folded into the heads: queries ``(B, H, N, D) -> (B, H*F, T, D)``; each bin's keys are its
own T frames followed by the M sampled tokens (the same for every bin, broadcast), ``(B, H*F, T + M, D)``; one
SDPA with the op's scale gives the joint softmax over both key sets; the output is unfolded back. A disabled key
set is left out of the concatenation (the function body's -inf bias, without its cost).

Inlining the op's ONNX function instead keeps its MatMul -> Softmax -> MatMul, which OpenVINO runs with the
(B, H, F, T, T + M) scores materialised: measured 1.23x over the stock UNet at twice its memory (issue 21).

The layers left at full attention reach OpenVINO the same way: the ONNX Runtime pass that finds the exporter's
unmasked ``MatMul -> Softmax -> MatMul`` chains (``fuse_softmax_attention``) turns them into ``MultiHeadAttention``
(heads folded into its batch, ``num_heads=1``), converted here to the same fused SDPA. OpenVINO's own fusion
(``convert_model``'s MOC passes) would find them too, but those passes also break the exported UNet's symbolic
shape arithmetic (a Reshape at ``down_blocks.2`` gets ``down_blocks.1``'s token count: seen with OpenVINO
2026.4), so the builder converts with the frontend alone.
"""

from __future__ import annotations

from typing import Any

from ...core.contract import OP_DOMAIN, OP_TYPE


def dual_sparse_attention(context: Any) -> list[Any]:
    """OpenVINO ONNX frontend conversion of one DualSparseAttention node (``ConversionExtension`` callback)."""
    import numpy as np
    import openvino.opset13 as ops

    q, k, v, sample_index = (context.get_input(i) for i in range(4))
    freq_bins = int(context.get_attribute("freq_bins"))
    scale = float(context.get_attribute("scale"))
    same = bool(context.get_attribute("same_frequency", 1))
    cross = bool(context.get_attribute("cross_frequency", 1))

    def const(values: list[int]) -> Any:
        return ops.constant(np.array(values, dtype=np.int64))

    shape = ops.shape_of(q, output_type="i64")  # (B, H, N, D)

    def dims(*axes: int) -> Any:
        return ops.gather(shape, const(list(axes)), const([0]))

    bins = const([freq_bins])
    # (B, H, T, F, D), T inferred: token n = t * F + f (time-major); and the folded (B, H*F, *, D)
    grid = ops.concat([dims(0, 1), const([-1]), bins, dims(3)], 0)
    folded = ops.concat([dims(0), ops.multiply(dims(1), bins), const([-1]), dims(3)], 0)

    def fold(x: Any) -> Any:
        """(B, H, N, D) -> (B, H*F, T, D): every (head, bin) pair attends on its own."""
        per_bin = ops.transpose(ops.reshape(x, grid, special_zero=False), const([0, 1, 3, 2, 4]))
        return ops.reshape(per_bin, folded, special_zero=False)

    query = fold(q)
    keys, values = [], []
    if same:
        keys.append(fold(k))
        values.append(fold(v))
    if cross:
        # (M,) or (B, M) -> (B, M): row b's sample
        samples = ops.gather(ops.shape_of(sample_index, output_type="i64"), const([-1]), const([0]))
        rows = ops.broadcast(sample_index, ops.concat([dims(0), samples], 0))
        spread_shape = ops.concat([dims(0, 1), bins, samples, dims(3)], 0)

        def sampled(x: Any) -> Any:
            """The sampled tokens, (B, H, M, D), for every bin of a head: (B, H*F, M, D)."""
            picked = ops.gather(x, rows, const([2]), batch_dims=1)
            spread = ops.broadcast(ops.unsqueeze(picked, const([2])), spread_shape)
            return ops.reshape(spread, folded, special_zero=False)

        keys.append(sampled(k))
        values.append(sampled(v))
    key = keys[0] if len(keys) == 1 else ops.concat(keys, 2)
    value = values[0] if len(values) == 1 else ops.concat(values, 2)
    scale_node = ops.convert_like(ops.constant(np.array(scale, dtype=np.float32)), q)
    out = ops.scaled_dot_product_attention(query, key, value, scale=scale_node, causal=False)
    # (B, H*F, T, D) -> (B, H, F, T, D) -> (B, H, T, F, D) -> (B, H, N, D)
    per_bin = ops.reshape(out, ops.concat([dims(0, 1), bins, const([-1]), dims(3)], 0), special_zero=False)
    return [ops.reshape(ops.transpose(per_bin, const([0, 1, 3, 2, 4])), shape, special_zero=False).output(0)]


def multihead_attention(context: Any) -> list[Any]:
    """``com.microsoft::MultiHeadAttention`` as the softmax-attention pass writes it (3-D ``(batch, S, D)`` q, k, v,
    ``num_heads=1``, no mask or bias) -> one SDPA."""
    import numpy as np
    import openvino.opset13 as ops

    if context.get_input_size() != 3 or int(context.get_attribute("num_heads", 1)) != 1:
        raise ValueError("only the unmasked single-head MultiHeadAttention of fuse_softmax_attention is converted")
    q, k, v = (context.get_input(i) for i in range(3))
    scale = ops.convert_like(ops.constant(np.array(float(context.get_attribute("scale", 1.0)), dtype=np.float32)), q)
    return [ops.scaled_dot_product_attention(q, k, v, scale=scale, causal=False).output(0)]


def conversion_extensions() -> list[Any]:
    """The frontend extensions every OpenVINO conversion of an export uses."""
    from openvino.frontend.onnx import ConversionExtension

    from ...graphs.multihead import CONTRIB_DOMAIN

    return [ConversionExtension(OP_TYPE, OP_DOMAIN, dual_sparse_attention),
            ConversionExtension("MultiHeadAttention", CONTRIB_DOMAIN, multihead_attention)]


def softmax_attention_to_mha(model: Any) -> dict[str, int]:
    """The one ONNX rewrite an OpenVINO build applies (in place): full-attention chains -> MultiHeadAttention."""
    from ...graphs.patterns import fuse_softmax_attention

    return {"softmax_attention": fuse_softmax_attention(model)}


__all__ = ["conversion_extensions", "dual_sparse_attention", "multihead_attention", "softmax_attention_to_mha"]
