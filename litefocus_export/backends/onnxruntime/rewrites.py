"""Graph rewrites an ONNX Runtime engine is built from (the export itself stays portable).

- every ``DualSparseAttention`` node on float/float16 inputs -> its contrib MultiHeadAttention form
  (graphs/multihead.py; equal by construction, tested against the reference);
- every unmasked ``MatMul -> Softmax -> MatMul`` chain the exporter decomposed SDPA into (the layers
  LiteFocus leaves at full attention) -> MultiHeadAttention, whose CPU kernel never materialises the
  N x N scores;
- ``SplitToSequence`` by a constant chunk size + constant ``SequenceAt`` (GEGLU's ``chunk``) -> one
  ``Slice`` per used chunk, instead of a sequence of copies;
- the exporter's erf GELU, ``x * (0.5 * (1 + erf(x / sqrt 2)))``, which ORT's own fusion misses in this
  operand order -> one contrib ``Gelu``.

The pattern rewrites fire only where their checks hold (known ranks and batch axes, no masks, no other
readers of an intermediate, scalar constants); anything else is left as it is.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ...graphs.multihead import CONTRIB_DOMAIN, NodeWriter, attribute, lower_to_multihead_attention, lowerable
from ...graphs.patterns import FLOAT, FLOAT16, GraphEdit, PatternGraph, Types, fuse_softmax_attention, inferred_types

# recorded in the engine manifest (and so in its key): a change to any pass must bump the version
REWRITES_VERSION = 2
REWRITES = ("dual_sparse_attention", "softmax_attention", "split_to_sequence", "erf_gelu")


def lower_dual_sparse_attention(model: onnx.ModelProto, types: Types | None = None) -> int:
    """DualSparseAttention nodes on float/float16 q with a non-zero scale -> MultiHeadAttention form."""
    g = PatternGraph(model, types)
    return lower_to_multihead_attention(model, lambda node: lowerable(node) and g.elem_type(node.input[0]) in
                                        (FLOAT, FLOAT16))


def split_sequences_to_slices(model: onnx.ModelProto, types: Types | None = None) -> int:
    """``SplitToSequence(x, s)`` (scalar constant s) read only by ``SequenceAt(., i)`` with constant i,
    each chunk known to exist -> one ``Slice`` per read."""
    g = PatternGraph(model, types)
    edit = GraphEdit(g)
    for split in model.graph.node:
        if (split.op_type != "SplitToSequence" or len(split.input) != 2 or not attribute(split, "keepdims", 1)
                or split.output[0] in g.outputs):
            continue
        size, users = g.constant(split.input[1]), g.users.get(split.output[0], [])
        positions = [g.constant(u.input[1]) if u.op_type == "SequenceAt" else None for u in users]
        if size is None or size.ndim != 0 or not users or any(p is None or p.ndim != 0 or p < 0 for p in positions):
            continue
        dims, axis = g.dims(split.input[0]), attribute(split, "axis", 0)
        length = dims[axis] if dims is not None and -len(dims) <= axis < len(dims) else None
        if not isinstance(length, int) or any(int(p) * int(size) >= length for p in positions):
            continue  # a missing chunk must stay an error, not become an empty slice
        for user, chunk in zip(users, (int(p) for p in positions)):
            w = NodeWriter(user.output[0])
            w.nodes.append(helper.make_node(
                "Slice", [split.input[0], w.ints("start", [chunk * int(size)]),
                          w.ints("end", [(chunk + 1) * int(size)]), w.ints("axis", [axis])],
                [user.output[0]], name=f"{w.prefix}/slice"))
            edit.replace(user, w.nodes)
        edit.dropped.add(g.index[id(split)])
        edit.matches += 1
    return edit.apply(model)


def fuse_erf_gelu(model: onnx.ModelProto, types: Types | None = None) -> int:
    """``Div(x, sqrt 2) -> Erf -> Add 1 -> Mul 0.5 -> Mul x`` (either operand order, float or float16 x)
    -> ``com.microsoft.Gelu``."""
    g = PatternGraph(model, types)
    edit = GraphEdit(g)

    def next_binary(node: onnx.NodeProto | None, op_type: str) -> tuple[onnx.NodeProto | None, str | None]:
        user = g.only_user(node.output[0]) if node is not None else None
        if user is None or user.op_type != op_type:
            return None, None
        return user, g.other_input(user, node.output[0])

    def near(name: str | None, value: float) -> bool:
        """``name`` is a scalar constant equal to ``value`` rounded to the constant's own dtype."""
        found = g.scalar(name)
        if found is None or found.dtype.kind != "f":
            return False
        return abs(float(found.reshape(())) - value) <= 4 * np.finfo(found.dtype).eps * abs(value)

    for div in model.graph.node:
        if div.op_type != "Div" or not near(div.input[1], 2 ** 0.5) or g.elem_type(div.input[0]) not in (FLOAT,
                                                                                                         FLOAT16):
            continue
        x = div.input[0]
        erf = g.only_user(div.output[0])
        if erf is None or erf.op_type != "Erf":
            continue
        add, one = next_binary(erf, "Add")
        half_mul, half = next_binary(add, "Mul")
        out_mul, x_again = next_binary(half_mul, "Mul")
        if (out_mul is None or not near(one, 1.0) or not near(half, 0.5) or x_again != x
                or not edit.free(div, erf, add, half_mul, out_mul)):
            continue
        edit.replace(out_mul, [helper.make_node("Gelu", [x], [out_mul.output[0]], domain=CONTRIB_DOMAIN,
                                                name=f"{out_mul.output[0]}/gelu")], div, erf, add, half_mul)
        edit.matches += 1
    return edit.apply(model, contrib=True)


def rewrite_for_onnxruntime(model: onnx.ModelProto) -> dict[str, int]:
    """Apply every rewrite in place; returns how often each fired.

    Shape inference runs once: every pass keeps the names, types and shapes of the values it leaves, so
    the types found before the first pass still hold for what later passes look at.
    """
    types = inferred_types(model)
    passes = {"dual_sparse_attention": lower_dual_sparse_attention, "softmax_attention": fuse_softmax_attention,
              "split_to_sequence": split_sequences_to_slices, "erf_gelu": fuse_erf_gelu}
    return {name: passes[name](model, types) for name in REWRITES}
