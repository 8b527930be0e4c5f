"""The litefocus_audio tensors: one request's inputs parsed and checked without a server."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from litefocus_export.core.errors import UsageError
from litefocus_export.core.request import GenerationRequest
from litefocus_export.serve.protocol import INPUTS, parse_request, request_tensors
from litefocus_export.serve.repository import ServingSettings, config_pbtxt


def test_round_trip():
    request = GenerationRequest(prompt="rain on a tin roof", seconds=2.5, steps=3, seed=7, guidance=2.0,
                                negative_prompt="noise", scheduler="dpm")
    tensors = request_tensors(request)
    assert {name: a.shape for name, a in tensors.items()} == {spec.name: (1, 1) for spec in INPUTS}
    assert parse_request(tensors) == request


def test_defaults_are_generates():
    request = parse_request({"prompt": np.array([[b"wind"]], dtype=object), "seconds": np.array([[3.0]], np.float32)})
    assert request == GenerationRequest(prompt="wind", seconds=3.0)


@pytest.mark.parametrize("tensors, message", [
    ({"seconds": np.array([[1.0]], np.float32)}, "prompt is required"),
    ({"prompt": np.array([[b" "]], dtype=object), "seconds": np.array([[1.0]], np.float32)}, "prompt is empty"),
    ({"prompt": np.array([[b"\xff"]], dtype=object), "seconds": np.array([[1.0]], np.float32)}, "UTF-8"),
    ({"prompt": np.array([[b"a"]], dtype=object), "seconds": np.array([[np.nan]], np.float32)}, "positive"),
    ({"prompt": np.array([[b"a"]], dtype=object), "seconds": np.array([[1.0, 2.0]], np.float32)}, "one value"),
    ({"prompt": np.array([[b"a"]], dtype=object), "seconds": np.array([[1]], np.int64)}, "must be FP32"),
    ({"prompt": np.array([[b"a"]], dtype=object), "seconds": np.array([[1.0]], np.float32),
      "steps": np.array([[0]], np.int32)}, "steps"),
    ({"prompt": np.array([[b"a"]], dtype=object), "seconds": np.array([[1.0]], np.float32),
      "scheduler": np.array([[b"euler"]], dtype=object)}, "scheduler"),
    ({"prompt": np.array([[b"a"]], dtype=object), "seconds": np.array([[1.0]], np.float32),
      "colour": np.array([[1]])}, "unknown input"),
])
def test_bad_requests_name_the_problem(tensors, message):
    with pytest.raises(UsageError, match=message):
        parse_request(tensors)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(name=st.sampled_from([spec.name for spec in INPUTS]),
       value=st.one_of(st.floats(allow_nan=True), st.integers(-2**63, 2**63 - 1), st.binary(max_size=8),
                       st.text(max_size=8)),
       dtype=st.sampled_from([np.float32, np.float64, np.int32, np.int64, object]))
def test_any_tensor_value_is_a_request_or_one_usage_error(name, value, dtype):
    tensors = {"prompt": np.array([[b"rain"]], dtype=object), "seconds": np.array([[1.0]], np.float32)}
    try:
        tensors[name] = np.array([[value]], dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        return
    try:
        parse_request(tensors)
    except UsageError as exc:
        assert "\n" not in str(exc)


def test_config_pbtxt_bounds_the_queue():
    text = config_pbtxt(["/e"], ServingSettings(max_batch=4, max_queue=3, request_timeout_s=2))
    assert "max_batch_size: 4" in text and "max_queue_size: 3" in text and "timeout_action: REJECT" in text
    assert "default_timeout_microseconds: 2000000" in text and 'string_value: "[\\"/e\\"]"' in text
    for bad in ({"max_batch": 0}, {"max_queue": -1}, {"max_queue_delay_ms": float("nan")}, {"instances": True}):
        with pytest.raises(UsageError):
            ServingSettings(**bad)
