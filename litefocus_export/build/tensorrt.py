"""TensorRT engines: one optimisation profile per build, the LiteFocus op as plugin or as its function body.

Steps follow polygraphy's loaders (``backend/trt/loader.py``): :func:`profile_shapes` turns the export
manifest's input descriptions and a duration profile into min/opt/max shapes, :class:`TrtEngineFromOnnx`
parses the ONNX file, builds with ``CreateConfig`` / ``engine_bytes_from_network`` and writes the plan.

``attention_impl`` decides who runs ``ai.litefocus::DualSparseAttention`` nodes:

- ``"plugin"``: the fused Triton kernel as a TensorRT AOT Python plugin (``plugins/tensorrt``). The
  plugin is registered before parsing and the network is created with ``network_creation_flags()``;
  the node's ``plugin_namespace`` attribute makes the parser take the registered plugin.
- ``"native"``: the parser imports the model-local function body (standard ONNX ops). The
  ``plugin_namespace`` attribute is stripped from the parsed copy, so the choice holds even when this
  process registered the plugin earlier (the parser prefers a registered plugin over the function).

tensorrt, polygraphy and onnx are imported inside the steps, never at module import.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from ..errors import BuildError, UsageError, first_line
from ..geometry import VAE_SCALE, downsampled_length, level_width
from ..runtime.tensorrt_runner import ATTENTION_IMPLS, cuda_devices
from ..runtime.tensorrt_runner import require_tensorrt as _require_tensorrt
from ..sampling import num_samples

log = logging.getLogger(__name__)

ShapeRange = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
AttentionImpl = Literal["plugin", "native"]
# AudioLDM2ProjectionModel wraps the CLAP embedding (1 token) and the T5 sequence in SOS/EOS tokens:
# the language model's prompt is text_tokens + 5 long, and grows by one per generated token.
PROJECTION_EXTRA_TOKENS = 5
_SAMPLES = re.compile(r"samples_(\d+)$")


def _plugin_module() -> Any:
    from ..runtime.tensorrt_runner import _plugin_module as plugin_module

    return plugin_module()


def require_tensorrt(attention_impl: str = "native") -> Any:
    """Import tensorrt for building, or raise a one-line ``BuildError``.

    Checks that tensorrt imports, is new enough (``MIN_TENSORRT_VERSION`` of the plugin for
    ``attention_impl="plugin"``, 10.0 otherwise) and that a CUDA GPU is visible.
    """
    return _require_tensorrt(attention_impl, error=BuildError)


def tensorrt_backend_info(attention_impl: str = "native") -> dict[str, Any]:
    """What an engine depends on, for the manifest and the engine cache key (DESIGN.md §4).

    ``{name, version, device, architecture ("sm_90"), attention_impl, min_version}``, plus
    ``plugin_id`` and ``plugin_hash`` with ``attention_impl="plugin"``.
    """
    trt = require_tensorrt(attention_impl)
    name, architecture = cuda_devices()[0]
    info: dict[str, Any] = {"name": "tensorrt", "version": trt.__version__, "device": name,
                            "architecture": architecture, "attention_impl": attention_impl}
    if attention_impl == "plugin":
        plugin = _plugin_module()
        info.update(plugin_id=plugin.PLUGIN_ID, plugin_hash=plugin.plugin_hash(),
                    min_version=".".join(map(str, plugin.MIN_TENSORRT_VERSION)))
    else:
        from ..runtime.tensorrt_runner import MIN_NATIVE_VERSION

        info["min_version"] = ".".join(map(str, MIN_NATIVE_VERSION))
    return info


# --- profiles -------------------------------------------------------------------------------------
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
    ranges = {"batch": batch, "latent_frames": frames, "mel_frames": tuple(t * vae_scale for t in frames),
              "text_tokens": text, "lm_tokens": lm}
    if stage in ("language_model", "projection_model"):
        # here lm_tokens is the language model's prompt, not the generated sequence the UNet sees
        prompt = tuple(t + PROJECTION_EXTRA_TOKENS for t in text)
        ranges["lm_tokens"] = (prompt[0], prompt[1] + (lm[1] - 1) // 2, prompt[2] + lm[2] - 1)
    return ranges


def profile_shapes(stage: str, inputs: Mapping[str, Mapping[str, Any]], frames: Sequence[int], *,
                   batch: int | Sequence[int] = 2, text_tokens: Sequence[int] = (1, 64, 512),
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
            elif (match := _SAMPLES.match(str(dim))) is not None:
                ranges[dim] = _samples_range(int(match.group(1)), frames3, litefocus, layers or [], inputs)
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


# --- network and engine ---------------------------------------------------------------------------
def litefocus_nodes(model: Any) -> list[Any]:
    """The ``ai.litefocus::DualSparseAttention`` nodes of an ONNX model's main graph."""
    plugin = _plugin_module()
    return [n for n in model.graph.node if n.domain == plugin.ONNX_DOMAIN and n.op_type == plugin.PLUGIN_NAME]


def strip_plugin_namespace(model: Any) -> bytes:
    """Serialized copy of ``model`` whose LiteFocus nodes lack ``plugin_namespace``: parsed as the function body."""
    for node in litefocus_nodes(model):
        kept = [a for a in node.attribute if a.name != "plugin_namespace"]
        del node.attribute[:]
        node.attribute.extend(kept)
    return model.SerializeToString()


class NetworkFromOnnx:
    """Loader step: ONNX file -> ``(builder, network, parser)``, with network creation flags polygraphy's
    ``NetworkFromOnnxPath`` cannot pass (``PREFER_AOT_PYTHON_PLUGINS``).

    ``model_bytes``, when given, is parsed instead of the file; ``onnx_path`` still locates external weights.
    """

    def __init__(self, onnx_path: Path, *, network_flags: int = 0, model_bytes: bytes | None = None):
        self.onnx_path, self.network_flags, self.model_bytes = Path(onnx_path), network_flags, model_bytes

    def __call__(self) -> tuple[Any, Any, Any]:
        import tensorrt as trt
        from polygraphy.backend.trt import util as trt_util

        logger = trt_util.get_trt_logger()
        builder = trt.Builder(logger)
        network = builder.create_network(self.network_flags)
        trt.init_libnvinfer_plugins(logger, "")
        parser = trt.OnnxParser(network, logger)
        path = str(self.onnx_path.resolve())
        ok = parser.parse(self.model_bytes, path) if self.model_bytes is not None else parser.parse_from_file(path)
        if not ok:
            raise BuildError(f"TensorRT could not parse {self.onnx_path.name}: {_parser_error(parser)}")
        return builder, network, parser


def _parser_error(parser: Any) -> str:
    if not parser.num_errors:
        return "unknown parser error"
    error = parser.get_error(0)
    node = getattr(error, "node_name", lambda: "")() or error.node()
    operator = getattr(error, "node_operator", lambda: "")()
    where = f" (node {node}{' ' + operator if operator else ''})" if node not in ("", -1) else ""
    return f"{error.desc().splitlines()[0]}{where}"


class TrtEngineFromOnnx:
    """Loader step: ONNX file -> serialized TensorRT engine (plan) written to ``out_path``.

    Args:
        onnx_path: the exported stage.
        out_path: where the plan goes (written to a temp name, then renamed).
        shapes: ``profile_shapes(...)`` of the stage: one optimisation profile.
        precision: ``"fp16"`` lets TensorRT pick fp16 kernels; ``"fp32"`` keeps fp32 (TF32 off).
        timing_cache: tactic timing cache shared by builds: loaded when it exists, updated after the build.
        attention_impl: ``"plugin"`` or ``"native"`` for LiteFocus nodes (module docstring); ignored by a
            stage without them.
        optimization_level: TensorRT builder optimisation level (0-5, TensorRT's default 3).

    The constructor only stores settings; calling builds and returns ``out_path``.
    """

    def __init__(self, onnx_path: Path, out_path: Path, shapes: Mapping[str, ShapeRange], *,
                 precision: Literal["fp32", "fp16"] = "fp32", timing_cache: Path | None = None,
                 attention_impl: AttentionImpl = "native", optimization_level: int = 3):
        self.onnx_path, self.out_path, self.shapes = Path(onnx_path), Path(out_path), shapes
        self.precision, self.timing_cache = precision, timing_cache
        self.attention_impl, self.optimization_level = attention_impl, optimization_level

    def __call__(self) -> Path:
        import onnx

        if self.attention_impl not in ATTENTION_IMPLS:
            raise UsageError(f"attention_impl must be plugin or native, got {self.attention_impl!r}")
        model = onnx.load(str(self.onnx_path), load_external_data=False)
        nodes = litefocus_nodes(model)
        plugin = bool(nodes) and self.attention_impl == "plugin"
        trt = require_tensorrt("plugin" if plugin else "native")
        start = time.perf_counter()
        log.info("building %s with TensorRT %s (%s%s) ...", self.out_path.name, trt.__version__, self.precision,
                 f", LiteFocus as {self.attention_impl}" if nodes else "")
        network = self._network(model, nodes, plugin)
        del model, nodes  # the parser holds what the build needs
        try:
            from polygraphy.backend.trt import engine_bytes_from_network

            config = create_config(self._checked_shapes(network), precision=self.precision,
                                   timing_cache=self.timing_cache, optimization_level=self.optimization_level)
            cache = str(self.timing_cache) if self.timing_cache is not None else None
            if cache is not None:
                Path(cache).parent.mkdir(parents=True, exist_ok=True)
            plan = engine_bytes_from_network(network, config=config, save_timing_cache=cache)
        except (BuildError, UsageError):
            raise
        except Exception as exc:  # noqa: BLE001 - TensorRT and polygraphy raise many types
            raise BuildError(f"TensorRT could not build {self.onnx_path.name}: {first_line(exc)}") from exc
        self._write(plan)
        log.info("built %s in %.1f s", self.out_path.name, time.perf_counter() - start)
        return self.out_path

    def _network(self, model: Any, nodes: list[Any], plugin: bool) -> tuple[Any, Any, Any]:
        if plugin:
            lf_plugin = _plugin_module()
            if not all(_namespace(node) == lf_plugin.PLUGIN_NAMESPACE for node in nodes):
                raise BuildError(f"{self.onnx_path.name}: LiteFocus nodes lack plugin_namespace="
                                 f"{lf_plugin.PLUGIN_NAMESPACE!r}, which TensorRT needs to pick the plugin; re-export")
            lf_plugin.register_plugins()
            return NetworkFromOnnx(self.onnx_path, network_flags=lf_plugin.network_creation_flags())()
        stripped = strip_plugin_namespace(model) if nodes else None
        return NetworkFromOnnx(self.onnx_path, model_bytes=stripped)()

    def _checked_shapes(self, network: tuple[Any, Any, Any]) -> dict[str, ShapeRange]:
        """The profile restricted to the network's inputs; every input must have shapes."""
        names = [network[1].get_input(i).name for i in range(network[1].num_inputs)]
        missing = [n for n in names if n not in self.shapes]
        if missing:
            raise BuildError(f"{self.onnx_path.name}: no profile shapes for input {missing[0]} (have: "
                             f"{', '.join(self.shapes) or 'none'})")
        return {n: self.shapes[n] for n in names}

    def _write(self, plan: Any) -> None:
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out_path.with_name(f".{self.out_path.name}.partial-{os.getpid()}")
        try:
            with open(tmp, "wb") as handle:
                handle.write(memoryview(plan))
            os.replace(tmp, self.out_path)
        finally:
            tmp.unlink(missing_ok=True)


def _namespace(node: Any) -> str | None:
    for attribute in node.attribute:
        if attribute.name == "plugin_namespace":
            return attribute.s.decode()
    return None

