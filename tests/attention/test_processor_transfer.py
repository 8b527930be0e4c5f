"""The processor's per-call sample copy must not block the host on CUDA (one stream sync per patched layer).

A copy from pageable host memory makes torch synchronise the stream; the processor copies from pinned memory
with non_blocking=True instead. CPU-only torch cannot pin or copy to CUDA, so the two calls are recorded.
"""

from __future__ import annotations

import numpy as np
import torch

from litefocus_export.attention import LiteFocusConfig, QueuedSamples, RandomSamples
from litefocus_export.attention.processor import LiteFocusAttnProcessor


def processor(samples) -> LiteFocusAttnProcessor:  # noqa: ANN001
    return LiteFocusAttnProcessor("layer", 8, LiteFocusConfig(), samples, fallback=None)


def test_cuda_copy_is_pinned_and_non_blocking(monkeypatch):
    calls = []
    real_to = torch.Tensor.to

    def pin_memory(self):  # noqa: ANN001, ANN202
        calls.append("pin_memory")
        return self

    def to(self, *args, **kwargs):  # noqa: ANN001, ANN202
        device = kwargs.get("device")
        if device is not None and torch.device(device).type == "cuda":
            calls.append(("to cuda", kwargs.get("non_blocking", False)))
            return real_to(self, dtype=kwargs.get("dtype"))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    monkeypatch.setattr(torch.Tensor, "to", to)
    index = processor(RandomSamples(0.1, seed=0)).sample_index(80, torch.device("cuda"))
    assert calls == ["pin_memory", ("to cuda", True)]
    assert index.dtype == torch.int64 and index.shape == (8,)


def test_cpu_keeps_the_sample_as_drawn():
    sample = np.array([3, 1, 4], dtype=np.int64)
    index = processor(QueuedSamples({"layer": [sample]})).sample_index(80, torch.device("cpu"))
    assert index.dtype == torch.int64 and index.tolist() == [3, 1, 4]


def test_device_tensors_pass_through_uncopied():
    """A source that returns the device tensor (CUDA-graph staging) gets it back as is."""
    staged = torch.tensor([5, 6], dtype=torch.int64)
    assert processor(lambda layer, n: staged).sample_index(80, torch.device("cpu")) is staged
