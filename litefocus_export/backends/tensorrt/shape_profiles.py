"""TensorRT optimisation profiles: min/opt/max shapes of every stage input for one duration profile.

Pure functions of the export manifest's input descriptions (and the saved tokenizers' limits), plus
polygraphy's ``Profile`` / ``CreateConfig``, which construct without tensorrt: testable on any machine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...core.contract import BATCH, LATENT_FRAMES, LM_TOKENS, MEL_FRAMES, TEXT_TOKENS, samples_dim_width
from ...core.errors import BuildError, UsageError
from ...core.geometry import VAE_SCALE, downsampled_length, level_width
from ...core.seeds import num_samples

ShapeRange = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
# AudioLDM2ProjectionModel wraps the CLAP embedding (1 token) and the T5 sequence in SOS/EOS tokens:
# the language model's prompt is text_tokens + 5 long, and grows by one per generated token.
PROJECTION_EXTRA_TOKENS = 5


# Batch rows a TensorRT profile takes by default: (1, 2, 2), one guided request ([negative, prompt]); the builder
# records it as each stage's ``max_batch`` so the sampler never sends more rows (``Sampler.max_requests``).
PROFILE_BATCH = 2


def _triple(value: int | Sequence[int], what: str, minimum: int = 1) -> tuple[int, int, int]:
    values = tuple(int(v) for v in value) if isinstance(value, Sequence) else (1, int(value), int(value))
    if len(values) != 3 or not minimum <= values[0] <= values[1] <= values[2]:
        raise BuildError(f"{what} must be (min, opt, max) with {minimum} <= min <= opt <= max, got {value!r}")
    return values  # type: ignore[return-value]


def _level_of_width(width: int, layers: Sequence[Mapping[str, Any]], inputs: Mapping[str, Mapping[str, Any]]) -> int:
    """UNet resolution level of the patched layers ``width`` bins wide (from the layers, else the latent width)."""
    levels = {int(layer["level"]) for layer in layers if int(layer["width"]) == width}
    if len(levels) == 1:
        return levels.pop()
    shape = inputs.get("sample", {}).get("shape") or []
    bins = shape[3] if len(shape) == 4 else None
    if not levels and isinstance(bins, int):
        for level in range(8):
            if level_width(bins, level) == width:
                return level
    raise BuildError(f"cannot tell which UNet level is {width} bins wide (latent width {bins}); pass the export's "
                     f"litefocus_layers as layers=")


def _samples_range(width: int, frames: tuple[int, int, int], litefocus: Mapping[str, Any] | None,
                   layers: Sequence[Mapping[str, Any]], inputs: Mapping[str, Mapping[str, Any]]) -> tuple[int, ...]:
    # M = floor(sparse_ratio * N) with N = (latent frames at the level) * width: as the runtime draws them
    if not litefocus or "sparse_ratio" not in litefocus:
        raise BuildError(f"input samples_{width} needs the LiteFocus settings (litefocus= the export manifest's "
                         f"'litefocus' entry with sparse_ratio)")
    level = _level_of_width(width, layers, inputs)
    ratio = float(litefocus["sparse_ratio"])
    return tuple(num_samples(downsampled_length(t, level) * width, ratio) for t in frames)


def _dim_ranges(stage: str, frames: tuple[int, int, int], batch: tuple[int, int, int],
                text: tuple[int, int, int], lm: tuple[int, int, int], vae_scale: int) -> dict[str, tuple[int, ...]]:
    """Ranges of the dimension names the exporters use (export/unet.py, export/stage_modules.py)."""
    ranges = {BATCH: batch, LATENT_FRAMES: frames, MEL_FRAMES: tuple(t * vae_scale for t in frames),
              TEXT_TOKENS: text, LM_TOKENS: lm}
    if stage in ("language_model", "projection_model"):
        # here lm_tokens is the language model's prompt, not the generated sequence the UNet sees
        prompt = tuple(t + PROJECTION_EXTRA_TOKENS for t in text)
        ranges[LM_TOKENS] = (prompt[0], prompt[1] + (lm[1] - 1) // 2, prompt[2] + lm[2] - 1)
    return ranges


def profile_shapes(stage: str, inputs: Mapping[str, Mapping[str, Any]], frames: Sequence[int], *,
                   batch: int | Sequence[int] = PROFILE_BATCH, text_tokens: Sequence[int] = (1, 64, 512),
                   lm_tokens: Sequence[int] = (8, 8, 8), litefocus: Mapping[str, Any] | None = None,
                   layers: Sequence[Mapping[str, Any]] | None = None, vae_scale: int = VAE_SCALE,
                   dims: Mapping[str, Sequence[int]] | None = None) -> dict[str, ShapeRange]:
    """Min/opt/max shapes of every input of one stage for a TensorRT optimisation profile (pure).

    Args:
        stage: the stage name (``unet``, ``vae_decoder``, ...): ``lm_tokens`` means the language model's
            growing prompt in ``language_model`` / ``projection_model`` and the generated tokens elsewhere.
        inputs: the export manifest's input descriptions, ``{name: {"dtype", "dynamic_axes", "shape"}}``;
            ``shape`` lists ints for static dims and dimension names for dynamic ones.
        frames: (min, opt, max) latent frames (``DurationProfile.latent_frames()``).
        batch: an int ``b`` means (1, b, b): tuned for classifier-free guidance (2), also serving batch 1
            (decoding one waveform, no guidance); a triple gives the range itself.
        text_tokens: (min, opt, max) text-encoder tokens (CLAP pads to its tokenizer's max length, <= 512).
        lm_tokens: (min, opt, max) tokens the language model generates (AudioLDM2: 8).
        litefocus: the manifest's ``litefocus`` settings; ``sparse_ratio`` sizes ``samples_<width>`` dims.
        layers: the UNet's ``litefocus_layers`` (``{"level", "width"}``) giving each width's UNet level;
            without them the level is the one where the latent width (``sample`` axis 3) halves to ``width``.
        vae_scale: mel frames per latent frame (``mel_frames`` dims).
        dims: ranges for further dimension names, or overrides of the ones above.

    Returns:
        ``{input name: (min shape, opt shape, max shape)}``.

    Raises:
        BuildError: a bad range, an input without ``shape``, a dimension name with no known range.
    """
    frames3 = _triple(tuple(frames), "frames")
    ranges: dict[str, tuple[int, ...]] = dict(_dim_ranges(
        stage, frames3, _triple(batch, "batch"), _triple(tuple(text_tokens), "text_tokens"),
        _triple(tuple(lm_tokens), "lm_tokens"), int(vae_scale)))
    ranges.update({name: _triple(tuple(value), name, 0) for name, value in (dims or {}).items()})
    shapes: dict[str, ShapeRange] = {}
    for name, desc in inputs.items():
        shape = desc.get("shape")
        if shape is None:
            raise BuildError(f"{stage}: input {name} has no 'shape' in the export manifest; re-export it")
        per_axis = []
        for axis, dim in enumerate(shape):
            if isinstance(dim, int):
                per_axis.append((dim, dim, dim))
            elif dim in ranges:
                per_axis.append(ranges[dim])
            elif (width := samples_dim_width(dim)) is not None:
                ranges[dim] = _samples_range(width, frames3, litefocus, layers or [], inputs)
                per_axis.append(ranges[dim])
            else:
                raise BuildError(f"{stage}: no profile range for dimension {dim!r} (axis {axis} of {name}); "
                                 f"known: {', '.join(sorted(ranges))}")
        shapes[name] = tuple(tuple(r[i] for r in per_axis) for i in range(3))  # type: ignore[assignment]
    return shapes


def text_token_ranges(export_dir: Path, opt: int = 64) -> dict[str, tuple[int, int, int]]:
    """``text_tokens`` ranges per stage from the export's saved tokenizers (their ``model_max_length``).

    A profile longer than a text model's position table fails the TensorRT build, so the maximum is the
    tokenizer's: ``tokenizer`` (CLAP, padded to its maximum, so opt = max) for ``text_encoder``;
    ``tokenizer_2`` (AudioLDM2's T5, padded to the prompt) for every stage that sees T5 tokens. Stages
    missing from the result keep ``profile_shapes``' default.
    """
    import json

    def limit(folder: str) -> int | None:
        path = Path(export_dir) / folder / "tokenizer_config.json"
        if not path.is_file():
            return None
        value = json.loads(path.read_text()).get("model_max_length")
        return min(int(value), 512) if isinstance(value, (int, float)) and value >= 1 else None

    ranges: dict[str, tuple[int, int, int]] = {}
    if (clap := limit("tokenizer")) is not None:
        ranges["text_encoder"] = (1, clap, clap)
    if (t5 := limit("tokenizer_2")) is not None:
        for stage in ("text_encoder_2", "projection_model", "language_model", "unet"):
            ranges[stage] = (1, min(opt, t5), t5)
    return ranges


def trt_profile(shapes: Mapping[str, ShapeRange]) -> Any:
    """polygraphy ``Profile`` with the min/opt/max of every input (constructs without tensorrt)."""
    from polygraphy.backend.trt import Profile

    profile = Profile()
    for name, (low, opt, high) in shapes.items():
        profile.add(name, min=low, opt=opt, max=high)
    return profile


def create_config(shapes: Mapping[str, ShapeRange], *, precision: str = "fp32", timing_cache: Path | None = None,
                  optimization_level: int = 3) -> Any:
    """polygraphy ``CreateConfig`` for one profile (TF32 stays off: fp32 engines match ONNX Runtime closely)."""
    from polygraphy.backend.trt import CreateConfig

    if precision not in ("fp32", "fp16"):
        raise UsageError(f"precision must be fp32 or fp16, got {precision!r}")
    cache = str(timing_cache) if timing_cache is not None and Path(timing_cache).is_file() else None
    return CreateConfig(fp16=precision == "fp16", profiles=[trt_profile(shapes)], load_timing_cache=cache,
                        builder_optimization_level=int(optimization_level))
