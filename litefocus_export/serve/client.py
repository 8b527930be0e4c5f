"""``litefocus-export request``: one request to a running server (``tritonclient``, HTTP), the WAV written."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.errors import EngineError, UsageError, first_line
from ..core.request import GenerationRequest
from .protocol import INPUTS, MODEL_NAME, request_tensors


def send(url: str, request: GenerationRequest, *, timeout_s: float = 600.0) -> tuple[np.ndarray, int]:
    """(waveform, sample rate) for ``request`` from the server at ``url`` (``host:port``, HTTP).

    Raises:
        EngineError: the server refused or failed the request (its message, one line), or cannot be reached.
    """
    try:
        import tritonclient.http as http
        from tritonclient.utils import InferenceServerException
    except ImportError:
        raise UsageError("the request command needs tritonclient (pip install 'tritonclient[http]')") from None
    url = url.removeprefix("http://").rstrip("/")
    types = {spec.name: spec.triton_type for spec in INPUTS}
    inputs = []
    for name, array in request_tensors(request).items():
        tensor = http.InferInput(name, list(array.shape), types[name])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    try:
        client = http.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)
        result = client.infer(MODEL_NAME, inputs, outputs=[http.InferRequestedOutput("waveform"),
                                                          http.InferRequestedOutput("sample_rate")])
    except InferenceServerException as exc:
        raise EngineError(f"the server refused the request: {_message(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - connection errors come from several libraries
        raise EngineError(f"cannot reach the server at {url}: {first_line(exc)}") from None
    return result.as_numpy("waveform").reshape(-1), int(result.as_numpy("sample_rate").reshape(-1)[0])


def _message(exc: Any) -> str:
    text = first_line(exc.message() if hasattr(exc, "message") and exc.message() else exc)
    if "Exceeds maximum queue size" in text or "queue" in text.lower() and "full" in text.lower():
        return f"the server's queue is full: retry later ({text})"
    return text
