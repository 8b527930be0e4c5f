"""A standalone Triton model repository serving engine folders: ``config.pbtxt`` + a python-backend ``model.py``.

The layout Triton reads (``<repo>/litefocus_audio/{config.pbtxt, 1/model.py}``); ``model.py`` imports the
model from this package, so the host (or the NGC container) needs ``pip install litefocus-export`` and the
engine folders, referenced by path or copied into the repository (``copy``). A ``manifest.json`` at the top
says the folder is ours (the output rules of ``outputs``); Triton ignores it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..artifacts.manifest import read_manifest
from ..core.errors import UsageError
from .protocol import INPUTS, MODEL_NAME, OUTPUTS, TensorSpec

REPOSITORY_KIND = "triton-repository"
MODEL_PY = '''"""litefocus_audio: LiteFocus text-to-audio engines (written by litefocus-export; needs it installed)."""

from litefocus_export.serve.triton_model import TritonPythonModel  # noqa: F401
'''


@dataclass(frozen=True)
class ServingSettings:
    """How the model batches and queues (checked when made).

    Args:
        max_batch: most requests in one batch (Triton's ``max_batch_size``).
        max_queue_delay_ms: how long the batcher waits to fill a batch.
        max_queue: most requests waiting; past it a request is refused at once.
        request_timeout_s: most seconds a request may wait in the queue (0: no limit).
        instances: model instances (each loads the engines: memory x instances).
        threads: intra-op threads per stage (0: ONNX Runtime's default).
    """

    max_batch: int = 4
    max_queue_delay_ms: float = 50.0
    max_queue: int = 64
    request_timeout_s: float = 0.0
    instances: int = 1
    threads: int = 0

    def __post_init__(self) -> None:
        for name, low in (("max_batch", 1), ("max_queue", 1), ("instances", 1), ("threads", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 1_000_000:
                raise UsageError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("max_queue_delay_ms", "request_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 86_400_000:  # NaN fails too
                raise UsageError(f"{name} must be a number >= 0, got {value!r}")


def _tensor(spec: TensorSpec, optional: bool) -> str:
    dims = "[ -1 ]" if spec.name == "waveform" else "[ 1 ]"
    kind = "STRING" if spec.triton_type == "BYTES" else spec.triton_type  # config.pbtxt's name for BYTES
    extra = " optional: true" if optional else ""
    return f'  {{ name: "{spec.name}" data_type: TYPE_{kind} dims: {dims}{extra} }}'


def config_pbtxt(folders: list[str], settings: ServingSettings) -> str:
    """The model's ``config.pbtxt``: python backend, the tensors of docs/design.md §6, dynamic batching, a bounded
    queue."""
    inputs = ",\n".join(_tensor(spec, not spec.required) for spec in INPUTS)
    outputs = ",\n".join(_tensor(spec, False) for spec in OUTPUTS)
    timeout = int(settings.request_timeout_s * 1e6)
    policy = (f"    default_queue_policy {{ max_queue_size: {settings.max_queue} timeout_action: REJECT"
              + (f" default_timeout_microseconds: {timeout} allow_timeout_override: true" if timeout else "")
              + " }")
    return f'''name: "{MODEL_NAME}"
backend: "python"
max_batch_size: {settings.max_batch}
input [
{inputs}
]
output [
{outputs}
]
dynamic_batching {{
    max_queue_delay_microseconds: {int(settings.max_queue_delay_ms * 1000)}
{policy}
}}
instance_group [ {{ kind: KIND_CPU count: {settings.instances} }} ]
parameters: {{ key: "engine_folders" value: {{ string_value: {json.dumps(json.dumps(folders))} }} }}
parameters: {{ key: "threads" value: {{ string_value: "{settings.threads}" }} }}
'''


def write_repository(folders: list[str | os.PathLike], out: Path, settings: ServingSettings, *,
                     copy: bool = False) -> Path:
    """Write the repository into ``out`` (a new or empty folder, or an earlier repository); returns ``out``.

    Every engine folder is checked (manifest, hashes) first. ``copy`` puts them inside the repository (a
    self-contained folder to ship); otherwise they are referenced by absolute path.
    """
    from ..artifacts.outputs import check_output_folder, path_lock, staged_folder

    if not folders:
        raise UsageError("give at least one engine folder")
    for folder in folders:
        read_manifest(folder)
    out = check_output_folder(out, kinds=(REPOSITORY_KIND,))
    with path_lock(out), staged_folder(out, kinds=(REPOSITORY_KIND,)) as tmp:
        version = tmp / MODEL_NAME / "1"
        version.mkdir(parents=True)
        (version / "model.py").write_text(MODEL_PY)
        names = []
        for folder in map(Path, folders):
            if copy:
                shutil.copytree(folder, version / "engines" / folder.name)
                names.append(f"engines/{folder.name}")
            else:
                names.append(str(folder.resolve()))
        (tmp / MODEL_NAME / "config.pbtxt").write_text(config_pbtxt(names, settings))
        (tmp / "manifest.json").write_text(json.dumps({
            "kind": REPOSITORY_KIND, "model": MODEL_NAME, "engine_folders": names, "copied": copy,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n")
    return out
