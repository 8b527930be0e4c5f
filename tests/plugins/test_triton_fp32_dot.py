"""The fused kernel's fp32 dot precision: exact by default, TF32 only where torch allows it or a config asks.

conftest.py sets TRITON_INTERPRET=1 before this module imports the kernel. The interpreter multiplies in
numpy whatever the precision, so these tests pin which precision reaches the kernel, not TF32's accuracy
(the GPU device check measures that: litefocus-export device-check e2e, section "kernel fp32").
"""

from __future__ import annotations

import types

import pytest
import torch
from litefocus_export.plugins.triton import dual_sparse_attention as fused

from litefocus_export.attention.reference import dual_sparse_attention_reference
from litefocus_export.core.errors import UsageError


def fake_torch(matmul: str | None, global_: str = "none", legacy: str | Exception = "highest") -> types.SimpleNamespace:
    """Just what torch_fp32_dot reads: the fp32_precision settings (None: a torch without them) and the legacy one."""
    def get_float32_matmul_precision() -> str:
        if isinstance(legacy, Exception):
            raise legacy
        return legacy

    matmul_ns = types.SimpleNamespace() if matmul is None else types.SimpleNamespace(fp32_precision=matmul)
    backends = types.SimpleNamespace(cuda=types.SimpleNamespace(matmul=matmul_ns), fp32_precision=global_)
    return types.SimpleNamespace(backends=backends, get_float32_matmul_precision=get_float32_matmul_precision)


@pytest.mark.parametrize(("settings", "expected"), [
    (dict(matmul="none"), "ieee"),  # torch's defaults: exact fp32
    (dict(matmul="none", legacy="high"), "tf32"),  # torch.set_float32_matmul_precision("high")
    (dict(matmul="tf32"), "tf32"),  # torch.backends.cuda.matmul.fp32_precision = "tf32"
    (dict(matmul="ieee", legacy="medium"), "ieee"),
    (dict(matmul="none", global_="tf32"), "tf32"),  # torch.backends.fp32_precision = "tf32"
    (dict(matmul=None, legacy="highest"), "ieee"),  # a torch before fp32_precision
    (dict(matmul=None, legacy="medium"), "tf32"),
    (dict(matmul="none", legacy=RuntimeError("mixed legacy and new APIs")), "ieee"),
], ids=["default", "legacy-high", "new-tf32", "new-ieee-wins", "global-tf32", "old-highest", "old-medium", "mixed"])
def test_follows_torch_fp32_matmul_setting(monkeypatch, settings, expected):
    monkeypatch.setattr(fused, "torch", fake_torch(**settings))
    assert fused.torch_fp32_dot() == expected


def test_default_state_is_exact():
    assert fused.torch_fp32_dot() == "ieee"


def test_unknown_precision_is_a_usage_error():
    with pytest.raises(UsageError, match="fp32_dot"):
        fused.block_config(16, "fp32", fp32_dot="fp8")


class RecordingKernel:
    """Stands in for the jitted kernel: records the launch's meta-parameters."""

    def __init__(self):
        self.launches: list[dict] = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append(kwargs)


@pytest.mark.parametrize(("dtype", "config_dot", "torch_dot", "expected"), [
    (torch.float32, None, "ieee", "ieee"),
    (torch.float32, None, "tf32", "tf32"),
    (torch.float32, "tf32x3", "tf32", "tf32x3"),  # an explicit config wins over torch's setting
    (torch.float32, "ieee", "tf32", "ieee"),
    (torch.float16, "ieee", "ieee", "tf32"),  # half precision always uses tensor cores
])
def test_launch_precision(monkeypatch, dtype, config_dot, torch_dot, expected):
    kernel = RecordingKernel()
    monkeypatch.setattr(fused, "dual_sparse_attention_kernel", kernel)
    monkeypatch.setattr(fused, "torch_fp32_dot", lambda: torch_dot)
    q = torch.zeros(1, 1, 12, 16, dtype=dtype)
    config = fused.block_config(16, fused.SUPPORTED_DTYPES[dtype], fp32_dot=config_dot)
    fused.dual_sparse_attention_triton(q, q, q, torch.arange(3), freq_bins=3, config=config)
    assert kernel.launches[0]["PRECISION"] == expected


@pytest.mark.parametrize("precision", fused.FP32_DOT_PRECISIONS)
def test_every_precision_runs_in_the_interpreter(precision):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 9 * 3, 16, generator=gen) for _ in range(3))
    index = torch.tensor([0, 4, 11, 26])
    config = fused.block_config(16, "fp32", block_t=16, block_n=16, fp32_dot=precision)
    out = fused.dual_sparse_attention_triton(q, k, v, index, freq_bins=3, config=config)
    ref = dual_sparse_attention_reference(q, k, v, index, freq_bins=3)
    assert ((out - ref).abs().max() / ref.abs().max()).item() <= 1e-5
