"""``litefocus-export device-check e2e`` on CPU: the tiny model end to end under Triton's interpreter, and its
arguments.

The run routes the parity evaluation through the interpreted Triton kernel (TRITON_INTERPRET=1 in the
subprocess), so the kernel runs inside a whole UNet with a processor's strided q, k, v.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = ["--device", "cpu", "--model", "random:audioldm2-tiny", "--seconds", "1", "--steps", "1", "--repeats", "1",
        "--warmup", "1"]


def run_script(args: list[str], interpret: bool = True, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("TRITON_INTERPRET", None)
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return subprocess.run([sys.executable, "-m", "litefocus_export.cli", "device-check", "e2e", *args],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("e2e")
    return run_script([*TINY, "--out", str(out)]), out


@pytest.mark.slow  # default run <= 8 min (issue 23): the whole e2e check under the Triton interpreter: ~25 s
class TestTinyRun:
    def test_passes_and_writes_both_files(self, tiny_run):
        proc, out = tiny_run
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        results = json.loads((out / "e2e.json").read_text())
        assert results["ok"] is True and results["errors"] == []
        assert set(results) >= {"environment", "settings", "checks", "parity", "routing", "kernel_fp32", "unet",
                                "generation", "skipped", "wall_s"}
        assert all(check["passed"] for check in results["checks"].values())
        table = (out / "e2e.md").read_text()
        for heading in ("Routing", "Kernel, fp32", "One UNet evaluation", "Whole generation"):
            assert heading in table

    def test_parity_runs_the_kernel_in_every_patched_layer(self, tiny_run):
        results = json.loads((tiny_run[1] / "e2e.json").read_text())
        parity = results["parity"]
        assert parity["passed"] and finite(parity["max_rel_err"]) and parity["max_rel_err"] <= 1e-3
        assert parity["device_path"] == "fused Triton kernel"
        route = results["routing"]["parity fp32"]
        assert route["patched_layers"] == 20  # AudioLDM2's F = 8 self-attentions
        assert route["litefocus_calls"] == route["fused_kernel_calls"] == 20
        assert route["dense_form_calls"] == route["fallback_calls"] == 0

    def test_cpu_timings_take_the_dense_form(self, tiny_run):
        results = json.loads((tiny_run[1] / "e2e.json").read_text())
        route = results["routing"]["UNet fp32"]
        assert route["passed"] and route["dense_form_calls"] == route["litefocus_calls"] == 20
        assert route["host_syncs"] is None  # counted on CUDA only

    def test_unet_rows_are_finite_and_graphs_skipped_on_cpu(self, tiny_run):
        results = json.loads((tiny_run[1] / "e2e.json").read_text())
        rows = {(r["mode"], r["impl"]): r for r in results["unet"]}
        assert set(rows) == {("eager", "stock"), ("eager", "litefocus")}
        for row in rows.values():
            assert row["status"] == "ok" and finite(row["ms"]) and row["ms"] > 0 and row["peak_mb"] is None
            assert row["latent_frames"] == 25
        assert sum("cuda-graph" in s["what"] for s in results["skipped"]) == 2

    def test_generation_has_every_stage(self, tiny_run):
        results = json.loads((tiny_run[1] / "e2e.json").read_text())
        generation = results["generation"]
        assert (generation["seconds"], generation["steps"], generation["scheduler"]) == (1.0, 1, "ddim")
        for impl in ("stock", "litefocus"):
            run = generation["runs"][impl]
            for stage in ("conditioning", "unet_steps", "vae_decode", "vocoder", "end_to_end"):
                assert finite(run[f"{stage}_ms"]) and run[f"{stage}_ms"] > 0, (impl, stage)
                assert stage == "end_to_end" or f"{stage}_peak_mb" in run
            assert run["finite"] and run["waveform_samples"] == 16000
        assert all(finite(v) for v in generation["speedup"].values())
        assert finite(results["peak_rss_mb"])

    def test_kernel_fp32_rows(self, tiny_run):
        kernel = json.loads((tiny_run[1] / "e2e.json").read_text())["kernel_fp32"]
        impls = {r["impl"]: r for r in kernel["rows"]}
        for precision in ("ieee", "tf32x3", "tf32"):
            row = impls[f"fused kernel, fp32_dot={precision}"]
            assert finite(row["ms"]) and finite(row["max_rel_err"])
        assert impls["fused kernel, fp32_dot=ieee"]["max_rel_err"] <= 1e-5


def test_budget_skips_what_is_left_with_a_note(tmp_path):
    """Parity always runs; past the budget every later section is listed as skipped, and the run passes."""
    proc = run_script([*TINY, "--budget-s", "0.001", "--out", str(tmp_path)], interpret=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "e2e.json").read_text())
    assert results["parity"]["passed"] and results["parity"]["device_path"] == "dense SDPA form"
    skipped = {s["what"]: s["why"] for s in results["skipped"]}
    assert {"kernel fp32", "UNet", "generation"} <= set(skipped)
    assert all("budget" in skipped[what] for what in ("kernel fp32", "UNet", "generation"))
    assert "generation" not in results and "unet" not in results
    assert "Skipped" in (tmp_path / "e2e.md").read_text()


@pytest.mark.parametrize("args", [
    ["--seconds", "0"],
    ["--seconds", "10,-5"],
    ["--seconds", "ten"],
    ["--steps", "0"],
    ["--repeats", "x"],
    ["--dtype", "fp64"],
    ["--modes", "eager,compile"],
    ["--device", "tpu"],
    ["--generation-seconds", "10,20"],
    ["--budget-s", "-1"],
    ["--sparse-ratio", "2"],
    ["--no-such-flag"],
], ids=lambda a: " ".join(a))
def test_bad_arguments_exit_2_with_one_line(args):
    proc = run_script([*args, "--device", "cpu"] if args[0] != "--device" else args, interpret=False, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "error" in proc.stderr


def test_unknown_model_exits_2_with_one_line(tmp_path):
    proc = run_script(["--device", "cpu", "--model", "random:no-such-model", "--out", str(tmp_path)],
                      interpret=False, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "no-such-model" in proc.stderr
    assert not (tmp_path / "e2e.json").exists()


def test_cuda_without_a_gpu_exits_2(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = run_script(["--out", str(tmp_path)], interpret=False, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["litefocus-export device-check e2e: error: no CUDA device; use "
                                                "--device cpu (with --model random:audioldm2-tiny)"]


def load_script() -> Any:
    from litefocus_export.devicecheck import e2e

    return e2e


def test_staged_samples_refill_with_the_next_draws():
    """CUDA-graph samples: fixed views of one buffer, refilled with what RandomSamples draws next."""
    import torch

    from litefocus_export.attention import RandomSamples

    script = load_script()
    layout = [("a", 200), ("b", 50), ("c", 200)]
    staged = script.StagedSamples(torch, layout, RandomSamples(0.1, seed=3), script.Device(torch, "cpu"))
    views = {name: staged(name, n) for name, n in layout}
    expected = RandomSamples(0.1, seed=3)
    for round_ in range(3):  # the constructor draws once for the sizes and once to fill
        draws = {name: expected(name, n) for name, n in layout}
        if round_ >= 1:
            for name, index in draws.items():
                assert np.array_equal(views[name].numpy(), index)
                assert staged(name, 0) is views[name]
            staged.refill()
    assert [len(v) for v in views.values()] == [20, 5, 20]
