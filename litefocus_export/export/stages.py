"""Every pipeline stage but the UNet -> ONNX, plus the tokenizers and scheduler config the runtime needs.

Stages (``stage_modules.py``): AudioLDM2 ``text_encoder``, ``text_encoder_2``, ``projection_model``,
``language_model``, ``vae_decoder``, ``vocoder``; AudioLDM / MusicLDM ``text_encoder``, ``vae_decoder``,
``vocoder``. One ``<stage>.onnx`` each (external data beside it past protobuf's 2 GB), batch and
sequence / time axes dynamic.

Precision: these stages are always exported fp32. ``precision="fp16"`` concerns the UNet (the heavy part);
the text stages run once per request and a TensorRT build can still lower the fp32 VAE decoder and vocoder
to fp16 with its own builder flags. Descriptions record ``"precision": "fp32"``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from ..core.choices import EXPORT_PRECISIONS
from ..core.contract import MAX_NEW_TOKENS_KEY, select_stages
from ..core.errors import ExportError, UsageError, first_line
from ..models import pipeline_kind
from .stage_modules import Exporter, StageSpec, stage_names, stage_spec

log = logging.getLogger(__name__)

EXAMPLE_BATCH, EXAMPLE_LENGTH = 2, 9  # export trace (batch 2 avoids the exporters' size-1 specialisation)
VERIFY_BATCH, VERIFY_LENGTH = 3, 6  # other sizes, so a trace that baked a shape fails verification
_LARGE_BYTES = 1_800_000_000  # protobuf's limit is 2 GiB; leave room for the graph


def export_stages(
    pipe: Any, out_dir: Path, *, opset: int = 18, precision: str = "fp32", stages: list[str] | None = None
) -> dict[str, dict]:
    """Export the non-UNet stages of ``pipe`` to ``out_dir/<stage>.onnx``, plus tokenizers and scheduler.

    Also writes ``out_dir/tokenizer`` (and ``tokenizer_2`` for AudioLDM2) with ``save_pretrained`` and
    ``out_dir/scheduler_config.json``.

    Args:
        pipe: an AudioLDM2 / AudioLDM / MusicLDM pipeline (any device; stages are exported in float32).
        out_dir: destination folder (created).
        opset: ONNX opset (default 18).
        precision: ``"fp32"`` or ``"fp16"``; these stages are exported fp32 either way (module docstring).
        stages: a subset of the kind's stages (default all).

    Returns:
        stage name -> description: ``file``, ``files`` (with external data), ``inputs`` (name -> dtype,
        shape with dynamic axes named, ``dynamic_axes``), ``outputs`` (names), ``output_axes``, ``opset``,
        ``precision``, ``exporter``, ``export_seconds``, ``metadata`` (ONNX metadata_props).

    Raises:
        UsageError: unknown stage or precision. ExportError: a stage failed to export or check.
    """
    kind = pipeline_kind(pipe)
    selected = select_stages(kind, stages, choices=stage_names(kind))
    if precision not in EXPORT_PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; valid: {', '.join(EXPORT_PRECISIONS)}")
    if precision != "fp32":
        log.info("non-UNet stages are exported fp32 (precision %s applies to the UNet)", precision)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_side_files(pipe, out_dir)
    return {name: export_stage(pipe, kind, name, out_dir, opset=opset) for name in selected}


def save_side_files(pipe: Any, out_dir: Path) -> None:
    """Tokenizers (``tokenizer.json`` is what the runtime reads) and the scheduler config.

    ``scheduler_config.json`` is diffusers' ``save_config`` plus the ``_use_default_values`` list it drops
    (empty when no argument was defaulted, so its presence marks a folder made since): the keys the
    pipeline's scheduler took from its class's defaults. diffusers' ``from_config`` re-defaults them when
    it converts the scheduler (DDIM -> DPM-Solver++ in ``generate --scheduler dpm``), and so does the runtime.
    """
    import json

    from ..core.contract import USE_DEFAULT_VALUES

    for name in ("tokenizer", "tokenizer_2"):
        tokenizer = getattr(pipe, name, None)
        if tokenizer is None:
            continue
        tokenizer.save_pretrained(out_dir / name)
        if not (out_dir / name / "tokenizer.json").is_file():
            raise ExportError(
                f"{name} ({type(tokenizer).__name__}) wrote no tokenizer.json; "
                "the runtime needs a fast (tokenizers-backed) tokenizer"
            )
    pipe.scheduler.save_config(out_dir)
    path = out_dir / pipe.scheduler.config_name
    config = json.loads(path.read_text())
    config[USE_DEFAULT_VALUES] = sorted(pipe.scheduler.config.get(USE_DEFAULT_VALUES) or ())
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _metadata(pipe: Any, kind: str, name: str) -> dict[str, str]:
    meta = {"litefocus.stage": name, "litefocus.kind": kind}
    if name == "language_model":
        meta[MAX_NEW_TOKENS_KEY] = str(int(pipe.language_model.config.max_new_tokens))
    if name == "vocoder":  # its receptive field, so the torch-free runtime can decode in exact chunks
        from ..core.contract import VOCODER_FIELD_KEY
        from ..core.vocoder_field import VocoderField

        meta[VOCODER_FIELD_KEY] = VocoderField.from_config(pipe.vocoder.config.to_dict()).to_json()
    return meta


def export_stage(pipe: Any, kind: str, name: str, out_dir: Path, *, opset: int = 18) -> dict[str, Any]:
    """Export one stage to ``out_dir/<name>.onnx`` and check it; returns its description."""
    if name == "text_encoder_2" and type(pipe.text_encoder_2).__name__ == "VitsModel":
        raise UsageError("AudioLDM2 text-to-speech (Vits text encoder) is not supported")
    spec = stage_spec(kind, name)
    module = _float_module(spec.module(pipe))
    gen = torch.Generator().manual_seed(0)
    examples = _to_device(spec.examples(pipe, EXAMPLE_BATCH, EXAMPLE_LENGTH, gen), module)
    large = sum(p.numel() * 4 for p in module.parameters()) > _LARGE_BYTES
    order: list[Exporter] = ["dynamo"] if large else [spec.exporter, _other(spec.exporter)]
    start = time.perf_counter()
    log.info("exporting %s ...", name)
    errors = []
    with _eval_mode(module):
        for exporter in order:
            try:
                model = _to_onnx(module, examples, spec, exporter, opset)
                break
            except Exception as exc:  # noqa: BLE001 - both exporters raise many types
                errors.append(f"{exporter}: {first_line(exc)}")
                log.warning("%s export of %s failed, %s", exporter, name, errors[-1])
        else:
            raise ExportError(f"export of stage {name} failed ({'; '.join(errors)})")
    name_dims(model, spec)
    meta = _metadata(pipe, kind, name)
    onnx.helper.set_model_props(model, meta)
    path = out_dir / f"{name}.onnx"
    files = save_model(model, path, external=large)
    seconds = time.perf_counter() - start
    log.info("exported %s with %s in %.1f s", name, exporter, seconds)
    return {
        "file": path.name,
        "files": files,
        **describe(model, spec),
        "opset": opset,
        "precision": "fp32",
        "exporter": exporter,
        "export_seconds": round(seconds, 2),
        "metadata": meta,
    }


def _other(exporter: Exporter) -> Exporter:
    return "dynamo" if exporter == "torchscript" else "torchscript"



@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode for the export, then every submodule's own flag back.

    The TorchScript exporter restores the *wrapper's* training flag recursively when it is done; a wrapper
    left in its default train mode would switch the pipeline's models (dropout) to training.
    """
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in flags:
            m.training = training


def _float_module(module: torch.nn.Module) -> torch.nn.Module:
    if any(p.dtype != torch.float32 for p in module.parameters()):
        import copy

        module = copy.deepcopy(module).float()
    return module


def _to_device(tensors: dict[str, torch.Tensor], module: torch.nn.Module) -> dict[str, torch.Tensor]:
    device = next(module.parameters()).device
    return {k: v.to(device) for k, v in tensors.items()}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # Tracer / deprecation warnings from transformers and torch: verification (other shapes) is the check.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        yield


def _to_onnx(
    module: torch.nn.Module,
    examples: dict[str, torch.Tensor],
    spec: StageSpec,
    exporter: Exporter,
    opset: int,
) -> onnx.ModelProto:
    args, inputs, outputs = tuple(examples.values()), list(examples), list(spec.outputs)
    with _quiet():
        if exporter == "dynamo":
            auto = torch.export.Dim.AUTO
            shapes = tuple({axis: auto for axis in spec.inputs[n]} for n in inputs)
            program = torch.onnx.export(
                module,
                args,
                dynamo=True,
                optimize=False,
                verbose=False,
                dynamic_shapes=shapes,
                input_names=inputs,
                output_names=outputs,
                opset_version=opset,
            )
            return program.model_proto
        buffer = io.BytesIO()
        torch.onnx.export(
            module,
            args,
            buffer,
            dynamo=False,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={**spec.inputs, **spec.outputs},
            opset_version=opset,
        )
        return onnx.load_model_from_string(buffer.getvalue())


def name_dims(model: onnx.ModelProto, spec: StageSpec) -> None:
    """Name dynamic dims after the spec (``batch``, ``text_tokens``, ...), graph-wide, outputs included."""
    name_dynamic_dims(model, spec.inputs)
    for value in model.graph.output:
        for axis, dim_name in spec.outputs.get(value.name, {}).items():
            value.type.tensor_type.shape.dim[axis].dim_param = dim_name


def name_dynamic_dims(model: onnx.ModelProto, inputs: dict[str, dict[int, str]]) -> None:
    """Replace the exporter's symbolic dims (s0, s17, ...) of ``inputs`` by their names, graph-wide."""
    mapping: dict[str, str] = {}
    for value in model.graph.input:
        for axis, dim_name in inputs.get(value.name, {}).items():
            dim = value.type.tensor_type.shape.dim[axis]
            if dim.dim_param and dim.dim_param != dim_name:
                mapping.setdefault(dim.dim_param, dim_name)
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in mapping:
                dim.dim_param = mapping[dim.dim_param]


def _value_info(value: onnx.ValueInfoProto) -> dict[str, Any]:
    tensor = value.type.tensor_type
    return {
        "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
        "shape": [d.dim_param or d.dim_value for d in tensor.shape.dim],
    }


def describe(model: onnx.ModelProto, spec: StageSpec) -> dict[str, Any]:
    """Inputs (dtype, shape, dynamic axes), output names and axes of an exported stage."""
    graph_inputs = {v.name: v for v in model.graph.input}
    missing = [n for n in spec.inputs if n not in graph_inputs]
    if missing:
        raise ExportError(f"exported {spec.name} lost inputs {missing} (unused by the graph?)")
    return {
        "inputs": {
            n: {**_value_info(graph_inputs[n]), "dynamic_axes": dict(axes)} for n, axes in spec.inputs.items()
        },
        "outputs": [v.name for v in model.graph.output],
        "output_axes": {n: dict(axes) for n, axes in spec.outputs.items()},
    }


def save_model(model: onnx.ModelProto, path: Path, *, external: bool = False) -> list[str]:
    """Save (external data past 2 GB) and run ``onnx.checker`` with ``full_check`` on the file.

    Returns the file names written (the model, and its ``.data`` file when external).
    """
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    external = external or model.ByteSize() > _LARGE_BYTES
    try:
        if external:
            onnx.save(
                model,
                path,
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data.name,
                size_threshold=1024,
            )
        else:
            onnx.save(model, path)
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises ValidationError, InferenceError, OSError ...
        raise ExportError(f"{path.name} failed onnx.checker: {first_line(exc)}") from exc
    return [path.name, data.name] if external else [path.name]


def verify_stages(pipe: Any, out_dir: Path, descriptions: dict[str, dict]) -> dict[str, tuple[float, float]]:
    """ONNX Runtime (CPU) vs PyTorch on the same random inputs, for every described stage.

    Inputs have another batch size and length than the export trace, so a graph that baked a shape in
    shows up here. Returns stage -> ``(max abs error, max abs error / max |torch output|)`` over all outputs.

    Raises:
        ExportError: a stage file does not load or run in ONNX Runtime.
    """
    import onnxruntime as ort

    kind = pipeline_kind(pipe)
    results: dict[str, tuple[float, float]] = {}
    for name, description in descriptions.items():
        spec = stage_spec(kind, name)
        module = _float_module(spec.module(pipe))
        gen = torch.Generator().manual_seed(1)
        inputs = _to_device(spec.examples(pipe, VERIFY_BATCH, VERIFY_LENGTH, gen), module)
        with _quiet(), _eval_mode(module):
            expected = module(**inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        try:
            session = ort.InferenceSession(
                str(Path(out_dir) / description["file"]), providers=["CPUExecutionProvider"]
            )
            actual = session.run(None, {k: v.cpu().numpy() for k, v in inputs.items()})
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ExportError(f"stage {name} does not run in ONNX Runtime: {first_line(exc)}") from exc
        results[name] = _errors(actual, [t.float().cpu().numpy() for t in expected], name)
        log.info("verified %s: max abs %.3g, rel %.3g", name, *results[name])
    return results


def _errors(actual: list[np.ndarray], expected: list[np.ndarray], name: str) -> tuple[float, float]:
    abs_err, rel_err = 0.0, 0.0
    for got, want in zip(actual, expected, strict=True):
        if got.shape != want.shape:
            raise ExportError(f"stage {name}: ONNX output shape {got.shape} != torch {want.shape}")
        err = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max(initial=0.0))
        scale = float(np.abs(want).max(initial=0.0))
        abs_err, rel_err = max(abs_err, err), max(rel_err, err / scale if scale > 0 else err)
    return abs_err, rel_err
