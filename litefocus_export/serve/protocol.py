"""The ``litefocus_audio`` model's inputs and outputs (docs/design.md §6), and the checks of one request's tensors.

Torch-free and Triton-free: the python-backend model, the client and the tests share it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import UsageError
from ..core.request import GenerationRequest

MODEL_NAME = "litefocus_audio"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    triton_type: str  # KServe v2 / config.pbtxt data type
    dtype: Any  # numpy dtype of the array (object for BYTES)
    required: bool = False


INPUTS = (
    TensorSpec("prompt", "BYTES", np.object_, required=True),
    TensorSpec("seconds", "FP32", np.float32, required=True),
    TensorSpec("steps", "INT32", np.int32),
    TensorSpec("seed", "INT64", np.int64),
    TensorSpec("guidance", "FP32", np.float32),
    TensorSpec("negative_prompt", "BYTES", np.object_),
    TensorSpec("scheduler", "BYTES", np.object_),
)
OUTPUTS = (TensorSpec("waveform", "FP32", np.float32), TensorSpec("sample_rate", "INT32", np.int32))
_NUMPY_KIND = {"BYTES": "OSU", "FP32": "f", "INT32": "iu", "INT64": "iu"}


def _scalar(spec: TensorSpec, array: Any) -> Any:
    """The one value of a ``[1]`` (or batched ``[1, 1]``) tensor, of the declared type."""
    value = np.asarray(array)
    if value.size != 1:
        raise UsageError(f"input {spec.name} must hold one value, got shape {list(value.shape)}")
    if value.dtype.kind not in _NUMPY_KIND[spec.triton_type]:
        raise UsageError(f"input {spec.name} must be {spec.triton_type}, got {value.dtype}")
    item = value.reshape(-1)[0]
    if spec.triton_type == "BYTES":
        if isinstance(item, bytes):
            try:
                return item.decode("utf-8")
            except UnicodeDecodeError:
                raise UsageError(f"input {spec.name} is not valid UTF-8 text") from None
        return str(item)
    return item.item()


def parse_request(tensors: Mapping[str, Any]) -> GenerationRequest:
    """A checked ``GenerationRequest`` from one request's input tensors (by name); UsageError naming the problem.

    Missing optional inputs take ``generate``'s defaults; an empty prompt is refused (a server request must
    say what it wants); unknown inputs are refused.
    """
    known = {spec.name: spec for spec in INPUTS}
    unknown = sorted(set(tensors) - set(known))
    if unknown:
        raise UsageError(f"unknown input {unknown[0]!r}; inputs: {', '.join(known)}")
    values = {}
    for spec in INPUTS:
        if spec.name not in tensors or tensors[spec.name] is None:
            if spec.required:
                raise UsageError(f"input {spec.name} is required")
            continue
        values[spec.name] = _scalar(spec, tensors[spec.name])
    if not values["prompt"].strip():
        raise UsageError("input prompt is empty")
    return GenerationRequest(prompt=values["prompt"], seconds=values["seconds"],
                             steps=values.get("steps", GenerationRequest.steps),
                             seed=values.get("seed", GenerationRequest.seed), guidance=values.get("guidance"),
                             negative_prompt=values.get("negative_prompt"),
                             scheduler=values.get("scheduler", GenerationRequest.scheduler))


def request_tensors(request: GenerationRequest) -> dict[str, np.ndarray]:
    """The input tensors of ``request``, batch shape ``[1, 1]`` (what the client sends)."""
    values = {"prompt": request.prompt.encode("utf-8"), "seconds": request.seconds, "steps": request.steps,
              "seed": request.seed, "guidance": request.guidance,
              "negative_prompt": None if request.negative_prompt is None else request.negative_prompt.encode(),
              "scheduler": request.scheduler.encode()}
    return {spec.name: np.array([[values[spec.name]]], dtype=spec.dtype) for spec in INPUTS
            if values[spec.name] is not None}
