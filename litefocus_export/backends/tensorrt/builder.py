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
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from ...artifacts.cache import cache_root
from ...core.contract import OP_DOMAIN, OP_TYPE, PLUGIN_NAMESPACE
from ...core.errors import BuildError, UsageError, first_line
from .shape_profiles import PROFILE_BATCH, ShapeRange, create_config, profile_shapes, text_token_ranges
from .support import ATTENTION_IMPLS, MIN_NATIVE_VERSION, cuda_devices, plugin_module, require_tensorrt

log = logging.getLogger(__name__)

AttentionImpl = Literal["plugin", "native"]


def tensorrt_backend_info(attention_impl: str = "native") -> dict[str, Any]:
    """What an engine depends on, for the manifest and the engine cache key (docs/design.md §4).

    ``{name, version, device, architecture ("sm_90"), attention_impl, min_version}``, plus
    ``plugin_id`` and ``plugin_hash`` with ``attention_impl="plugin"``.
    """
    trt = require_tensorrt(attention_impl, error=BuildError)
    name, architecture = cuda_devices()[0]
    info: dict[str, Any] = {"name": "tensorrt", "version": trt.__version__, "device": name,
                            "architecture": architecture, "attention_impl": attention_impl}
    if attention_impl == "plugin":
        plugin = plugin_module()
        info.update(plugin_id=plugin.PLUGIN_ID, plugin_hash=plugin.plugin_hash(),
                    min_version=".".join(map(str, plugin.MIN_TENSORRT_VERSION)))
    else:
        info["min_version"] = ".".join(map(str, MIN_NATIVE_VERSION))
    return info


def litefocus_nodes(model: Any) -> list[Any]:
    """The ``ai.litefocus::DualSparseAttention`` nodes of an ONNX model's main graph."""
    return [n for n in model.graph.node if n.domain == OP_DOMAIN and n.op_type == OP_TYPE]


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
        trt = require_tensorrt("plugin" if plugin else "native", error=BuildError)
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
            lf_plugin = plugin_module()
            if not all(_namespace(node) == PLUGIN_NAMESPACE for node in nodes):
                raise BuildError(f"{self.onnx_path.name}: LiteFocus nodes lack plugin_namespace="
                                 f"{PLUGIN_NAMESPACE!r}, which TensorRT needs to pick the plugin; re-export")
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


class TensorRTBackend:
    """The ``build`` step for TensorRT: every stage as an engine with one optimisation profile."""

    def __init__(self, profile_frames: tuple[int, int, int], attention_impl: AttentionImpl = "native"):
        require_tensorrt(error=BuildError)
        self.frames, self.attention_impl = profile_frames, attention_impl
        # TensorRT version, GPU architecture and plugin hash: probed once per build (they query the driver)
        self.info = tensorrt_backend_info(attention_impl)

    def build(self, export_dir: Path, export_manifest: dict[str, Any], out: Path) -> dict[str, Any]:
        """Build every stage of the export into ``out``; returns the manifest's stage entries."""
        info = self.info
        # timing caches are only valid for one TensorRT version on one GPU architecture
        cache = cache_root() / f"timing-trt{info.get('version')}-{info.get('architecture')}.cache"
        tokens = text_token_ranges(export_dir)
        stages = {}
        for name, desc in export_manifest["stages"].items():
            engine = Path(desc["file"]).with_suffix(".plan").name
            shapes = profile_shapes(name, desc["inputs"], self.frames, litefocus=export_manifest.get("litefocus"),
                                    layers=desc.get("litefocus_layers", []),
                                    text_tokens=tokens.get(name, (1, 64, 512)))
            TrtEngineFromOnnx(export_dir / desc["file"], out / engine, shapes,
                              precision=export_manifest["precision"], timing_cache=cache,
                              attention_impl=self.attention_impl)()
            stages[name] = {**desc, "engine": engine, "max_batch": PROFILE_BATCH}
        return stages

