"""The liveness of an ONNX graph: how many activation bytes are live at once, with every value sized at given input
shapes (onnx and numpy only; the memory models of the backends build on it).

Node by node in graph order, ONNX's shape inference of each op is given the values of the small tensors known so
far, so the shape arithmetic of an exported graph resolves to concrete dims (:func:`value_sizes`); a value then
lives from the node that makes it to its last reader (:func:`activation_peak`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.contract import CONTRIB_DOMAIN, OP_DOMAIN, OP_TYPE

log = logging.getLogger(__name__)
# initializers up to this many elements stay in the weightless graph: shape constants, read by shape inference
SMALL_INITIALIZER = 1024
VIEW_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})


@dataclass(frozen=True)
class Liveness:
    """The most activation bytes live at once in a graph (``peak``), at which node, and the values whose size
    shape inference could not tell (counted as 0)."""

    peak: int
    node: str
    unknown: tuple[str, ...] = ()


def activation_peak(graph: Any, sizes: Mapping[str, int], constants: Sequence[str] | set[str] = (),
                    scratch: Mapping[int, int] | None = None) -> Liveness:
    """Liveness peak of ``graph`` (an ``onnx.GraphProto``) in node order, values sized by ``sizes`` (bytes).

    Initializers, ``constants`` (weights given as graph inputs) and what is computed from them alone are not
    activations. A graph input is live for the whole run, a graph output from its producer to the end, any
    other value from its producer to its last reader (subgraph reads included); a view (``VIEW_OPS``) shares
    its input's buffer, which lives until the view's last reader too. ``scratch``: bytes a kernel holds while
    its node runs (node index -> bytes), e.g. a convolution's working buffer.
    """
    from .patterns import subgraph_reads

    const = set(constants) | {t.name for t in graph.initializer}
    last_index = max(len(graph.node) - 1, 0)
    buffer: dict[str, str] = {}  # value -> the value owning its memory
    span: dict[str, list[int]] = {}  # owner -> [first, last] node index
    for value in graph.input:
        if value.name not in const:
            buffer[value.name] = value.name
            span[value.name] = [0, last_index]
    for i, node in enumerate(graph.node):
        reads = [name for name in (*node.input, *subgraph_reads(node)) if name]
        if node.op_type == "Constant" or (reads and all(name in const for name in reads)):
            const.update(node.output)
            continue
        for name in reads:
            if name in buffer:
                span[buffer[name]][1] = max(span[buffer[name]][1], i)
        source = node.input[0] if node.op_type in VIEW_OPS and node.input else None
        for out in filter(None, node.output):
            if source in buffer:
                buffer[out] = buffer[source]
            elif source in const:
                const.add(out)
            else:
                buffer[out], span[out] = out, [i, i]
    for value in graph.output:
        if value.name in buffer:
            span[buffer[value.name]][1] = last_index
    return _sweep(graph, span, sizes, scratch or {})


def _sweep(graph: Any, span: Mapping[str, list[int]], sizes: Mapping[str, int], scratch: Mapping[int, int]) -> Liveness:
    change = [0] * (len(graph.node) + 2)
    for index, size in scratch.items():
        change[index] += size
        change[index + 1] -= size
    unknown = []
    for owner, (first, last) in span.items():
        if owner not in sizes:
            unknown.append(owner)
            continue
        change[first] += sizes[owner]
        change[last + 1] -= sizes[owner]
    live, peak, where = 0, 0, 0
    for i in range(max(len(graph.node), 1)):
        live += change[i]
        if live > peak:
            peak, where = live, i
    node = graph.node[where] if graph.node else None
    return Liveness(peak, (node.name or node.op_type) if node is not None else "", tuple(sorted(unknown)))


def tensor_bytes(value_type: Any) -> int | None:
    """Bytes of a tensor type with a fully known shape (an ``onnx.TypeProto``); None otherwise."""
    import numpy as np
    from onnx import helper

    dims = tensor_dims(value_type)
    if dims is None:
        return None
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(value_type.tensor_type.elem_type)).itemsize
    except (KeyError, TypeError, ValueError):  # undefined or string elements
        return None
    return math.prod(dims) * itemsize


def tensor_dims(value_type: Any) -> list[int] | None:
    """Dims of a tensor type whose shape is fully known (an ``onnx.TypeProto``); None otherwise."""
    if value_type is None or value_type.WhichOneof("value") != "tensor_type":
        return None
    tensor = value_type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    return dims if tensor.HasField("shape") and all(d >= 0 for d in dims) else None


def weightless(model: Any) -> tuple[Any, set[str]]:
    """A copy of ``model`` whose weights (initializers over ``SMALL_INITIALIZER`` elements, or stored outside the
    file) are typed graph inputs, and their names. A copy, not an edit: dropping ``model`` then frees the weights
    (protobuf keeps the memory of deleted fields)."""
    import onnx
    from onnx import helper

    light = onnx.ModelProto(ir_version=model.ir_version)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    graph = light.graph
    for part in ("node", "input", "output", "value_info"):  # value_info: the types the builder's rewrites see
        getattr(graph, part).extend(getattr(model.graph, part))
    inputs = {value.name for value in graph.input}
    weights = set()
    for tensor in model.graph.initializer:
        external = tensor.data_location == onnx.TensorProto.EXTERNAL
        if math.prod(tensor.dims) <= SMALL_INITIALIZER and not external:
            graph.initializer.append(tensor)
            continue
        weights.add(tensor.name)
        if tensor.name not in inputs:
            graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    return light, weights


def value_sizes(model: Any, input_shapes: Mapping[str, Sequence[int]]) -> dict[str, int]:
    """Bytes of every value of ``model`` (weightless) whose shape is known with inputs of ``input_shapes``
    (:func:`value_types`)."""
    return known_sizes(value_types(model, input_shapes))


def known_sizes(types: Mapping[str, Any]) -> dict[str, int]:
    """Bytes of each value in ``types`` (name -> ``onnx.TypeProto``) whose size is known."""
    sizes = {name: tensor_bytes(value_type) for name, value_type in types.items()}
    return {name: size for name, size in sizes.items() if size is not None}


def value_types(model: Any, input_shapes: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """The type (``onnx.TypeProto``) of every value of ``model`` (weightless) with inputs of ``input_shapes``.

    Node by node in graph order: ONNX's shape inference of the op (``onnx.shape_inference.infer_node_outputs``)
    given the values of the small tensors known so far (constants, ``Shape`` of a sized value, and what ONNX's
    reference ops compute from them), so every ``Reshape``, ``Expand`` and ``Range`` gets concrete dims.
    Whole-graph ``infer_shapes(data_prop=True)`` leaves most dims of a dynamo export unknown: its data
    propagation stops at ``Cast``, ``Reshape`` and ``Range`` of constants. The ops ONNX has no schema for get
    their shapes here (:func:`_custom_type`).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    types: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for tensor in graph.initializer:
        values[tensor.name] = numpy_helper.to_array(tensor)
        types[tensor.name] = helper.make_tensor_type_proto(tensor.data_type, list(tensor.dims))
    for value in graph.input:
        if value.name in input_shapes:
            dims = [int(size) for size in input_shapes[value.name]]
            types[value.name] = helper.make_tensor_type_proto(value.type.tensor_type.elem_type, dims)
        else:
            types.setdefault(value.name, value.type)
    opsets = {entry.domain or "": entry.version for entry in model.opset_import}
    for node in graph.node:
        _infer_node(node, types, values, model.opset_import, opsets)
    return types


def _known_value(node: Any, types: Mapping[str, Any]) -> Any:
    """The value of a ``Constant``, or of a ``Shape`` / ``Size`` of a value of known shape; None otherwise."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    if node.op_type == "Constant" and node.attribute:
        attr = node.attribute[0]
        value = helper.get_attribute_value(attr)
        if attr.name == "value" and value.data_location != TensorProto.EXTERNAL:
            return numpy_helper.to_array(value)
        dtype = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}
        return np.asarray(value, dtype=dtype[attr.name]) if attr.name in dtype else None
    dims = tensor_dims(types.get(node.input[0])) if node.input else None
    if node.op_type not in ("Shape", "Size") or dims is None:
        return None
    if node.op_type == "Size":
        return np.asarray(math.prod(dims), dtype=np.int64)
    start = next((a.i for a in node.attribute if a.name == "start"), 0)
    end = next((a.i for a in node.attribute if a.name == "end"), len(dims))
    return np.asarray(dims[start:end], dtype=np.int64)


def _custom_type(node: Any, types: Mapping[str, Any]) -> Any:
    """Output type of DualSparseAttention and of the ops ONNX has no schema for in an ONNX Runtime engine's graph
    (the builder's rewrites and ORT's fusions); None for others.

    MultiHeadAttention: 3-D query (B, S, D) and value (B, L, Dv) give (B, S, Dv); the activation and
    normalisation fusions have their first input's shape; FusedConv and FusedGemm have their standard op's
    shape; FusedMatMul is MatMul with its operands optionally transposed; DualSparseAttention's output has its
    query's shape (docs/design.md §1)."""
    from onnx import helper

    key = (node.domain or "", node.op_type)
    if key == (CONTRIB_DOMAIN, "MultiHeadAttention"):
        query, value = tensor_dims(types.get(node.input[0])), tensor_dims(types.get(node.input[2]))
        if query is None or value is None or len(query) != 3 or len(value) != 3:
            return None
        elem = types[node.input[0]].tensor_type.elem_type
        return helper.make_tensor_type_proto(elem, [*query[:2], value[2]])
    if key in FIRST_INPUT_SHAPED:
        return types.get(node.input[0])
    if key[0] == CONTRIB_DOMAIN and node.op_type in STANDARD_TWIN:
        return _twin_type(node, types)
    if key == (CONTRIB_DOMAIN, "FusedMatMul"):
        return _fused_matmul_type(node, types)
    return None


# ops whose (first) output has their first input's type: our op, ORT's activation and normalisation fusions
FIRST_INPUT_SHAPED = frozenset({(OP_DOMAIN, OP_TYPE), ("", "SimplifiedLayerNormalization")} | {
    (CONTRIB_DOMAIN, op) for op in ("Gelu", "QuickGelu", "FastGelu", "BiasGelu", "SkipLayerNormalization",
                                    "SkipSimplifiedLayerNormalization")})
# contrib fusions shaped as the standard op they extend: (standard op, its inputs and attributes)
STANDARD_TWIN = {
    "FusedConv": ("Conv", 3, ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")),
    "FusedGemm": ("Gemm", 3, ("alpha", "beta", "transA", "transB")),
}


def _twin_type(node: Any, types: Mapping[str, Any]) -> Any:
    import onnx
    from onnx import helper

    op, inputs, attributes = STANDARD_TWIN[node.op_type]
    twin = helper.make_node(op, list(node.input[:inputs]), [node.output[0]])
    twin.attribute.extend(a for a in node.attribute if a.name in attributes)
    try:
        inferred = onnx.shape_inference.infer_node_outputs(
            onnx.defs.get_schema(op, 18), twin, {name: types[name] for name in twin.input if name in types},
            opset_imports=[helper.make_opsetid("", 18)])
    except Exception:  # noqa: BLE001 - onnx raises several types
        return None
    return inferred.get(node.output[0])


def _fused_matmul_type(node: Any, types: Mapping[str, Any]) -> Any:
    import numpy as np
    from onnx import helper

    a, b = tensor_dims(types.get(node.input[0])), tensor_dims(types.get(node.input[1]))
    attrs = {attr.name: attr.i for attr in node.attribute if attr.type == attr.INT}
    if a is None or b is None or min(len(a), len(b)) < 2 or attrs.get("transBatchA") or attrs.get("transBatchB"):
        return None
    if attrs.get("transA"):
        a = [*a[:-2], a[-1], a[-2]]
    if attrs.get("transB"):
        b = [*b[:-2], b[-1], b[-2]]
    try:
        batch = list(np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2])))
    except ValueError:
        return None
    return helper.make_tensor_type_proto(types[node.input[0]].tensor_type.elem_type, [*batch, a[-2], b[-1]])


def _infer_node(node: Any, types: dict[str, Any], values: dict[str, Any], opset_imports: Any,
                opsets: Mapping[str, int]) -> None:
    """Add the types (and the values, when small and computable) of ``node``'s outputs (``value_sizes``)."""
    import onnx
    from onnx import helper, numpy_helper

    known = _known_value(node, types) if not node.domain else None
    if known is not None:
        types[node.output[0]] = helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(known.dtype),
                                                              list(known.shape))
        if known.size <= SMALL_INITIALIZER:
            values[node.output[0]] = known
        return
    reads = [name for name in node.input if name]
    custom = _custom_type(node, types)
    if custom is not None:
        types[node.output[0]] = custom
        return
    try:
        schema = onnx.defs.get_schema(node.op_type, opsets.get(node.domain or "", 1), node.domain)
        inferred = onnx.shape_inference.infer_node_outputs(
            schema, node, {name: types[name] for name in reads if name in types},
            {name: numpy_helper.from_array(values[name], name) for name in reads if name in values},
            opset_imports=opset_imports)
    except Exception as exc:  # noqa: BLE001 - onnx raises SchemaError, InferenceError, RuntimeError
        log.debug("no shapes for %s (%s): %s", node.name or node.op_type, node.op_type, exc)
        return
    types.update(inferred)
    outputs = [tensor_dims(inferred.get(name)) for name in node.output if name]
    if reads and all(name in values for name in reads) and all(
            dims is not None and math.prod(dims) <= SMALL_INITIALIZER for dims in outputs):
        _evaluate(node, values, opsets)


def _evaluate(node: Any, values: dict[str, Any], opsets: Mapping[str, int]) -> None:
    """Compute a node of small known inputs with ONNX's reference ops (shape arithmetic)."""
    from onnx.reference import ReferenceEvaluator

    try:
        results = ReferenceEvaluator(node, opsets=dict(opsets)).run(
            None, {name: values[name] for name in node.input if name})
    except Exception as exc:  # noqa: BLE001 - the reference ops raise many types
        log.debug("cannot evaluate %s (%s): %s", node.name or node.op_type, node.op_type, exc)
        return
    values.update((name, result) for name, result in zip(node.output, results) if name)
