"""``litefocus-export device-check kernel`` (Triton's interpreter on CPU) and ``tensorrt`` (without TensorRT)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def device_check(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "litefocus_export.cli", "device-check", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def test_kernel_cpu_smoke_checks_and_times_the_kernel():
    proc = device_check("kernel", "--cpu-smoke")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FAIL" not in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| fused Triton kernel |")]
    assert [row.split(" | ")[1] for row in rows] == ["fp16", "fp32"]


def test_tensorrt_without_tensorrt_is_skipped_with_a_line():
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed")
    proc = device_check("tensorrt", timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "TensorRT not installed: skipped the engine build"


@pytest.mark.parametrize("args", [["nope"], ["kernel", "--no-such-flag"]])
def test_bad_check_or_option_exits_2(args):
    proc = device_check(*args, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
