"""UNet -> ONNX with every LiteFocus layer as one ``ai.litefocus::DualSparseAttention`` node.

docs/design.md §2 (``contract.unet_inputs``): inputs are named after the diffusers UNet forward arguments, plus one
``litefocus_index_<width>`` int64 ``(L, batch, M)`` input per patched level (``[l, b]``: the sample of the
l-th patched layer of that level in execution order for batch row b). Batch, latent time and the samples
axis are dynamic, so one file serves every duration, batch size and sparse ratio.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch
import torch.nn.functional as F

from ..attention.config import LiteFocusConfig
from ..attention.onnx_function import attach_function, register_schema, translate_op
from ..attention.patching import litefocus_state, patch, unpatch
from ..core.contract import (
    MIN_OPSET,
    OP_DOMAIN,
    OP_TYPE,
    UNET_OUTPUT,
    example_unet_feeds,
    index_input_name,
    unet_call_arguments,
    unet_inputs,
)
from ..core.errors import ExportError, first_line
from ..models import pipeline_geometry, pipeline_kind
from .stages import name_dynamic_dims, save_model

log = logging.getLogger(__name__)
UNET_FILE = "unet.onnx"
# Example latent length for tracing: odd and not a multiple of 8, so the traced graph takes the
# UNet's size-forwarding upsampling path, which is valid for every length.
EXAMPLE_FRAMES = 37
EXAMPLE_BATCH = 2


@dataclass
class UNetSignature:
    """The exported UNet's inputs: example tensors and descriptions (``contract.unet_inputs``), in order."""

    inputs: dict[str, torch.Tensor]
    descriptions: dict[str, dict[str, Any]]
    levels: dict[int, list[str]] = field(default_factory=dict)  # width -> patched layer names in order

    @property
    def dynamic(self) -> dict[str, dict[int, str]]:
        """Input name -> {axis: dimension name} of its dynamic axes."""
        return {name: desc["dynamic_axes"] for name, desc in self.descriptions.items()}


def unet_signature(pipe: Any, frames: int = EXAMPLE_FRAMES, batch: int = EXAMPLE_BATCH,
                   min_samples: int = EXAMPLE_BATCH + 1) -> UNetSignature:
    """Example inputs for export: latents, timestep, conditioning, one index input per patched level (a
    different sample per batch row).

    ``min_samples``: at least this many samples per layer. Tracing needs 2 (torch.export specialises
    size-0/1 dims and the samples axis must stay dynamic) and more than the example batch (equal sizes
    may be traced as one dimension); verification uses the real count, 0 included.
    """
    state = litefocus_state(pipe)
    layers = [layer.as_dict() for layer in state.layers] if state is not None else []
    descriptions = unet_inputs(pipeline_kind(pipe), pipe.unet.config, pipeline_geometry(pipe).latent_freq_bins,
                               layers)
    feeds = example_unet_feeds(descriptions, frames, seed=1, layers=layers, min_samples=min_samples, batch=batch,
                               sparse_ratio=state.config.sparse_ratio if state is not None else 0.0)
    levels: dict[int, list[str]] = {}
    for layer in layers:
        levels.setdefault(layer["width"], []).append(layer["name"])
    return UNetSignature({name: torch.from_numpy(array) for name, array in feeds.items()}, descriptions, levels)


class IndexInputSamples:
    """Sample source that hands each patched layer its ``(batch, M)`` rows of the graph's index inputs."""

    def __init__(self) -> None:
        self.rows: dict[str, torch.Tensor] = {}

    def __call__(self, layer: str, n_tokens: int) -> torch.Tensor:
        return self.rows[layer]


class UNetForExport(torch.nn.Module):
    """The UNet with a flat positional signature: (sample, timestep, *conditioning, *index inputs)."""

    def __init__(self, unet: torch.nn.Module, signature: UNetSignature, samples: IndexInputSamples | None):
        super().__init__()
        self.unet = unet
        self.names = list(signature.inputs)
        self.levels = signature.levels
        self.samples = samples

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        named = dict(zip(self.names, args))
        if self.samples is not None:
            self.samples.rows = {layer: named[index_input_name(width)][row]
                                 for width, layers in self.levels.items() for row, layer in enumerate(layers)}
        sample, timestep, kwargs = unet_call_arguments(named)
        return self.unet(sample, timestep, **kwargs, return_dict=False)[0]


def _upsample_for_export(self: Any, hidden_states: torch.Tensor, output_size: Any = None, *args: Any, **kwargs: Any):
    # diffusers' Upsample2D computes max(out / in) in Python floats and branches on sizes; export
    # cannot reason about those for a symbolic length. Same math, no size arithmetic.
    if output_size is None:
        hidden_states = F.interpolate(hidden_states, scale_factor=2.0, mode="nearest")
    else:
        hidden_states = F.interpolate(hidden_states, size=output_size, mode="nearest")
    return self.conv(hidden_states) if self.use_conv else hidden_states


@contextlib.contextmanager
def export_friendly_upsampling(unet: torch.nn.Module) -> Iterator[None]:
    from diffusers.models.upsampling import Upsample2D

    swapped = [m for m in unet.modules() if isinstance(m, Upsample2D) and m.interpolate
               and not m.use_conv_transpose and m.norm is None and getattr(m, "name", "conv") == "conv"]
    for module in swapped:
        module.forward = _upsample_for_export.__get__(module)
    try:
        yield
    finally:
        for module in swapped:
            del module.forward


def export_unet(pipe: Any, out_dir: Path, *, attention: str = "litefocus", config: LiteFocusConfig | None = None,
                opset: int = MIN_OPSET) -> dict[str, Any]:
    """Export ``pipe.unet`` (patched for LiteFocus, or stock with ``attention="full"``) to ``out_dir/unet.onnx``.

    Returns a description: file, inputs (name, dtype, dynamic axes), patched layers per level.
    Raises ``ExportError`` if the exported graph lost the custom op or its function.
    """
    register_schema()
    was_patched = litefocus_state(pipe) is not None
    samples = IndexInputSamples() if attention == "litefocus" else None
    if samples is not None:
        patch(pipe, config or LiteFocusConfig(), samples)
    elif was_patched:
        unpatch(pipe)
    try:
        signature = unet_signature(pipe)
        layers = [layer.as_dict() for layer in litefocus_state(pipe).layers] if samples is not None else []
        model = _trace_to_onnx(UNetForExport(pipe.unet, signature, samples), signature, opset)
    finally:
        if samples is not None:
            unpatch(pipe)
    expected = sum(len(names) for names in signature.levels.values())
    if expected:
        attach_function(model)
    check_custom_op(model, expected)
    path = out_dir / UNET_FILE
    save_model(model, path)
    return {
        "file": UNET_FILE,
        "inputs": signature.descriptions,
        "outputs": [UNET_OUTPUT],
        "litefocus_levels": {str(w): names for w, names in signature.levels.items()},
        "litefocus_layers": layers,
        "opset": opset,
    }


def _trace_to_onnx(module: torch.nn.Module, signature: UNetSignature, opset: int) -> onnx.ModelProto:
    auto = torch.export.Dim.AUTO
    dynamic_shapes = tuple({axis: auto for axis in signature.dynamic[name]} for name in signature.inputs)
    args = tuple(signature.inputs.values())
    start = time.perf_counter()
    log.info("tracing the UNet (torch.export) ...")
    with torch.no_grad(), export_friendly_upsampling(module.unet):
        try:
            program = torch.export.export(module.eval(), args, dynamic_shapes=(dynamic_shapes,), strict=False,
                                          prefer_deferred_runtime_asserts_over_guards=True)
        except Exception as exc:  # noqa: BLE001 - torch.export raises many types
            raise ExportError(f"torch.export of the UNet failed: {first_line(exc)}") from exc
    log.info("traced in %.1f s; translating to ONNX opset %d ...", time.perf_counter() - start, opset)
    start = time.perf_counter()
    onnx_program = torch.onnx.export(
        program, dynamo=True, opset_version=opset, input_names=list(signature.inputs), output_names=[UNET_OUTPUT],
        custom_translation_table={torch.ops.litefocus.dual_sparse_attention.default: translate_op},
        optimize=False, verbose=False,
    )
    model = onnx_program.model_proto
    name_dynamic_dims(model, signature.dynamic)
    log.info("translated in %.1f s", time.perf_counter() - start)
    return model


def check_custom_op(model: onnx.ModelProto, expected_nodes: int) -> None:
    """The export contract: one custom node per patched layer, and the function body beside them."""
    nodes = sum(1 for n in model.graph.node if n.domain == OP_DOMAIN and n.op_type == OP_TYPE)
    has_function = any(f.domain == OP_DOMAIN and f.name == OP_TYPE for f in model.functions)
    if nodes != expected_nodes:
        raise ExportError(f"exported UNet has {nodes} {OP_TYPE} nodes, expected {expected_nodes} (op was inlined?)")
    if expected_nodes and not has_function:
        raise ExportError(f"exported UNet lacks the {OP_DOMAIN}::{OP_TYPE} function body")
