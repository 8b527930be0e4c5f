"""What export, backends, runtime and report agree on: docs/design.md §2 in code (torch-free).

One place for the op's ONNX identity, the stages of each pipeline kind, the UNet's input and output names,
the dimension names of dynamic axes, ONNX metadata keys, and one builder of example UNet inputs (numpy;
the export converts them to torch). Every other module imports these names instead of spelling them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral
from typing import Any

import numpy as np

from .errors import UsageError
from .geometry import downsampled_length
from .seeds import draw_sample_index

# --- the op (docs/design.md §1, §2) ----------------------------------------------------------------------
OP_DOMAIN = "ai.litefocus"
OP_TYPE = "DualSparseAttention"  # never "Attention": TensorRT's parser would take it as its built-in op
OP_DOMAIN_VERSION = 1
CONTRIB_DOMAIN = "com.microsoft"  # ONNX Runtime's contrib ops: the engines' MultiHeadAttention, ORT's fusions
PLUGIN_NAMESPACE = "litefocus"  # the node attribute TensorRT's plugin lookup reads
OP_ATTRIBUTES = ("freq_bins", "scale", "same_frequency", "cross_frequency")
MIN_OPSET = 18  # the function body's ops

DEFAULT_SPARSE_RATIO = 0.1
DEFAULT_LEVELS = (8,)  # the reference's highest-resolution attention level (F = 8)


def check_sparse_ratio(sparse_ratio: Any) -> float:
    """The fraction of tokens sampled, a finite number in [0, 1]; else a one-line UsageError."""
    try:
        value = float(sparse_ratio)
    except (TypeError, ValueError):
        raise UsageError(f"sparse_ratio must be a number in [0, 1], got {sparse_ratio!r}") from None
    if isinstance(sparse_ratio, bool) or not 0.0 <= value <= 1.0:  # NaN fails the comparison too
        raise UsageError(f"sparse_ratio must be in [0, 1], got {sparse_ratio!r}")
    return value


def check_levels(levels: Any) -> tuple[int, ...]:
    """Patched levels as positive latent widths (frequency bins), at least one; else a one-line UsageError."""
    try:
        widths = tuple(levels)
        valid = bool(widths) and all(isinstance(w, Integral) and not isinstance(w, bool) and w > 0 for w in widths)
    except TypeError:
        valid = False
    if not valid:
        raise UsageError(f"levels must be positive latent widths (frequency bins), got {levels!r}")
    return tuple(int(w) for w in widths)


# --- stages per pipeline kind, in pipeline order -----------------------------------------------------
PIPELINE_KINDS = ("audioldm2", "audioldm", "musicldm")
UNET = "unet"
TEXT_STAGES: dict[str, tuple[str, ...]] = {
    "audioldm2": ("text_encoder", "text_encoder_2", "projection_model", "language_model"),
    "audioldm": ("text_encoder",),
    "musicldm": ("text_encoder",),
}
DECODE_STAGES: tuple[str, ...] = ("vae_decoder", "vocoder")
# AudioLDM and MusicLDM call their UNet with the CLAP embedding as class labels and no text context
CONTEXT_FREE_KINDS = ("audioldm", "musicldm")


def check_kind(kind: str) -> str:
    """``kind`` if it is a pipeline kind, else a one-line UsageError naming the valid ones."""
    if kind not in PIPELINE_KINDS:
        raise UsageError(f"unknown pipeline kind {kind!r}; valid: {', '.join(PIPELINE_KINDS)}")
    return kind


def pipeline_stages(kind: str) -> tuple[str, ...]:
    """Every exportable stage of a pipeline kind, UNet first."""
    return (UNET, *TEXT_STAGES[check_kind(kind)], *DECODE_STAGES)


def select_stages(kind: str, requested: Iterable[str] | None, *, choices: Sequence[str] | None = None) -> list[str]:
    """The ``requested`` stages of a pipeline kind in pipeline order (None: every one of ``choices``).

    ``choices`` defaults to ``pipeline_stages(kind)``. Raises UsageError naming any stage not among them.
    """
    valid = list(choices if choices is not None else pipeline_stages(kind))
    if requested is None:
        return valid
    wanted = list(requested)
    unknown = [s for s in wanted if s not in valid]
    if unknown:
        raise UsageError(f"unknown stage(s) {', '.join(map(repr, unknown))} for {kind}; valid stages: "
                         f"{', '.join(valid)}")
    return [s for s in valid if s in wanted]


ALL_STAGES: tuple[str, ...] = tuple(dict.fromkeys(s for kind in PIPELINE_KINDS for s in pipeline_stages(kind)))

# --- UNet graph inputs and outputs --------------------------------------------------------------------
UNET_OUTPUT = "noise_pred"
INDEX_INPUT_PREFIX = "litefocus_index_"
_SAMPLES_DIM_PREFIX = "samples_"
# dimension names of dynamic axes, shared by the exporters, TensorRT profiles and example inputs
BATCH = "batch"
LATENT_FRAMES = "latent_frames"
MEL_FRAMES = "mel_frames"
TEXT_TOKENS = "text_tokens"
LM_TOKENS = "lm_tokens"  # AudioLDM2: the language model's states (generated ones in the UNet's context)
AUDIO_SAMPLES = "samples"  # the vocoder's waveform
# ONNX metadata of language_model.onnx (and its manifest entry): ``language_model.config.max_new_tokens``
MAX_NEW_TOKENS_KEY = "litefocus.max_new_tokens"
# ONNX metadata of vocoder.onnx (and its manifest entry): the receptive field, vocoder_field.VocoderField.to_json()
VOCODER_FIELD_KEY = "litefocus.vocoder_field"
# scheduler_config.json: the keys diffusers filled with the scheduler class's defaults (it drops the list when
# saving; the export writes it back, the runtime re-defaults them on conversion as diffusers' from_config does)
USE_DEFAULT_VALUES = "_use_default_values"
# token counts of example inputs: AudioLDM2's language model generates 8 states; a typical T5 prompt length
EXAMPLE_TOKENS = {LM_TOKENS: 8, TEXT_TOKENS: 64}
EXAMPLE_TIMESTEP = 500.0


def index_input_name(width: int) -> str:
    """``litefocus_index_<width>``: the samples of every patched layer ``width`` frequency bins wide, int64
    ``(L, batch, M)``: ``[l, b]`` is the sample of that level's ``l``-th patched layer for batch row ``b``."""
    return f"{INDEX_INPUT_PREFIX}{width}"


def samples_dim(width: int) -> str:
    """Name of the samples axis (M) of ``index_input_name(width)``."""
    return f"{_SAMPLES_DIM_PREFIX}{width}"


def samples_dim_width(dim: str) -> int | None:
    """The width in a ``samples_<width>`` dimension name; None for any other name."""
    rest = str(dim).removeprefix(_SAMPLES_DIM_PREFIX)
    return int(rest) if rest != str(dim) and rest.isdigit() else None


def _input(dtype: str, shape: Sequence[int | str]) -> dict[str, Any]:
    """A graph input description as manifests record it: dtype, shape (ints or dim names), dynamic axes."""
    return {"dtype": dtype, "dynamic_axes": {axis: d for axis, d in enumerate(shape) if isinstance(d, str)},
            "shape": list(shape)}


def _config(config: Any, key: str) -> Any:
    return config[key] if isinstance(config, Mapping) else getattr(config, key)


def unet_inputs(kind: str, unet_config: Any, latent_bins: int,
                layers: Sequence[Mapping[str, Any]] = ()) -> dict[str, dict[str, Any]]:
    """The UNet graph's inputs, in order, described as the export manifest records them.

    Args:
        kind: the pipeline kind.
        unet_config: the UNet's config (a mapping or a config object).
        latent_bins: ``F_lat`` (``AudioGeometry.latent_freq_bins``).
        layers: the patched layers, ``{"level", "width"}`` each, in execution order (none: full attention).
    """
    inputs = {"sample": _input("float32", [BATCH, int(_config(unet_config, "in_channels")), LATENT_FRAMES,
                                           int(latent_bins)]),
              "timestep": _input("float32", [BATCH])}
    if check_kind(kind) == "audioldm2":
        lm_dim, t5_dim = [d for d in _config(unet_config, "cross_attention_dim")[0] if d is not None]
        inputs["encoder_hidden_states"] = _input("float32", [BATCH, LM_TOKENS, int(lm_dim)])
        inputs["encoder_hidden_states_1"] = _input("float32", [BATCH, TEXT_TOKENS, int(t5_dim)])
        inputs["encoder_attention_mask_1"] = _input("int64", [BATCH, TEXT_TOKENS])
    else:
        dim = int(_config(unet_config, "projection_class_embeddings_input_dim"))
        inputs["class_labels"] = _input("float32", [BATCH, dim])
    for width, count in _layers_per_width(layers).items():
        inputs[index_input_name(width)] = _input("int64", [count, BATCH, samples_dim(width)])
    return inputs


def _layers_per_width(layers: Iterable[Mapping[str, Any]]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for layer in layers:
        counts[int(layer["width"])] = counts.get(int(layer["width"]), 0) + 1
    return counts


def draw_request_samples(rng: np.random.Generator, layers: Sequence[Mapping[str, Any]], frames: int,
                         sparse_ratio: float, *, minimum: int = 0) -> dict[str, np.ndarray]:
    """One request's samples for one UNet evaluation: ``litefocus_index_<width>`` -> int64 ``(L, M)``.

    Drawn from the request's own generator layer by layer in execution order, exactly as the PyTorch path
    draws them at call time. ``minimum``: at least this many samples per layer (tracing needs 2: size-0/1
    dims get specialised).
    """
    rows: dict[int, list[np.ndarray]] = {}
    for layer in layers:
        tokens = downsampled_length(frames, int(layer["level"])) * int(layer["width"])
        rows.setdefault(int(layer["width"]), []).append(draw_sample_index(rng, tokens, sparse_ratio, minimum=minimum))
    return {index_input_name(width): np.stack(r) for width, r in rows.items()}


def place_samples(requests: Sequence[Mapping[str, np.ndarray]], rows: Sequence[int]) -> dict[str, np.ndarray]:
    """The UNet's index inputs ``(L, batch, M)`` from each request's ``(L, M)`` draw (``draw_request_samples``).

    ``rows[b]`` is the request of batch row ``b``. With classifier-free guidance the batch is ``[uncond rows of
    all requests..., cond rows of all requests...]``, so for ``n`` requests ``rows = [0, ..., n-1] * 2``: both
    rows of a request share its one draw (diffusers semantics); without guidance ``rows = range(n)``.
    """
    rows = [int(r) for r in rows]
    if not rows or min(rows) < 0 or max(rows) >= len(requests):
        raise UsageError(f"batch rows {rows} must name requests 0..{len(requests) - 1}")
    return {name: np.ascontiguousarray(np.stack([requests[r][name] for r in rows], axis=1))
            for name in requests[0]}


def draw_unet_samples(rngs: np.random.Generator | Sequence[np.random.Generator], layers: Sequence[Mapping[str, Any]],
                      frames: int, sparse_ratio: float, rows: Sequence[int] | None = None, *,
                      minimum: int = 0) -> dict[str, np.ndarray]:
    """One UNet evaluation's index inputs for a batch of requests: ``litefocus_index_<width>`` -> int64
    ``(L, batch, M)``.

    Args:
        rngs: each request's samples generator (one generator: one request). Request ``i`` draws its
            samples from ``rngs[i]`` (``draw_request_samples``), requests in order, so a generator listed
            twice gives its requests consecutive, different draws.
        layers, frames, sparse_ratio, minimum: as for ``draw_request_samples``.
        rows: the request of each batch row (``place_samples``); default one row per request.
    """
    rngs = [rngs] if isinstance(rngs, np.random.Generator) else list(rngs)
    draws = [draw_request_samples(rng, layers, frames, sparse_ratio, minimum=minimum) for rng in rngs]
    return place_samples(draws, range(len(rngs)) if rows is None else rows) if layers else {}


def example_unet_feeds(inputs: Mapping[str, Mapping[str, Any]], frames: int, seed: int, *,
                       layers: Sequence[Mapping[str, Any]] = (), sparse_ratio: float = 0.0, min_samples: int = 0,
                       batch: int = 2, timestep: float = EXAMPLE_TIMESTEP,
                       tokens: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
    """Seeded UNet inputs shaped from their descriptions (``unet_inputs`` or a manifest's ``inputs``).

    The same arrays for every backend and tool (export tracing and checks, benchmarks, the report): floats
    standard normal, masks all ones, ``timestep`` constant. Index inputs are drawn after the others from the
    same generator when ``layers`` are given, a different sample per batch row (rows in order, each row's
    layers in execution order), and left out otherwise (the PyTorch path draws its own).
    """
    rng = np.random.default_rng(seed)
    sizes = {BATCH: batch, LATENT_FRAMES: frames, **EXAMPLE_TOKENS, **(tokens or {})}
    plain = {name: desc for name, desc in inputs.items() if not name.startswith(INDEX_INPUT_PREFIX)}
    feeds = example_feeds(plain, sizes, rng)
    feeds["timestep"] = np.full(batch, timestep, inputs["timestep"]["dtype"])
    if layers:
        feeds.update(draw_unet_samples([rng] * batch, layers, frames, sparse_ratio, minimum=min_samples))
    return feeds


def example_feeds(inputs: Mapping[str, Mapping[str, Any]], sizes: Mapping[str, int],
                  rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Seeded inputs of any stage shaped from their descriptions (a manifest's ``inputs``), named dimensions taken
    from ``sizes``: floats standard normal, integers (ids, masks, positions) all ones, which every stage accepts."""
    feeds = {}
    for name, desc in inputs.items():
        shape = [sizes[d] if isinstance(d, str) else int(d) for d in desc["shape"]]
        feeds[name] = (rng.standard_normal(shape, dtype=np.float32) if desc["dtype"] == "float32"
                       else np.ones(shape, desc["dtype"]))
    return feeds


def unet_call_arguments(feeds: Mapping[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """``(sample, timestep, keyword arguments)`` for the diffusers UNet from graph-named inputs.

    Index inputs are left out (the patched layers take their samples from their sample source). With
    ``class_labels`` (AudioLDM, MusicLDM) the UNet gets ``encoder_hidden_states=None``, as their pipelines
    call it: no text context, so every ``attn2`` is self-attention.
    """
    kwargs = {k: v for k, v in feeds.items() if not k.startswith(INDEX_INPUT_PREFIX)}
    sample, timestep = kwargs.pop("sample"), kwargs.pop("timestep")
    if "class_labels" in kwargs:
        kwargs["encoder_hidden_states"] = None
    return sample, timestep, kwargs
