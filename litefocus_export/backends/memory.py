"""Peak memory of one whole generation on the engines a build makes, computed from the export's ONNX graphs.

Why one module over ~400 lines: the estimate is one walk (shapes, liveness, stage totals, the check); its parts
have no other user.

``build`` refuses a profile whose longest generation would not fit in this machine's available memory
(:func:`check_generation_memory`, unless ``--skip-memory-check``). The estimate is computed, not fitted:

- **weights**: the bytes of every stage's files (an ``EngineFolder`` keeps every stage open);
- **activations** of a stage: its graph is loaded without weights and rewritten as the ONNX Runtime builder
  rewrites it (``onnxruntime/rewrites.py``), so it is the engine's graph the walk sees: attention as contrib
  ``MultiHeadAttention``, whose CPU kernel never holds the (S x S) scores the export's VAE attention would (a
  600 s clip's: 230 GB). Its dynamic inputs are set to the profile's longest duration as ``generate`` runs it:
  batch 2 for the text stages and the UNet (classifier-free guidance), batch 1 for the VAE decoder and the
  vocoder, the vocoder at its chunk length (``runtime/decode.py``), text tokens at the maxima TensorRT's
  profiles use (``tensorrt/profiles.py``). ONNX shape inference, node by node with the shape arithmetic
  evaluated (:func:`value_sizes`), sizes every value. In graph order a value lives from the node that makes it
  to its last reader; graph inputs for the whole run (the caller holds its feeds), graph outputs to the end;
  views (Reshape, Squeeze, Unsqueeze, Flatten, Identity) share their input's buffer; values computed from
  weights alone count as weights (ONNX Runtime folds them). The stage's peak is the most bytes live at once;
- **whole generation**: all weights + the largest stage peak. Stages run one after another and ``OrtStage``
  keeps no CPU arena, so a stage's activations are given back before the next stage runs.

This is the liveness of the graph, not ONNX Runtime's allocation planner, and not a bound either way. Left
out, so ORT can need more: kernel scratch (convolution buffers, the attention kernel's blocks), pre-packed
weight copies, allocator rounding and fragmentation, the runtime's arrays between stages (latents, mel,
waveform: megabytes) and the process itself (Python, libraries: a few hundred MB). Counted, so ORT can need
less: intermediates its load-time fusions remove (``x * sigmoid(x)``) and elementwise outputs it writes over
a dying input (both are live at that node here). On random:audioldm2 at 80 s: 5801 MB estimated (weights
3800 + VAE decoder 2001), 5573 and 5833 MB peak resident measured for whole generations in two runs (README
"Whole generations"; MB of 2**20 bytes). Batches of several requests (``serve --max-batch``) multiply
activations by up to the batch size; that is not checked. The estimate models ONNX Runtime CPU engines, and
``build`` checks those only (GPU engines hold activations in GPU memory). Sizes are in GB of 2**30 bytes. It
takes seconds: ~6 s for every stage of random:audioldm2, whose UNet file (1.4 GB, weights inline) is held twice
while it is parsed.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contract import DECODE_STAGES, MAX_NEW_TOKENS_KEY, MEL_FRAMES, OP_DOMAIN, OP_TYPE
from ..errors import BuildError, LiteFocusError, first_line
from ..geometry import AudioGeometry

log = logging.getLogger(__name__)
GB, MB = 2**30, 2**20
SKIP_OPTION = "--skip-memory-check"
GUIDED_BATCH = 2  # [negative, prompt] rows: the text stages and the UNet under classifier-free guidance
# initializers up to this many elements stay in the weightless graph: shape constants, read by shape inference
SMALL_INITIALIZER = 1024
VIEW_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})


def available_memory_bytes() -> int | None:
    """What this machine can give without swapping: ``MemAvailable`` of /proc/meminfo, else its free physical
    pages (``os.sysconf``, without the reclaimable page cache); None where neither is known."""
    try:
        match = re.search(r"^MemAvailable:\s+(\d+)\s*kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    except OSError:
        match = None
    if match:
        return int(match.group(1)) * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def format_bytes(size: int) -> str:
    return f"{size / GB:.1f} GB" if size >= GB else f"{size / MB:.0f} MB"


@dataclass(frozen=True)
class Liveness:
    """The most activation bytes live at once in a graph (``peak``), at which node, and the values whose size
    shape inference could not tell (counted as 0)."""

    peak: int
    node: str
    unknown: tuple[str, ...] = ()


@dataclass(frozen=True)
class StageMemory:
    """One stage: ``weights`` (bytes of its files) and its activation ``liveness`` at ``inputs`` (the shapes)."""

    name: str
    weights: int
    liveness: Liveness
    inputs: dict[str, tuple[int, ...]]

    @property
    def activations(self) -> int:
        return self.liveness.peak


@dataclass(frozen=True)
class MemoryEstimate:
    """A whole generation of ``seconds``: every stage's weights + the largest stage's activation peak."""

    seconds: float
    stages: dict[str, StageMemory]

    @property
    def weights(self) -> int:
        return sum(stage.weights for stage in self.stages.values())

    @property
    def largest(self) -> StageMemory:
        return max(self.stages.values(), key=lambda stage: stage.activations)

    @property
    def total(self) -> int:
        return self.weights + self.largest.activations

    def describe(self) -> str:
        """``generating 80 s needs about 5.7 GB (weights 3.7 GB + vae_decoder at 80 s 2.0 GB)``."""
        return (f"generating {self.seconds:g} s needs about {format_bytes(self.total)} (weights "
                f"{format_bytes(self.weights)} + {self.largest.name} at {self.seconds:g} s "
                f"{format_bytes(self.largest.activations)})")


def activation_peak(graph: Any, sizes: Mapping[str, int], constants: Sequence[str] | set[str] = ()) -> Liveness:
    """Liveness peak of ``graph`` (an ``onnx.GraphProto``) in node order, values sized by ``sizes`` (bytes).

    Initializers, ``constants`` (weights given as graph inputs) and what is computed from them alone are not
    activations. A graph input is live for the whole run, a graph output from its producer to the end, any
    other value from its producer to its last reader (subgraph reads included); a view (``VIEW_OPS``) shares
    its input's buffer, which lives until the view's last reader too.
    """
    from .onnxruntime.rewrites import subgraph_reads

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
    return _sweep(graph, span, sizes)


def _sweep(graph: Any, span: Mapping[str, list[int]], sizes: Mapping[str, int]) -> Liveness:
    change = [0] * (len(graph.node) + 2)
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

    dims = _dims(value_type)
    if dims is None:
        return None
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(value_type.tensor_type.elem_type)).itemsize
    except (KeyError, TypeError, ValueError):  # undefined or string elements
        return None
    return math.prod(dims) * itemsize


def _dims(value_type: Any) -> list[int] | None:
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
    """Bytes of every value of ``model`` (weightless) whose shape is known with inputs of ``input_shapes``.

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
    sizes = {name: tensor_bytes(value_type) for name, value_type in types.items()}
    return {name: size for name, size in sizes.items() if size is not None}


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
    dims = _dims(types.get(node.input[0])) if node.input else None
    if node.op_type not in ("Shape", "Size") or dims is None:
        return None
    if node.op_type == "Size":
        return np.asarray(math.prod(dims), dtype=np.int64)
    start = next((a.i for a in node.attribute if a.name == "start"), 0)
    end = next((a.i for a in node.attribute if a.name == "end"), len(dims))
    return np.asarray(dims[start:end], dtype=np.int64)


def _custom_type(node: Any, types: Mapping[str, Any]) -> Any:
    """Output type of the contrib ops the engine rewrites make and of DualSparseAttention; None for others.

    MultiHeadAttention: 3-D query (B, S, D) and value (B, L, Dv) give (B, S, Dv); Gelu is elementwise;
    DualSparseAttention's output has its query's shape (docs/design.md §1)."""
    from onnx import helper

    from ..attention.onnx_mha import CONTRIB_DOMAIN

    if node.domain == CONTRIB_DOMAIN and node.op_type == "MultiHeadAttention":
        query, value = _dims(types.get(node.input[0])), _dims(types.get(node.input[2]))
        if query is None or value is None or len(query) != 3 or len(value) != 3:
            return None
        elem = types[node.input[0]].tensor_type.elem_type
        return helper.make_tensor_type_proto(elem, [*query[:2], value[2]])
    if (node.domain, node.op_type) in ((CONTRIB_DOMAIN, "Gelu"), (OP_DOMAIN, OP_TYPE)):
        return types.get(node.input[0])
    return None


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
    outputs = [_dims(inferred.get(name)) for name in node.output if name]
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


def stage_liveness(source: str | os.PathLike | Any, input_shapes: Mapping[str, Sequence[int]]) -> Liveness:
    """Activation peak of one stage as its ONNX Runtime engine graph at ``input_shapes`` (module docstring).

    ``source`` is an ONNX file (read without external data) or an ``onnx.ModelProto``."""
    import onnx

    from .onnxruntime.rewrites import rewrite_for_onnxruntime

    loaded = onnx.load(str(source), load_external_data=False) if isinstance(source, (str, os.PathLike)) else source
    light, weights = weightless(loaded)
    del loaded  # a file's weights go with it
    rewrite_for_onnxruntime(light)  # the builder's rewrites, decided on the same shapes and constants
    return activation_peak(light.graph, value_sizes(light, input_shapes), weights)


def stage_input_shapes(export_dir: Path, manifest: Mapping[str, Any], seconds: float,
                       chunk_frames: int | None = None) -> dict[str, dict[str, tuple[int, ...]]]:
    """Every stage's input shapes in a generation of ``seconds`` (module docstring), from the export manifest.

    ``chunk_frames``: the vocoder's chunk in mel frames (default the runtime's, ``DEFAULT_CHUNK_FRAMES``).
    """
    from ..vocoder_field import DEFAULT_CHUNK_FRAMES, VocoderField
    from .tensorrt.profiles import profile_shapes, text_token_ranges

    geometry = AudioGeometry.from_manifest(manifest["geometry"])
    frames, mel = geometry.latent_frames(seconds), geometry.mel_frames(seconds)
    chunk = DEFAULT_CHUNK_FRAMES if chunk_frames is None else chunk_frames
    tokens = text_token_ranges(export_dir)
    stages = manifest["stages"]
    new_tokens = int((stages.get("language_model", {}).get("metadata") or {}).get(MAX_NEW_TOKENS_KEY, 8))
    shapes = {}
    for name, desc in stages.items():
        batch = 1 if name in DECODE_STAGES else GUIDED_BATCH
        field = VocoderField.from_stage(desc) if name == "vocoder" else None
        vocoder_mel = min(mel, chunk + field.left + field.right) if field is not None and chunk > 0 else mel
        extra = {"text_tokens": tokens[name]} if name in tokens else {}
        ranges = profile_shapes(name, desc["inputs"], (frames,) * 3, batch=(batch,) * 3, lm_tokens=(new_tokens,) * 3,
                                litefocus=manifest.get("litefocus"), layers=desc.get("litefocus_layers", []),
                                vae_scale=geometry.vae_scale, dims={MEL_FRAMES: (vocoder_mel,) * 3}, **extra)
        shapes[name] = {input_name: tuple(shape[2]) for input_name, shape in ranges.items()}
    return shapes


def stage_weights(manifest: Mapping[str, Any], desc: Mapping[str, Any]) -> int:
    """Bytes of a stage's files in the export manifest (the model, and its ``.data`` side file if any)."""
    files = list(desc.get("files") or [desc["file"]])
    side = f"{desc['file']}.data"
    if side in manifest["files"] and side not in files:
        files.append(side)
    return sum(int(manifest["files"][name]["bytes"]) for name in files)


def estimate_generation_memory(export_dir: str | os.PathLike, manifest: Mapping[str, Any], seconds: float, *,
                               chunk_frames: int | None = None) -> MemoryEstimate:
    """Peak memory of one generation of ``seconds`` on ONNX Runtime engines of the export's stages.

    Args:
        export_dir: the export folder.
        manifest: its manifest (or the part of it with the stages a build takes).
        seconds: the audio length (a profile's ``max_s``).
        chunk_frames: the vocoder's chunk in mel frames (default the runtime's; 0: one shot).
    """
    export_dir = Path(export_dir)
    shapes = stage_input_shapes(export_dir, manifest, seconds, chunk_frames)
    stages = {name: StageMemory(name, stage_weights(manifest, desc),
                                stage_liveness(export_dir / desc["file"], shapes[name]), shapes[name])
              for name, desc in manifest["stages"].items()}
    return MemoryEstimate(float(seconds), stages)


def check_generation_memory(export_dir: str | os.PathLike, manifest: Mapping[str, Any],
                            seconds: float) -> MemoryEstimate:
    """Refuse what does not fit: a ``BuildError`` (one line) when a generation of ``seconds`` needs more than
    ``available_memory_bytes()``; else one info line with the estimate and the available memory."""
    start = time.perf_counter()
    try:
        estimate = estimate_generation_memory(export_dir, manifest, seconds)
    except LiteFocusError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnx and numpy raise their own types
        raise BuildError(f"cannot estimate the memory a {seconds:g} s generation needs ({first_line(exc)}); "
                         f"pass {SKIP_OPTION} to build without the check") from exc
    for stage in estimate.stages.values():
        log.debug("memory of %s: weights %s, activations %s at %s (peak at %s, %d values of unknown size)",
                  stage.name, format_bytes(stage.weights), format_bytes(stage.activations), stage.inputs,
                  stage.liveness.node, len(stage.liveness.unknown))
    log.debug("memory estimated in %.1f s", time.perf_counter() - start)
    available = available_memory_bytes()
    if available is None:
        log.warning("cannot tell this machine's available memory; %s (not checked)", estimate.describe())
    elif estimate.total > available:
        raise BuildError(f"{estimate.describe()}, this machine has {format_bytes(available)} available; "
                         f"build shorter profiles or pass {SKIP_OPTION}")
    else:
        log.info("memory: %s; this machine has %s available", estimate.describe(), format_bytes(available))
    return estimate
