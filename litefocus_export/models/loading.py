"""Turn a model spec into a diffusers pipeline or one of its components.

A spec is a built-in random model (``random:audioldm2-tiny``, ... see ``BUILTIN_SPECS``), a local
diffusers snapshot folder (``save_pretrained`` layout with model_index.json) or a Hugging Face id
``ORG/NAME[@REVISION]``, resolved to its snapshot folder in the hub cache (``hub.py``: downloaded first when
missing, unless ``HF_HUB_OFFLINE`` is set). Folders then load with ``local_files_only=True``.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import UsageError
from .compat import CLASS_SUBSTITUTES, apply_pipeline_fixes
from .random_build import build_component, build_random_pipeline
from .specs import PIPELINE_CLASSES, RANDOM_PREFIX, PipelineKind, folder_kind, local_folder, random_spec

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

logger = logging.getLogger(__name__)


def _dtype(dtype: torch.dtype | str) -> torch.dtype:
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    aliases = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
    value = getattr(torch, aliases.get(str(dtype), str(dtype)), None)
    if not isinstance(value, torch.dtype):
        raise UsageError(f"unknown dtype {dtype!r}; valid: float32, float16, bfloat16")
    return value


def load_pipeline(
    spec: str | Path, *, device: str = "cpu", dtype: torch.dtype | str = "float32"
) -> DiffusionPipeline:
    """Load (folder) or build (``random:...``) an AudioLDM2 / AudioLDM / MusicLDM pipeline.

    Args:
        spec: a built-in spec from ``BUILTIN_SPECS``, a local diffusers snapshot folder or a hub id.
        device: torch device the pipeline is moved to (default ``"cpu"``).
        dtype: weight dtype, a ``torch.dtype`` or its name (default float32).

    Raises:
        UsageError: unknown spec, a missing folder, a folder without model_index.json or holding
            another pipeline class, or a bad dtype.
    """
    torch_dtype = _dtype(dtype)
    start = time.perf_counter()
    if str(spec).startswith(RANDOM_PREFIX):
        pipe = _cast(build_random_pipeline(random_spec(str(spec))), torch_dtype)
    else:
        pipe = _load_folder(local_folder(spec), torch_dtype)
    pipe = apply_pipeline_fixes(pipe.to(device))
    logger.info("loaded %s (%s) in %.1f s", spec, pipeline_kind(pipe), time.perf_counter() - start)
    return pipe


def _cast(module: Any, torch_dtype: torch.dtype) -> Any:
    # Built models are fp32; casting them to fp32 again would only trigger diffusers' cast warnings.
    import torch

    return module if torch_dtype == torch.float32 else module.to(dtype=torch_dtype)


def _dtype_kwarg(library: str) -> str:
    """``dtype`` where the installed library takes it, else the older ``torch_dtype`` (no warnings)."""
    if library == "transformers":
        from packaging.version import Version

        return "dtype" if Version(metadata.version("transformers")) >= Version("4.56") else "torch_dtype"
    import diffusers.utils

    # diffusers renamed it in its 2026 releases (huggingface/diffusers#14205); detect, not guess a version.
    return "dtype" if hasattr(diffusers.utils, "_resolve_dtype") else "torch_dtype"


def _load_folder(path: Path, torch_dtype: torch.dtype) -> DiffusionPipeline:
    folder_kind(path)  # refuse other pipeline classes with a clear message, before heavy imports
    from diffusers import DiffusionPipeline

    index = json.loads((path / "model_index.json").read_text())
    overrides = {
        name: _load_folder_component(path, name, entry, torch_dtype)
        for name, entry in index.items()
        if isinstance(entry, list) and tuple(entry) in CLASS_SUBSTITUTES
    }
    kwargs = {_dtype_kwarg("diffusers"): torch_dtype, **overrides}
    return DiffusionPipeline.from_pretrained(path, local_files_only=True, **kwargs)


def _component_class(library: str, class_name: str) -> Any:
    library, class_name = CLASS_SUBSTITUTES.get((library, class_name), (library, class_name))
    # Pipeline-local classes (library "audioldm2") are exported at the diffusers top level too.
    for module in dict.fromkeys((library, "diffusers", "transformers")):
        try:
            return getattr(importlib.import_module(module), class_name)
        except (ImportError, AttributeError):
            continue
    raise UsageError(f"cannot resolve component class {library}.{class_name}")


def _load_folder_component(path: Path, name: str, entry: list[str], torch_dtype: torch.dtype) -> Any:
    import torch

    cls = _component_class(*entry)
    folder = path / name
    if issubclass(cls, torch.nn.Module):
        key = _dtype_kwarg("transformers" if cls.__module__.startswith("transformers") else "diffusers")
        return cls.from_pretrained(folder, local_files_only=True, **{key: torch_dtype}).eval()
    return cls.from_pretrained(folder)


def load_component(
    spec: str | Path, name: str, *, device: str = "cpu", dtype: torch.dtype | str = "float32"
) -> Any:
    """One component of a spec (``unet``, ``vae``, ``text_encoder``, ...) without building the others.

    Raises:
        UsageError: unknown spec, missing folder or component.
    """
    import torch

    torch_dtype = _dtype(dtype)
    if str(spec).startswith(RANDOM_PREFIX):
        component = build_component(random_spec(str(spec)), name)
        if isinstance(component, torch.nn.Module):
            component = _cast(component, torch_dtype)
    else:
        path = local_folder(spec)
        entry = json.loads((path / "model_index.json").read_text()).get(name)
        if not isinstance(entry, list) or entry[0] is None:
            raise UsageError(f"folder {str(path)!r} has no component {name!r}")
        component = _load_folder_component(path, name, entry, torch_dtype)
    return component.to(device) if isinstance(component, torch.nn.Module) else component


def load_unet(spec: str | Path, *, device: str = "cpu", dtype: torch.dtype | str = "float32") -> Any:
    """The denoising UNet of a spec alone (e.g. the 347M-parameter AudioLDM2 UNet for benchmarks)."""
    return load_component(spec, "unet", device=device, dtype=dtype)


def pipeline_kind(pipe: Any) -> PipelineKind:
    """``"audioldm2"``, ``"audioldm"`` or ``"musicldm"`` from the pipeline's class (subclasses included).

    Raises:
        UsageError: any other pipeline.
    """
    for cls in type(pipe).__mro__:
        if cls.__name__ in PIPELINE_CLASSES:
            return PIPELINE_CLASSES[cls.__name__]
    raise UsageError(f"unsupported pipeline {type(pipe).__name__}; supported: {', '.join(PIPELINE_CLASSES)}")
