"""The op as ONNX Runtime's ``com.microsoft.MultiHeadAttention``: the form ORT engines run.

The exported model keeps the contract node (``ai.litefocus::DualSparseAttention`` + portable function
body). The body materialises every (T + M)-wide score row, concatenates and slices them; ONNX Runtime's
contrib MultiHeadAttention runs a flash-style kernel instead (measured on CPU; ORT documents it for
CUDA too). Building an ORT engine rewrites each contract node into the dense form of docs/design.md §1
around one MultiHeadAttention: frequency *and heads* folded into its batch (``num_heads=1``), so the
rewrite needs no shape the node does not carry. Keys and values are the T same-bin tokens followed by
the M sampled ones of the query's batch row (``sample_index`` ``(M,)`` or ``(B, M)``, gathered per row).
"""

from __future__ import annotations

from collections.abc import Callable

import onnx
from onnx import helper

from ..core.contract import CONTRIB_DOMAIN, OP_DOMAIN, OP_TYPE


def attribute(node: onnx.NodeProto, name: str, default: int | float) -> int | float:
    """``node``'s attribute ``name``, or ``default`` when the node omits it."""
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


class NodeWriter:
    """Appends nodes whose outputs (and node names) are ``<prefix>/<tag>``; prefix with an output name,
    which a valid graph has only once."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []

    def __call__(self, op_type: str, inputs: list[str], tag: str, domain: str = "", **attrs: object) -> str:
        out = f"{self.prefix}/{tag}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, domain=domain, **attrs))
        return out

    def ints(self, tag: str, values: list[int]) -> str:
        return self("Constant", [], tag, value=helper.make_tensor(f"{self.prefix}/{tag}", onnx.TensorProto.INT64,
                                                                  [len(values)], values))

    def fold(self, x: str, tag: str) -> str:
        """(..., S, D) -> (batch * ..., S, D): every leading axis into MultiHeadAttention's batch."""
        return self("Reshape", [x, self("Concat", [self.ints(f"{tag}_lead", [-1]),
                                                   self("Shape", [x], f"{tag}_sd", start=-2)], f"{tag}_shape",
                                                  axis=0)], tag)

    def sample_rows(self, index: str, like: str) -> str:
        """GatherND indices ``(B, H, M, 1)`` for ``like`` ``(B, H, N, D)``: the sample of each batch row.

        An ``(M,)`` index is every row's sample (broadcast), a ``(B, M)`` one gives row ``b`` its own."""
        samples = self("Shape", [index], "samples", start=-1)
        rows = self("Expand", [index, self("Concat", [self("Shape", [like], "b", start=0, end=1), samples],
                                           "rows_shape", axis=0)], "rows")
        rows4 = self("Unsqueeze", [rows, self.ints("rows_ax", [1, 3])], "rows4")
        return self("Expand", [rows4, self("Concat", [self("Shape", [like], "bh2", start=0, end=2), samples,
                                                      self.ints("one", [1])], "gather_shape", axis=0)], "gather")

    def finish(self, x: str, like: str, output: str) -> list[onnx.NodeProto]:
        """Reshape ``x`` to the shape of ``like`` as ``output``; returns every node written."""
        self.nodes.append(helper.make_node("Reshape", [x, self("Shape", [like], "out_shape")], [output],
                                           name=f"{self.prefix}/out"))
        return self.nodes


def lowerable(node: onnx.NodeProto) -> bool:
    """Whether MultiHeadAttention computes ``node`` exactly: it reads ``scale = 0`` as "use 1/sqrt(D)"."""
    return float(attribute(node, "scale", 0.0)) != 0.0


def multihead_attention_nodes(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """Standard + contrib nodes computing ``node`` (a DualSparseAttention) with the same inputs/output."""
    q, k, v, index = node.input
    freq_bins = int(attribute(node, "freq_bins", 0))
    same = bool(attribute(node, "same_frequency", 1))
    cross = bool(attribute(node, "cross_frequency", 1))
    w = NodeWriter(node.output[0])
    mha = {"domain": CONTRIB_DOMAIN, "num_heads": 1, "scale": float(attribute(node, "scale", 0.0))}
    # names by role, not by input: q, k and v may be one tensor
    inputs = {"k": k, "v": v}

    if not same:
        # every query sees the same M keys: fold heads only
        rows = w.sample_rows(index, q)
        keys = {r: w.fold(w("GatherND", [x, rows], f"{r}_sampled", batch_dims=2), f"{r}_keys")
                for r, x in inputs.items()}
        return w.finish(w("MultiHeadAttention", [w.fold(q, "q_fold"), keys["k"], keys["v"]], "mha", **mha), q,
                        node.output[0])

    # (B, H, T*F, D) -> (B, H, F, T, D): time-major tokens, one batch per frequency bin
    grid = w("Concat", [w("Shape", [q], "bh", start=0, end=2), w.ints("t_f", [-1, freq_bins]),
                        w("Shape", [q], "d", start=3)], "grid", axis=0)
    per_bin = {r: w("Transpose", [w("Reshape", [x, grid], f"{r}_grid")], f"{r}_bins", perm=[0, 1, 3, 2, 4])
               for r, x in {"q": q, **inputs}.items()}
    keys = {}
    rows = w.sample_rows(index, q) if cross else ""
    for r, x in inputs.items():
        keys[r] = per_bin[r]
        if cross:
            # each row's sampled tokens, the same for every bin: (B, H, 1, M, D) broadcast to (B, H, F, M, D)
            sampled = w("Unsqueeze", [w("GatherND", [x, rows], f"{r}_sampled", batch_dims=2), w.ints(f"{r}_ax", [2])],
                        f"{r}_sampled5")
            bins = w("Concat", [w("Shape", [per_bin[r]], f"{r}_bhf", start=0, end=3), w.ints(f"{r}_ones", [1, 1])],
                     f"{r}_expand_shape", axis=0)
            keys[r] = w("Concat", [per_bin[r], w("Expand", [sampled, bins], f"{r}_shared")], f"{r}_cat", axis=3)
        keys[r] = w.fold(keys[r], f"{r}_keys")
    out = w("MultiHeadAttention", [w.fold(per_bin["q"], "q_fold"), keys["k"], keys["v"]], "mha", **mha)
    unfolded = w("Transpose", [w("Reshape", [out, w("Shape", [per_bin["q"]], "bins_shape")], "out_bins")],
                 "out_grid", perm=[0, 1, 3, 2, 4])
    return w.finish(unfolded, q, node.output[0])


def lower_to_multihead_attention(model: onnx.ModelProto,
                                 accept: Callable[[onnx.NodeProto], bool] = lowerable) -> int:
    """Rewrite the DualSparseAttention nodes of ``model``'s main graph that ``accept`` takes, in place
    (the others keep the function body); returns how many."""
    nodes, lowered = [], 0
    for node in model.graph.node:
        if node.domain == OP_DOMAIN and node.op_type == OP_TYPE and accept(node):
            nodes.extend(multihead_attention_nodes(node))
            lowered += 1
        else:
            nodes.append(node)
    if lowered:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        if not any(e.domain == CONTRIB_DOMAIN for e in model.opset_import):
            model.opset_import.append(helper.make_opsetid(CONTRIB_DOMAIN, 1))
    return lowered
