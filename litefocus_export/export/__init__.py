"""Export a diffusers audio pipeline to ONNX: the (patched) UNet and every other stage.

``export_pipeline`` writes into a temp folder beside the destination and renames it into place when
complete, with a ``manifest.json`` listing every file and the settings it was made with.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..core.choices import ATTENTIONS, EXPORT_PRECISIONS
from ..core.contract import (
    ALL_STAGES,
    DEFAULT_LEVELS,
    DEFAULT_SPARSE_RATIO,
    MIN_OPSET,
    check_levels,
    check_sparse_ratio,
    select_stages,
)
from ..core.errors import ExportError, UsageError, check_choice, first_line
from ..models.specs import check_spec

log = logging.getLogger(__name__)

# fp16: ops whose range or accumulation needs fp32 stay fp32 (norms, softmax, exp/log and the attention op,
# whose body holds a softmax; a fused runtime kernel can still run it in fp16 with fp32 accumulation)
FP16_KEEP_FP32 = ["Softmax", "LayerNormalization", "GroupNormalization", "InstanceNormalization", "ReduceMean",
                  "Pow", "Sqrt", "Exp", "Log", "DualSparseAttention", "Resize", "Range"]


# what an export folder holds and how: part of the export cache key, so a change re-exports
# (2: scheduler_config.json keeps diffusers' _use_default_values; 3: per-row samples, litefocus_index_<w> is
# (L, batch, M); 4: the vocoder as 2-D (1, k) convolutions, its receptive field in its metadata; 5: the language
# model step takes position_ids, so rows of different prompt lengths batch exactly)
EXPORT_FORMAT = 5


@dataclass(frozen=True)
class ExportSettings:
    """How to export; checked when constructed, so a bad value costs no model load.

    Args:
        attention: ``"litefocus"`` (the UNet with DualSparseAttention nodes) or ``"full"`` (stock).
        sparse_ratio: LiteFocus sampled fraction, in [0, 1].
        levels: latent widths of the patched levels.
        opset: ONNX opset, at least ``MIN_OPSET``.
        precision: ``"fp32"`` or ``"fp16"`` (the UNet; other stages stay fp32).
        stages: a subset of the pipeline's stages (None: all).
        verify: compare every stage with PyTorch on ONNX Runtime after exporting; an error beyond the precision's
            tolerance (``verify.VERIFY_TOLERANCE``) fails the export in one line and writes no folder.

    Raises:
        UsageError: any value outside its range or choices.
    """

    attention: Literal["litefocus", "full"] = "litefocus"
    sparse_ratio: float = DEFAULT_SPARSE_RATIO
    levels: tuple[int, ...] = DEFAULT_LEVELS
    opset: int = MIN_OPSET
    precision: Literal["fp32", "fp16"] = "fp32"
    stages: tuple[str, ...] | None = None
    verify: bool = False

    def __post_init__(self) -> None:
        check_choice("attention", self.attention, ATTENTIONS)
        check_choice("precision", self.precision, EXPORT_PRECISIONS)
        object.__setattr__(self, "sparse_ratio", check_sparse_ratio(self.sparse_ratio))
        object.__setattr__(self, "levels", check_levels(self.levels))
        if not isinstance(self.opset, int) or isinstance(self.opset, bool) or self.opset < MIN_OPSET:
            raise UsageError(f"opset {self.opset!r} is too old: the DualSparseAttention body needs opset >= "
                             f"{MIN_OPSET}")
        if self.stages is not None:
            if not self.stages:
                raise UsageError(f"give at least one stage; stages: {', '.join(ALL_STAGES)}")
            unknown = [s for s in self.stages if s not in ALL_STAGES]
            if unknown:
                raise UsageError(f"unknown stage {unknown[0]!r}; stages: {', '.join(ALL_STAGES)}")
            object.__setattr__(self, "stages", tuple(self.stages))

    def litefocus_config(self):  # noqa: ANN201
        from ..attention.config import LiteFocusConfig

        return LiteFocusConfig(sparse_ratio=self.sparse_ratio, levels=self.levels)


def convert_to_fp16(path: Path) -> None:
    """fp16 weights and math, fp32 graph inputs/outputs and sensitive ops (FP16_KEEP_FP32)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(path))
    # index arithmetic (Range and the constants feeding it) must stay fp32: the converter would turn
    # those constants into fp16, which Range does not accept
    producers = {out: node.name for node in model.graph.node for out in node.output}
    keep = [producers[i] for node in model.graph.node if node.op_type == "Range" for i in node.input if i in producers]
    model = convert_float_to_float16(model, keep_io_types=True, op_block_list=FP16_KEEP_FP32,
                                     node_block_list=keep, disable_shape_infer=True)
    onnx.save(model, str(path))


def export_pipeline(spec: str, out_dir: str | os.PathLike, settings: ExportSettings | None = None, *,
                    force: bool = False) -> dict[str, Any]:
    """Export every requested stage of the pipeline ``spec`` to ``out_dir``; returns the manifest.

    ``out_dir`` is written in a partial folder beside it and renamed into place (``outputs.staged_folder``);
    a folder already there is replaced only if it is an export or engine folder (or empty), or with ``force``.

    Raises:
        UsageError: bad settings, unknown stage, unwritable or foreign output folder, unknown model.
        ExportError: the export itself failed or broke the custom-op contract.
    """
    from ..artifacts.manifest import tool_versions, write_manifest
    from ..artifacts.outputs import check_output_folder, path_lock, staged_folder
    from ..models import load_pipeline, pipeline_geometry, pipeline_kind
    from ..models.specs import model_record
    from .stages import export_stages
    from .unet import export_unet

    settings = settings or ExportSettings()
    out_dir = check_output_folder(out_dir, force=force)
    check_spec(spec)
    pipe = load_pipeline(spec)
    kind = pipeline_kind(pipe)
    stages = select_stages(kind, settings.stages)
    with path_lock(out_dir), staged_folder(out_dir, force=force) as tmp:
        descriptions = _export_into(pipe, tmp, stages, settings, export_unet, export_stages)
        geometry = pipeline_geometry(pipe)
        data = {
            "kind": "export",
            "model": {**model_record(spec), "pipeline": kind},
            "geometry": {**geometry.__dict__, "latent_channels": int(pipe.unet.config.in_channels)},
            "attention": settings.attention,
            "litefocus": settings.litefocus_config().to_dict() if settings.attention == "litefocus" else None,
            "opset": settings.opset,
            "precision": settings.precision,
            "stages": descriptions,
            "tools": tool_versions("litefocus-export", "torch", "diffusers", "transformers", "onnx", "onnxscript",
                                   "onnxruntime"),
        }
        if settings.verify:
            from .verify import verify_export

            results = verify_export(pipe, tmp, data, settings)
            data["verification"] = {name: {"max_abs": a, "max_rel": r} for name, (a, r) in results.items()}
        manifest = write_manifest(tmp, data, sorted(os.listdir(tmp)))
    return manifest


def _export_into(pipe: Any, folder: Path, stages: list[str], settings: ExportSettings, export_unet: Any,
                 export_stages: Any) -> dict[str, Any]:
    descriptions: dict[str, Any] = {}
    if "unet" in stages:
        start = time.perf_counter()
        log.info("exporting unet (%s attention) ...", settings.attention)
        descriptions["unet"] = export_unet(pipe, folder, attention=settings.attention,
                                           config=settings.litefocus_config(), opset=settings.opset)
        if settings.precision == "fp16":
            convert_to_fp16(folder / descriptions["unet"]["file"])
        log.info("unet exported in %.1f s", time.perf_counter() - start)
    others = [s for s in stages if s != "unet"]
    if others:
        try:
            descriptions.update(export_stages(pipe, folder, opset=settings.opset, precision=settings.precision,
                                              stages=others))
        except (UsageError, ExportError):
            raise
        except Exception as exc:  # noqa: BLE001 - exporter failures come in many types
            raise ExportError(f"exporting {', '.join(others)} failed: {first_line(exc)}") from exc
    return descriptions
