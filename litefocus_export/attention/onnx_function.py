"""The op in ONNX: node ``ai.litefocus::DualSparseAttention`` and its portable function body.

The body is the dense form of docs/design.md §1 in standard ONNX ops (Reshape/Transpose/MatMul/Softmax),
so ONNX Runtime runs an exported model with no plugin; a runtime with a fused kernel claims the node
instead. Scores for the two key sets are computed separately and concatenated, which keeps one joint
softmax without copying the sampled keys once per frequency bin.
"""

from __future__ import annotations

import functools

import onnx
from onnx.defs import OpSchema
from onnxscript import FLOAT, INT64, script
from onnxscript import opset18 as op
from onnxscript.values import Op, Opset

from ..core.contract import MIN_OPSET, OP_DOMAIN, OP_DOMAIN_VERSION, OP_TYPE, PLUGIN_NAMESPACE
from ..core.errors import ExportError

litefocus = Opset(OP_DOMAIN, OP_DOMAIN_VERSION)


@script(litefocus, default_opset=op)
def DualSparseAttention(
    q, k, v, sample_index: INT64, freq_bins: int, scale: float, same_frequency: int = 1, cross_frequency: int = 1
):
    """DualSparseAttention(q, k, v, sample_index) -> out, all of shape (B, H, N, D) except the int64 index:
    (M,) (one sample for every batch row) or (B, M) (row b's own sample).

    PyTorch equivalent: ``litefocus_export.attention.dual_sparse_attention(q, k, v, sample_index,
    freq_bins=freq_bins, scale=scale, same_frequency=bool(same_frequency),
    cross_frequency=bool(cross_frequency))``. A disabled key set gets a -inf bias (log 0).
    """
    shape = op.Shape(q)
    grid = op.Concat(
        op.Shape(q, start=0, end=2), op.Constant(value_ints=[-1]),
        op.Reshape(op.Constant(value_int=freq_bins), op.Constant(value_ints=[1])),
        op.Shape(q, start=3, end=4), axis=0,
    )
    # (B, H, N, D) -> (B, H, F, T, D): every frequency bin becomes its own batch of T frames
    q5 = op.Transpose(op.Reshape(q, grid), perm=[0, 1, 3, 2, 4])
    k5 = op.Transpose(op.Reshape(k, grid), perm=[0, 1, 3, 4, 2])  # keys pre-transposed: (B, H, F, D, T)
    v5 = op.Transpose(op.Reshape(v, grid), perm=[0, 1, 3, 2, 4])
    # the sample per batch row, (B, M) (an (M,) sample is every row's), as GatherND indices (B, H, M, 1)
    samples = op.Shape(sample_index, start=-1)
    rows = op.Expand(sample_index, op.Concat(op.Shape(q, start=0, end=1), samples, axis=0))
    gather = op.Expand(op.Unsqueeze(rows, op.Constant(value_ints=[1, 3])),
                       op.Concat(op.Shape(q, start=0, end=2), samples, op.Constant(value_ints=[1]), axis=0))
    # sampled tokens, shared by every bin through MatMul broadcasting: (B, H, 1, D, M) / (B, H, 1, M, D)
    ks = op.Unsqueeze(op.Transpose(op.GatherND(k, gather, batch_dims=2), perm=[0, 1, 3, 2]), [2])
    vs = op.Unsqueeze(op.GatherND(v, gather, batch_dims=2), [2])

    q5 = op.Mul(q5, op.CastLike(op.Constant(value_float=scale), q))
    same_bias = op.CastLike(op.Log(op.Cast(op.Constant(value_int=same_frequency), to=1)), q)
    cross_bias = op.CastLike(op.Log(op.Cast(op.Constant(value_int=cross_frequency), to=1)), q)
    scores = op.Concat(op.MatMul(q5, k5) + same_bias, op.MatMul(q5, ks) + cross_bias, axis=-1)
    weights = op.Softmax(scores, axis=-1)

    frames = op.Shape(k5, start=4, end=5)
    w_same = op.Slice(weights, op.Constant(value_ints=[0]), frames, op.Constant(value_ints=[-1]))
    w_cross = op.Slice(weights, frames, op.Constant(value_ints=[9223372036854775807]), op.Constant(value_ints=[-1]))
    out5 = op.MatMul(w_same, v5) + op.MatMul(w_cross, vs)
    return op.Reshape(op.Transpose(out5, perm=[0, 1, 3, 2, 4]), shape)


def function_proto(opset: int) -> onnx.FunctionProto:
    """The body as a model-local FunctionProto importing the model's default opset ``opset``."""
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old: the DualSparseAttention body needs opset >= {MIN_OPSET}")
    proto = DualSparseAttention.to_function_proto()
    for entry in proto.opset_import:
        if entry.domain == "":
            entry.version = opset
    return proto


def attach_function(model: onnx.ModelProto) -> onnx.ModelProto:
    """Add the function body and the custom domain's opset import to ``model`` (idempotent)."""
    opset = next(e.version for e in model.opset_import if e.domain in ("", "ai.onnx"))
    if not any(f.domain == OP_DOMAIN and f.name == OP_TYPE for f in model.functions):
        model.functions.append(function_proto(opset))
    if not any(e.domain == OP_DOMAIN for e in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(OP_DOMAIN, OP_DOMAIN_VERSION))
    return model


@functools.cache
def register_schema() -> OpSchema:
    """Register the op's schema with onnx (once), so onnxscript and the checker know its signature."""
    flag = onnx.helper.make_attribute
    schema = OpSchema(
        OP_TYPE, OP_DOMAIN, OP_DOMAIN_VERSION,
        doc=DualSparseAttention.__doc__ or "",
        inputs=[OpSchema.FormalParameter(n, "T") for n in ("q", "k", "v")]
        + [OpSchema.FormalParameter("sample_index", "tensor(int64)")],
        outputs=[OpSchema.FormalParameter("out", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "attention dtype")],
        attributes=[
            OpSchema.Attribute("freq_bins", OpSchema.AttrType.INT, "frequency bins F of the layer"),
            OpSchema.Attribute("scale", OpSchema.AttrType.FLOAT, "softmax scale"),
            OpSchema.Attribute("same_frequency", flag("same_frequency", 1), "1: attend to the own bin"),
            OpSchema.Attribute("cross_frequency", flag("cross_frequency", 1), "1: attend to the sample"),
            OpSchema.Attribute("plugin_namespace", flag("plugin_namespace", PLUGIN_NAMESPACE),
                               "TensorRT plugin namespace"),
        ],
    )
    if not onnx.defs.has(OP_TYPE, OP_DOMAIN):
        onnx.defs.register_schema(schema)
    return schema


def translate_op(q, k, v, sample_index, freq_bins: int, scale: float, same_frequency: bool, cross_frequency: bool):
    """torch.onnx translation of ``litefocus::dual_sparse_attention``: one node of our domain.

    The body is attached afterwards (``attach_function``): the exporter's passes inline every
    model-local function they see, and the node must stay a node.
    """
    register_schema()
    node = Op(litefocus, OP_TYPE, onnx.defs.get_schema(OP_TYPE, OP_DOMAIN_VERSION, OP_DOMAIN))
    return node(q, k, v, sample_index, freq_bins=int(freq_bins), scale=float(scale),
                same_frequency=int(same_frequency), cross_frequency=int(cross_frequency),
                plugin_namespace=PLUGIN_NAMESPACE)


def make_node(inputs: list[str], output: str, *, freq_bins: int, scale: float, same_frequency: bool,
              cross_frequency: bool, name: str = "") -> onnx.NodeProto:
    """One ``ai.litefocus::DualSparseAttention`` node with the contract's attributes."""
    return onnx.helper.make_node(
        OP_TYPE, inputs, [output], name=name, domain=OP_DOMAIN, freq_bins=int(freq_bins), scale=float(scale),
        same_frequency=int(same_frequency), cross_frequency=int(cross_frequency),
        plugin_namespace=PLUGIN_NAMESPACE,
    )


__all__ = ["FLOAT", "DualSparseAttention", "attach_function", "function_proto", "make_node",
           "register_schema", "translate_op"]
