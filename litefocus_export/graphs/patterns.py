"""Pattern matching on ONNX graphs, shared by the backends' rewrites (onnx and numpy only).

``PatternGraph`` indexes a graph (producers, readers, constants, inferred types) for a pattern's checks;
``GraphEdit`` applies one pass's node replacements at once. ``fuse_softmax_attention`` is the one pattern two
backends need: ONNX Runtime runs the ``MultiHeadAttention`` it writes, OpenVINO converts it to its fused
``ScaledDotProductAttention`` (``backends/openvino/lowering.py``).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .multihead import CONTRIB_DOMAIN, NodeWriter, attribute

log = logging.getLogger(__name__)
FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


Types = dict[str, onnx.TypeProto.Tensor]


def inferred_types(model: onnx.ModelProto) -> Types:
    """Tensor types (with shapes where ONNX shape inference finds them) of every value in ``model``.

    Inference runs on a copy without initializer data: a UNet's graph is megabytes, its weights gigabytes.
    """
    light = onnx.ModelProto(ir_version=model.ir_version)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    graph = light.graph
    for field in ("node", "input", "output", "value_info"):
        getattr(graph, field).extend(getattr(model.graph, field))
    weights = model.graph.initializer
    graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in weights)
    try:
        graph = onnx.shape_inference.infer_shapes(light, data_prop=True).graph
    except Exception as exc:  # noqa: BLE001 - inference is a bonus: fall back to the declared types
        log.debug("shape inference failed (%s); using the declared types", exc)
    return {v.name: v.type.tensor_type for v in (*graph.value_info, *graph.input, *graph.output)}


class PatternGraph:
    """Producers, readers, constants and known types of a graph, for pattern checks."""

    def __init__(self, model: onnx.ModelProto, types: Types | None = None):
        graph = model.graph
        self.producer = {out: node for node in graph.node for out in node.output}
        self.users: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            # a value read inside a subgraph (If/Loop body) counts as read by the node holding it
            for name in {*node.input, *subgraph_reads(node)}:
                self.users[name].append(node)
        self.outputs = {v.name for v in graph.output}
        self.types = types if types is not None else inferred_types(model)
        self.initializers = {t.name: t for t in graph.initializer}
        self.index = {id(node): i for i, node in enumerate(graph.node)}

    def dims(self, name: str) -> list[int | str | None] | None:
        tensor = self.types.get(name)
        if tensor is None or not tensor.HasField("shape"):
            return None
        return [d.dim_param if d.HasField("dim_param") else d.dim_value if d.HasField("dim_value") else None
                for d in tensor.shape.dim]

    def elem_type(self, name: str) -> int | None:
        tensor = self.types.get(name)
        return tensor.elem_type if tensor is not None else None

    def constant(self, name: str, at_most: int = 16) -> np.ndarray | None:
        """A small constant (Constant node or initializer) as an array; None for anything else."""
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute[0].name == "value":
            tensor = node.attribute[0].t
        elif name in self.initializers:
            tensor = self.initializers[name]
        else:
            return None
        return numpy_helper.to_array(tensor) if math.prod(tensor.dims) <= at_most else None

    def scalar(self, name: str | None) -> np.ndarray | None:
        """A one-element constant of rank <= 1 (it cannot change a broadcast's shape), else None."""
        value = self.constant(name) if name is not None else None
        return value if value is not None and value.size == 1 and value.ndim <= 1 else None

    def other_input(self, node: onnx.NodeProto, name: str) -> str | None:
        """For a binary node fed by ``name``, its other input."""
        if len(node.input) != 2 or name not in node.input:
            return None
        return node.input[1] if node.input[0] == name else node.input[0]

    def only_user(self, name: str) -> onnx.NodeProto | None:
        """The one node reading ``name``, if nothing else (no other node, not a graph output) does."""
        users = self.users.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None


class GraphEdit:
    """Node replacements and removals of one pass, applied at once; a node is claimed by one match only."""

    def __init__(self, g: PatternGraph):
        self.g = g
        self.replacements: dict[int, list[onnx.NodeProto]] = {}
        self.dropped: set[int] = set()
        self.matches = 0

    def free(self, *nodes: onnx.NodeProto) -> bool:
        return not any(self.g.index[id(n)] in self.replacements or self.g.index[id(n)] in self.dropped for n in nodes)

    def replace(self, node: onnx.NodeProto, new_nodes: list[onnx.NodeProto], *dropped: onnx.NodeProto) -> None:
        self.replacements[self.g.index[id(node)]] = new_nodes
        self.dropped.update(self.g.index[id(n)] for n in dropped)

    def apply(self, model: onnx.ModelProto, contrib: bool = False) -> int:
        if self.replacements:
            nodes = []
            for i, node in enumerate(model.graph.node):
                if i in self.replacements:
                    nodes.extend(self.replacements[i])
                elif i not in self.dropped:
                    nodes.append(node)
            del model.graph.node[:]
            model.graph.node.extend(nodes)
            if contrib and not any(e.domain == CONTRIB_DOMAIN for e in model.opset_import):
                model.opset_import.append(helper.make_opsetid(CONTRIB_DOMAIN, 1))
        return self.matches


def subgraph_reads(node: onnx.NodeProto) -> set[str]:
    """Values read inside ``node``'s subgraphs (If / Loop bodies): ``node`` reads them too."""
    names: set[str] = set()
    for attr in node.attribute:
        for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            for inner in sub.node:
                names.update(inner.input)
                names.update(subgraph_reads(inner))
    return names


def default_opset(model: onnx.ModelProto) -> int:
    return next((e.version for e in model.opset_import if e.domain in ("", "ai.onnx")), 0)


def same_batch(g: PatternGraph, names: list[str]) -> bool:
    """All float, rank 4, with identical known leading axes: folding them into one batch is exact."""
    shapes = [g.dims(n) for n in names]
    if any(s is None or len(s) != 4 for s in shapes):
        return False
    lead = {tuple(s[:2]) for s in shapes}
    return len(lead) == 1 and None not in next(iter(lead)) and all(g.elem_type(n) == FLOAT for n in names)


def fuse_softmax_attention(model: onnx.ModelProto, types: Types | None = None) -> int:
    """``MatMul(x, y) -> Softmax(-1) -> MatMul(., v)`` (4-D, same batch, float) -> MultiHeadAttention(scale 1)."""
    if default_opset(model) < 13:  # Softmax before opset 13 normalises over flattened trailing axes
        return 0
    g = PatternGraph(model, types)
    edit = GraphEdit(g)
    for softmax in model.graph.node:
        if softmax.op_type != "Softmax" or attribute(softmax, "axis", -1) not in (-1, 3):
            continue
        scores, weighted = g.producer.get(softmax.input[0]), g.only_user(softmax.output[0])
        if (scores is None or scores.op_type != "MatMul" or g.only_user(scores.output[0]) is not softmax
                or weighted is None or weighted.op_type != "MatMul" or weighted.input[0] != softmax.output[0]
                or not edit.free(scores, softmax, weighted)):
            continue
        (x, y), v = scores.input, weighted.input[1]
        if not same_batch(g, [x, y, v]):
            continue
        w = NodeWriter(weighted.output[0])
        keys = w("Transpose", [y], "keys", perm=[0, 1, 3, 2])
        out = w("MultiHeadAttention", [w.fold(x, "q"), w.fold(keys, "k"), w.fold(v, "v")], "mha",
                domain=CONTRIB_DOMAIN, num_heads=1, scale=1.0)
        shape = w("Concat", [w("Shape", [x], "lead", start=0, end=3), w("Shape", [v], "d", start=3)], "shape", axis=0)
        w.nodes.append(helper.make_node("Reshape", [out, shape], [weighted.output[0]], name=f"{w.prefix}/out"))
        edit.replace(weighted, w.nodes, scores, softmax)
        edit.matches += 1
    return edit.apply(model, contrib=True)
