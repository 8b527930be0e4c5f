"""Graph rewrites an ONNX Runtime engine is built from (the export itself stays portable).

- every ``DualSparseAttention`` node -> its contrib MultiHeadAttention form (attention/onnx_mha.py);
- every unmasked ``MatMul -> Softmax -> MatMul`` chain the exporter decomposed SDPA into (the layers
  LiteFocus leaves at full attention) -> MultiHeadAttention, whose CPU kernel never materialises the
  N x N scores;
- ``SplitToSequence`` + constant ``SequenceAt`` (GEGLU's ``chunk``) -> one ``Slice`` per used chunk,
  instead of a sequence of copies;
- the exporter's erf GELU, ``x * (0.5 * (1 + erf(x / sqrt 2)))``, which ORT's own fusion misses in this
  operand order -> one contrib ``Gelu``.

Each rewrite only fires where it is exact; anything it cannot prove (unknown ranks, masks, several
users) is left as it is.
"""

from __future__ import annotations

import math
from collections import defaultdict

import onnx
from onnx import helper, numpy_helper

from ..attention.onnx_mha import CONTRIB_DOMAIN, NodeWriter, lower_to_multihead_attention

FLOAT = onnx.TensorProto.FLOAT
# recorded in the engine manifest (and so in its key): changing the list rebuilds engines
REWRITES = ("dual_sparse_attention", "softmax_attention", "split_to_sequence", "erf_gelu")


def inferred_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto.Tensor]:
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
    except Exception:  # noqa: BLE001 - inference is a bonus: fall back to the declared types
        pass
    return {v.name: v.type.tensor_type for v in (*graph.value_info, *graph.input, *graph.output)}


class _Graph:
    """Producers, consumers, constants and known shapes of a graph, for pattern checks."""

    def __init__(self, graph: onnx.GraphProto, types: dict[str, onnx.TypeProto.Tensor] | None = None):
        self.producer = {out: node for node in graph.node for out in node.output}
        self.users: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            # a value read inside a subgraph (If/Loop body) counts as read by the node holding it
            for name in {*node.input, *_subgraph_reads(node)}:
                self.users[name].append(node)
        self.outputs = {v.name for v in graph.output}
        self.types = types if types is not None else {
            v.name: v.type.tensor_type for v in (*graph.value_info, *graph.input, *graph.output)}
        self.initializers = {t.name: t for t in graph.initializer}

    def dims(self, name: str) -> list[int | str] | None:
        tensor = self.types.get(name)
        if tensor is None or not tensor.HasField("shape"):
            return None
        return [d.dim_param if d.HasField("dim_param") else d.dim_value if d.HasField("dim_value") else None
                for d in tensor.shape.dim]

    def elem_type(self, name: str) -> int | None:
        tensor = self.types.get(name)
        return tensor.elem_type if tensor is not None else None

    def constant_value(self, name: str) -> float | None:
        """A one-element constant's value (Constant node or initializer), else None."""
        values = self.constant_values(name)
        return float(values[0]) if values is not None and len(values) == 1 else None

    def other_input(self, node: onnx.NodeProto, name: str) -> str | None:
        """For a binary node fed by ``name``, its other input."""
        if len(node.input) != 2 or name not in node.input:
            return None
        return node.input[1] if node.input[0] == name else node.input[0]

    def constant_values(self, name: str, at_most: int = 16) -> list[float] | None:
        """A small constant's values (Constant node or initializer), flattened; None for anything else."""
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute[0].name == "value":
            tensor = node.attribute[0].t
        elif name in self.initializers:
            tensor = self.initializers[name]
        else:
            return None
        if math.prod(tensor.dims) > at_most:
            return None
        return numpy_helper.to_array(tensor).reshape(-1).tolist()

    def only_user(self, name: str) -> onnx.NodeProto | None:
        """The one node reading ``name``, if nothing else (no other node, not a graph output) does."""
        users = self.users.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None


def _subgraph_reads(node: onnx.NodeProto) -> set[str]:
    names: set[str] = set()
    for attr in node.attribute:
        for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            for inner in sub.node:
                names.update(inner.input)
                names.update(_subgraph_reads(inner))
    return names


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _same_batch(g: _Graph, names: list[str]) -> bool:
    """All rank 4 with identical, known leading axes: folding them into one batch is exact."""
    shapes = [g.dims(n) for n in names]
    if any(s is None or len(s) != 4 for s in shapes):
        return False
    lead = {tuple(s[:2]) for s in shapes}
    return len(lead) == 1 and None not in next(iter(lead)) and all(g.elem_type(n) == FLOAT for n in names)


def _replace(graph: onnx.GraphProto, replacements: dict[int, list[onnx.NodeProto]], dropped: set[int]) -> None:
    nodes = []
    for i, node in enumerate(graph.node):
        if i in replacements:
            nodes.extend(replacements[i])
        elif i not in dropped:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def fuse_softmax_attention(model: onnx.ModelProto) -> int:
    """``MatMul(x, y) -> Softmax(-1) -> MatMul(., v)`` (4-D, same batch, float) -> MultiHeadAttention(scale 1)."""
    g = _Graph(model.graph, inferred_types(model))
    index = {id(node): i for i, node in enumerate(model.graph.node)}
    replacements: dict[int, list[onnx.NodeProto]] = {}
    dropped: set[int] = set()
    for softmax in model.graph.node:
        if softmax.op_type != "Softmax" or _attr(softmax, "axis", -1) not in (-1, 3):
            continue
        scores, weighted = g.producer.get(softmax.input[0]), g.only_user(softmax.output[0])
        if (scores is None or scores.op_type != "MatMul" or g.only_user(scores.output[0]) is not softmax
                or weighted is None or weighted.op_type != "MatMul" or weighted.input[0] != softmax.output[0]):
            continue
        (x, y), v = scores.input, weighted.input[1]
        if not _same_batch(g, [x, y, v]):
            continue
        w = NodeWriter(weighted.name or weighted.output[0])
        keys = w("Transpose", [y], "keys", perm=[0, 1, 3, 2])
        out = w("MultiHeadAttention", [w.fold(x, "q"), w.fold(keys, "k"), w.fold(v, "v")], "mha",
                domain=CONTRIB_DOMAIN, num_heads=1, scale=1.0)
        shape = w("Concat", [w("Shape", [x], "lead", start=0, end=3), w("Shape", [v], "d", start=3)], "shape", axis=0)
        w.nodes.append(helper.make_node("Reshape", [out, shape], list(weighted.output), name=f"{w.prefix}/out"))
        replacements[index[id(weighted)]] = w.nodes
        dropped.update((index[id(scores)], index[id(softmax)]))
    if replacements:
        _replace(model.graph, replacements, dropped)
        _import_contrib(model)
    return len(replacements)


def split_sequences_to_slices(model: onnx.ModelProto) -> int:
    """``SplitToSequence(x, s)`` read only by ``SequenceAt(., i)`` with constants -> ``Slice`` per chunk."""
    g = _Graph(model.graph)
    index = {id(node): i for i, node in enumerate(model.graph.node)}
    replacements: dict[int, list[onnx.NodeProto]] = {}
    dropped: set[int] = set()
    for split in model.graph.node:
        if split.op_type != "SplitToSequence" or len(split.input) != 2 or not _attr(split, "keepdims", 1):
            continue
        size, users = g.constant_values(split.input[1]), g.users.get(split.output[0], [])
        if split.output[0] in g.outputs:
            continue
        positions = [g.constant_values(u.input[1]) if u.op_type == "SequenceAt" else None for u in users]
        if size is None or len(size) != 1 or not users or any(p is None or len(p) != 1 or p[0] < 0 for p in positions):
            continue
        axis = _attr(split, "axis", 0)
        for user, (chunk,) in zip(users, positions):
            w = NodeWriter(user.name or user.output[0])
            w.nodes.append(helper.make_node(
                "Slice", [split.input[0], w.ints("start", [chunk * size[0]]), w.ints("end", [(chunk + 1) * size[0]]),
                          w.ints("axis", [axis])], list(user.output), name=f"{w.prefix}/slice"))
            replacements[index[id(user)]] = w.nodes
        dropped.add(index[id(split)])
    if replacements:
        _replace(model.graph, replacements, dropped)
    return len(dropped)


def fuse_erf_gelu(model: onnx.ModelProto) -> int:
    """``Div(x, sqrt 2) -> Erf -> Add 1 -> Mul 0.5 -> Mul x`` (either operand order) -> ``com.microsoft.Gelu``."""
    g = _Graph(model.graph)
    index = {id(node): i for i, node in enumerate(model.graph.node)}
    replacements: dict[int, list[onnx.NodeProto]] = {}
    dropped: set[int] = set()

    def next_binary(node: onnx.NodeProto, op_type: str) -> tuple[onnx.NodeProto, str] | tuple[None, None]:
        user = g.only_user(node.output[0])
        if user is None or user.op_type != op_type:
            return None, None
        return user, g.other_input(user, node.output[0])

    def near(name: str | None, value: float) -> bool:
        found = g.constant_value(name) if name is not None else None
        return found is not None and abs(found - value) <= 1e-6 * abs(value)

    for div in model.graph.node:
        if div.op_type != "Div" or not near(div.input[1], 2 ** 0.5):
            continue
        x = div.input[0]
        erf = g.only_user(div.output[0])
        if erf is None or erf.op_type != "Erf":
            continue
        add, one = next_binary(erf, "Add")
        half_mul, half = next_binary(add, "Mul") if add is not None else (None, None)
        out_mul, x_again = next_binary(half_mul, "Mul") if half_mul is not None else (None, None)
        if out_mul is None or not near(one, 1.0) or not near(half, 0.5) or x_again != x:
            continue
        replacements[index[id(out_mul)]] = [helper.make_node("Gelu", [x], list(out_mul.output), domain=CONTRIB_DOMAIN,
                                                             name=f"{out_mul.name or out_mul.output[0]}/gelu")]
        dropped.update(index[id(n)] for n in (div, erf, add, half_mul))
    if replacements:
        _replace(model.graph, replacements, dropped)
        _import_contrib(model)
    return len(replacements)


def _import_contrib(model: onnx.ModelProto) -> None:
    if not any(e.domain == CONTRIB_DOMAIN for e in model.opset_import):
        model.opset_import.append(helper.make_opsetid(CONTRIB_DOMAIN, 1))


def rewrite_for_onnxruntime(model: onnx.ModelProto) -> dict[str, int]:
    """Apply every rewrite in place; returns how often each fired."""
    passes = {"dual_sparse_attention": lower_to_multihead_attention, "softmax_attention": fuse_softmax_attention,
              "split_to_sequence": split_sequences_to_slices, "erf_gelu": fuse_erf_gelu}
    return {name: passes[name](model) for name in REWRITES}
