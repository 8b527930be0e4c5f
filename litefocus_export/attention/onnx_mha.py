"""The op as ONNX Runtime's ``com.microsoft.MultiHeadAttention``: the form ORT engines run.

The exported model keeps the contract node (``ai.litefocus::DualSparseAttention`` + portable function
body). The body materialises every (T + M)-wide score row, concatenates and slices them; ONNX Runtime's
contrib MultiHeadAttention runs a flash-style kernel on CPU and CUDA instead. Building an ORT engine
rewrites each contract node into the dense form of DESIGN.md §1 around one MultiHeadAttention:
frequency *and heads* folded into its batch (``num_heads=1``), so the rewrite needs no shape the node
does not carry. Keys and values are the T same-bin tokens followed by the M sampled ones.
"""

from __future__ import annotations

import onnx
from onnx import helper

from .onnx_function import DOMAIN, OP_TYPE

CONTRIB_DOMAIN = "com.microsoft"
FORM = "com.microsoft.MultiHeadAttention"  # recorded in engine manifests


def _attribute(node: onnx.NodeProto, name: str, default: int | float) -> int | float:
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


class NodeWriter:
    """Appends nodes whose outputs are named ``<prefix>/<tag>``."""

    def __init__(self, prefix: str):
        self.prefix, self.nodes = prefix, []

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


def multihead_attention_nodes(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """Standard + contrib nodes computing ``node`` (a DualSparseAttention) with the same inputs/output."""
    q, k, v, index = node.input
    freq_bins = int(_attribute(node, "freq_bins", 0))
    same = bool(_attribute(node, "same_frequency", 1))
    cross = bool(_attribute(node, "cross_frequency", 1))
    w = NodeWriter(node.name or node.output[0])
    scale = float(_attribute(node, "scale", 0.0))

    if not same:
        # every query sees the same M keys: fold heads only
        keys = {x: w.fold(w("Gather", [x, index], f"{x}_sampled", axis=2), f"{x}_keys") for x in (k, v)}
        out = w("MultiHeadAttention", [w.fold(q, "q_fold"), keys[k], keys[v]], "mha", domain=CONTRIB_DOMAIN,
                num_heads=1, scale=scale)
        w.nodes.append(helper.make_node("Reshape", [out, w("Shape", [q], "q_shape")], [node.output[0]],
                                        name=f"{w.prefix}/out"))
        return w.nodes

    # (B, H, T*F, D) -> (B, H, F, T, D): time-major tokens, one batch per frequency bin
    grid = w("Concat", [w("Shape", [q], "bh", start=0, end=2), w.ints("t_f", [-1, freq_bins]),
                        w("Shape", [q], "d", start=3)], "grid", axis=0)
    per_bin = {x: w("Transpose", [w("Reshape", [x, grid], f"{x}_grid")], f"{x}_bins", perm=[0, 1, 3, 2, 4])
               for x in (q, k, v)}
    keys = {}
    for x in (k, v):
        keys[x] = per_bin[x]
        if cross:
            # the sampled tokens, the same for every bin: (B, H, 1, M, D) broadcast to (B, H, F, M, D)
            sampled = w("Unsqueeze", [w("Gather", [x, index], f"{x}_sampled", axis=2), w.ints(f"{x}_ax", [2])],
                        f"{x}_sampled5")
            bins = w("Concat", [w("Shape", [per_bin[x]], f"{x}_bhf", start=0, end=3), w.ints(f"{x}_ones", [1, 1])],
                     f"{x}_expand_shape", axis=0)
            keys[x] = w("Concat", [per_bin[x], w("Expand", [sampled, bins], f"{x}_shared")], f"{x}_cat", axis=3)
        keys[x] = w.fold(keys[x], f"{x}_keys")
    out = w("MultiHeadAttention", [w.fold(per_bin[q], "q_fold"), keys[k], keys[v]], "mha", domain=CONTRIB_DOMAIN,
            num_heads=1, scale=scale)
    unfolded = w("Transpose", [w("Reshape", [out, w("Shape", [per_bin[q]], "bins_shape")], "out_bins")],
                 "out_grid", perm=[0, 1, 3, 2, 4])
    w.nodes.append(helper.make_node("Reshape", [unfolded, w("Shape", [q], "q_shape")], [node.output[0]],
                                    name=f"{w.prefix}/out"))
    return w.nodes


def lower_to_multihead_attention(model: onnx.ModelProto) -> int:
    """Rewrite every DualSparseAttention node of ``model``'s main graph in place; returns how many."""
    nodes, lowered = [], 0
    for node in model.graph.node:
        if node.domain == DOMAIN and node.op_type == OP_TYPE:
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
