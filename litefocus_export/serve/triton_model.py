"""The ``litefocus_audio`` model for Triton's python backend: the router over the engine folders.

Triton's dynamic batcher hands ``execute`` every request it grouped; each is parsed and checked on its own
(a bad one gets an error response naming the problem), then the router batches the compatible ones (one
UNet call per step) and a failing batch fails only its own requests. The engine folders come from the
model config's ``engine_folders`` parameter (a JSON list; relative paths are relative to the model version
folder, where ``triton-repo --copy`` puts them).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import LiteFocusError
from .protocol import INPUTS, parse_request

log = logging.getLogger("litefocus_export")


def model_parameters(args: dict[str, Any]) -> tuple[list[Path], int]:
    """(engine folders, threads) from the python backend's ``initialize`` arguments."""
    config = json.loads(args["model_config"])
    params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
    base = Path(args["model_repository"]) / str(args["model_version"])
    folders = [base / folder for folder in json.loads(params["engine_folders"])]
    return folders, int(params.get("threads") or 0)


class TritonPythonModel:
    """Triton calls ``initialize`` once per model instance, ``execute`` per batch, ``finalize`` at unload."""

    def initialize(self, args: dict[str, Any]) -> None:
        from .router import Router

        logging.basicConfig(level=logging.INFO, format="litefocus_audio: %(message)s")
        folders, threads = model_parameters(args)
        self.router = Router(folders, threads=threads)
        log.info("serving %s", self.router.describe())

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils

        parsed: list[Any] = []
        for request in requests:
            tensors = {spec.name: _numpy(pb_utils.get_input_tensor_by_name(request, spec.name)) for spec in INPUTS}
            try:
                parsed.append(parse_request(tensors))
            except LiteFocusError as exc:
                parsed.append(exc)
        responses = []
        for request, result in zip(parsed, self.router.run(parsed)):
            if isinstance(result, LiteFocusError):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(result))))
                continue
            rate = np.array([[self.router.sample_rate(request)]], dtype=np.int32)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("waveform", np.ascontiguousarray(result, dtype=np.float32)[None, :]),
                pb_utils.Tensor("sample_rate", rate),
            ]))
        return responses

    def finalize(self) -> None:
        self.router = None


def _numpy(tensor: Any) -> np.ndarray | None:
    return None if tensor is None else tensor.as_numpy()
