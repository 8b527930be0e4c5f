"""Peak memory of one whole generation on the engines a build makes, computed from the export's ONNX graphs.

``build`` refuses a profile whose longest generation would not fit in this machine's available memory
(:func:`check_generation_memory`, unless ``--skip-memory-check``). The estimate is computed, not fitted:

- **weights**: the bytes of every stage's files (an ``EngineFolder`` keeps every stage open);
- **activations** of a stage: its graph is loaded without weights, rewritten as the ONNX Runtime builder rewrites
  it (``onnxruntime/rewrites.py``) and optimised by ONNX Runtime as the builder saves it (:func:`engine_graph`),
  so the walk sees the engine's own graph: attention as contrib ``MultiHeadAttention``, whose CPU kernel never
  holds the (S x S) scores the export's VAE attention would (a 600 s clip's: 230 GB), and ORT's fusions
  (``x * sigmoid(x)`` as one QuickGelu, a Conv and its activation as one FusedConv), which remove intermediates.
  Its dynamic inputs are set to the profile's longest duration as ``generate`` runs it: batch 2 for the text
  stages and the UNet (classifier-free guidance), batch 1 for the VAE decoder and the vocoder, the vocoder at its
  chunk length (``runtime/decode.py``), text tokens at the maxima TensorRT's profiles use
  (``tensorrt/shape_profiles.py``). ONNX shape inference, node by node with the shape arithmetic evaluated
  (``graphs.liveness.value_types``), sizes every value. In graph order a value lives from the node that makes it
  to its last reader; graph inputs for the whole run (the caller holds its feeds), graph outputs to the end; views
  (Reshape, Squeeze, Unsqueeze, Flatten, Identity) share their input's buffer; values computed from weights alone
  count as weights (ONNX Runtime folds them). While a convolution runs, its MLAS working buffer is live too
  (:func:`conv_working_bytes`: with the UNet's batch of 2, one whole im2col matrix per thread, 1.7 GB at 160 s).
  The stage's peak is the most bytes live at once;
- **whole generation**: all weights + the largest stage peak. Stages run one after another and ``OrtStage``
  keeps no CPU arena and returns large buffers to the OS as it frees them (``core/heap.py``), so a stage's
  activations are given back node by node and before the next stage runs.

This is the liveness of the engine's graph, not ONNX Runtime's allocation planner, and not a bound either way.
Left out, so ORT can need more: other kernel scratch (the attention kernel's blocks, its transposed copies of
Q, K and V), the VAE decoder's NCHWc layout (it alone loads with it, ``runner.LOAD_LEVELS``: 56 MB more at
160 s), allocator rounding, the runtime's arrays between stages (latents, mel, waveform: megabytes) and the
process itself (Python, libraries: a few hundred MB). Weights count whole from the start; ORT holds part of
them only once the first run reads them (the UNet: 0.93 GB resident after loading its 1.4 GB file).
Measured against whole generations on random:audioldm2 (README "Long audio"; MB of 2**20 bytes): 5051 MB
estimated and 4982 MB peak resident at 80 s, 6302 and 6477 MB at 160 s, 8804 and 9485 MB at 320 s.
Batches of several requests (``serve --max-batch``) multiply activations by up to the batch size; that is not
checked. The estimate models ONNX Runtime CPU engines, and ``build`` checks those only (GPU engines hold
activations in GPU memory). Sizes are in GB of 2**30 bytes. It takes ~10 s for every stage of random:audioldm2,
whose UNet file (1.4 GB, weights inline) is held twice while it is parsed.
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

from ...core.contract import DECODE_STAGES, MAX_NEW_TOKENS_KEY, MEL_FRAMES
from ...core.errors import BuildError, LiteFocusError, first_line
from ...core.geometry import AudioGeometry
from ...graphs.liveness import Liveness, activation_peak, known_sizes, tensor_dims, value_types, weightless

log = logging.getLogger(__name__)
GB, MB = 2**30, 2**20
SKIP_OPTION = "--skip-memory-check"
GUIDED_BATCH = 2  # [negative, prompt] rows: the text stages and the UNet under classifier-free guidance
FLOAT_BYTES = 4


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


def stage_liveness(source: str | os.PathLike | Any, input_shapes: Mapping[str, Sequence[int]],
                   threads: int | None = None) -> Liveness:
    """Activation peak of one stage as its ONNX Runtime engine runs it at ``input_shapes`` (module docstring).

    ``source`` is an ONNX file (read without external data) or an ``onnx.ModelProto``; ``threads``: the
    intra-op threads of the run (default: this machine's CPUs), which size the convolutions' working buffers."""
    import onnx

    from .rewrites import rewrite_for_onnxruntime

    loaded = onnx.load(str(source), load_external_data=False) if isinstance(source, (str, os.PathLike)) else source
    light, weights = weightless(loaded)
    del loaded  # a file's weights go with it
    rewrite_for_onnxruntime(light)  # the builder's rewrites, decided on the same shapes and constants
    return engine_liveness(engine_graph(light), input_shapes, weights, threads)


def engine_liveness(engine: Any, input_shapes: Mapping[str, Sequence[int]], weights: set[str],
                    threads: int | None = None) -> Liveness:
    """Activation peak of an engine's graph (weightless, ``weights`` its weight inputs) at ``input_shapes``: the
    live values plus each convolution's working buffer while it runs (:func:`conv_working_bytes`)."""
    types = value_types(engine, input_shapes)
    threads = threads or os.cpu_count() or 1
    scratch = {index: conv_working_bytes(node, types, threads) for index, node in enumerate(engine.graph.node)
               if node.op_type in CONV_OPS}
    return activation_peak(engine.graph, known_sizes(types), weights, scratch)


def engine_graph(light: Any) -> Any:
    """``light`` (weightless, rewritten) as ONNX Runtime optimises it when the builder saves an engine
    (``builder.SAVED_LEVEL``): its fusions (``x * sigmoid(x)`` -> QuickGelu, Conv + activation -> FusedConv)
    remove intermediates the export's graph holds (VAE decoder at 320 s: 5.0 GB live instead of 8.0 GB)."""
    import tempfile

    import onnx
    import onnxruntime as ort

    from .builder import SAVED_LEVEL
    from .runner import session_options

    with tempfile.TemporaryDirectory(prefix="litefocus-memory-") as work:
        path = Path(work) / "engine.onnx"
        ort.InferenceSession(light.SerializeToString(), session_options(optimization_level=SAVED_LEVEL,
                                                                       optimized_path=path),
                             providers=["CPUExecutionProvider"])
        return onnx.load(str(path))


CONV_OPS = frozenset({"Conv", "FusedConv"})
MLAS_SEGMENT_FLOATS = 128 * 128  # MLAS_SGEMM_STRIDEN x MLAS_SGEMM_STRIDEK: a thread's slice of a segmented conv


def conv_working_bytes(node: Any, types: Mapping[str, Any], threads: int) -> int:
    """Bytes of the working buffer ONNX Runtime's CPU convolution (MLAS ``MlasConvPrepare``) holds while ``node``
    runs: none for a pointwise conv; the whole im2col matrix (output positions x K) when the filters outnumber
    the positions; with several images or groups, one whole matrix per thread, up to one per image and group (a
    160 s UNet step, batch 2: 1.7 GB at the first level's widest conv); else a small slice per thread."""
    x, w, y = (tensor_dims(types.get(name)) if name else None for name in (*node.input[:2], node.output[0]))
    if x is None or w is None or y is None or len(x) < 3:
        return 0
    attrs = {attr.name: attr for attr in node.attribute}
    group = attrs["group"].i if "group" in attrs else 1
    kernel = math.prod(w[2:])
    positions, k, filters = math.prod(y[2:]), x[1] // group * kernel, w[0] // group
    pads = list(attrs["pads"].ints) if "pads" in attrs else []
    strides = list(attrs["strides"].ints) if "strides" in attrs else []
    if kernel == 1 and not any(pads) and all(s == 1 for s in strides):
        return 0
    if filters > positions:
        return positions * k * FLOAT_BYTES
    parallel = x[0] * group
    if parallel > 1:
        return min(threads, parallel) * max(positions * k, filters * positions, MLAS_SEGMENT_FLOATS) * FLOAT_BYTES
    return threads * MLAS_SEGMENT_FLOATS * FLOAT_BYTES


def stage_input_shapes(export_dir: Path, manifest: Mapping[str, Any], seconds: float,
                       chunk_frames: int | None = None) -> dict[str, dict[str, tuple[int, ...]]]:
    """Every stage's input shapes in a generation of ``seconds`` (module docstring), from the export manifest.

    ``chunk_frames``: the vocoder's chunk in mel frames (default the runtime's, ``DEFAULT_CHUNK_FRAMES``).
    """
    from ...core.vocoder_field import DEFAULT_CHUNK_FRAMES, VocoderField
    from ..tensorrt.shape_profiles import profile_shapes, text_token_ranges

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
