"""Build-time memory estimate: liveness on a hand-built graph, the tiny export's stages, the build's refusal."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from litefocus_export.artifacts.manifest import read_manifest
from litefocus_export.backends.build import BuildSettings
from litefocus_export.backends.onnxruntime import memory
from litefocus_export.backends.onnxruntime.memory import (
    conv_working_bytes,
    engine_liveness,
    estimate_generation_memory,
    stage_input_shapes,
    stage_liveness,
)
from litefocus_export.cli import main
from litefocus_export.core.errors import UsageError
from litefocus_export.core.vocoder_field import VocoderField
from litefocus_export.graphs import liveness
from litefocus_export.graphs.liveness import value_types, weightless


def hand_built_model() -> onnx.ModelProto:
    """x (batch, 1000) -> Relu -> MatMul with W (1000 x 1000 weights) -> Add -> Reshape (a view) -> Concat of 3."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 500])
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("MatMul", ["a", "W"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["c"]),
        helper.make_node("Constant", [], ["shape"], value=shape),
        helper.make_node("Reshape", ["c", "shape"], ["r"]),
        helper.make_node("Concat", ["r", "r", "r"], ["y"], axis=0),
    ]
    graph = helper.make_graph(nodes, "hand", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1000])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.zeros((1000, 1000), np.float32), "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


class TestLiveness:
    @pytest.mark.parametrize("batch,peak", [(2, 40_000), (4, 80_000)])
    def test_peak_of_a_hand_built_graph(self, batch, peak):
        # At batch 2, x, a, b and c are 8000 B each; r is a view of c; y is three of c, 24000 B. Live per node:
        # Relu x+a 16000, MatMul x+a+b 24000, Add x+a+b+c 32000, Constant and Reshape x+c 16000 (a and b are
        # read for the last time by Add), Concat x+c+y 40000. x is held for the whole run (the caller's feed);
        # W's 4 MB are weights, not activations.
        liveness = stage_liveness(hand_built_model(), {"x": (batch, 1000)})
        assert (liveness.peak, liveness.node, liveness.unknown) == (peak, "Concat", ())

    def test_the_engines_fusions_are_seen(self):
        # x * sigmoid(x): the export holds x, s and y at the Mul; ORT's engine fuses the pair into one QuickGelu,
        # so only x and y are ever live
        nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])]
        graph = helper.make_graph(nodes, "silu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1000])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        as_exported = liveness.activation_peak(model.graph, liveness.value_sizes(model, {"x": (3, 1000)}))
        assert as_exported.peak == 3 * 12_000
        assert stage_liveness(model, {"x": (3, 1000)}).peak == 2 * 12_000

    def test_available_memory_falls_back_to_sysconf(self, monkeypatch, tmp_path):
        assert memory.available_memory_bytes() > 0
        monkeypatch.setattr(memory, "Path", lambda _: tmp_path / "no-meminfo")
        assert memory.available_memory_bytes() > 0


def conv_model(batch: int, channels: int, size: int, filters: int, kernel: int) -> onnx.ModelProto:
    """One Conv (padding keeps the size) of ``filters`` x ``channels`` x ``kernel`` x ``kernel`` weights."""
    weight = numpy_helper.from_array(np.zeros((filters, channels, kernel, kernel), np.float32), "W")
    node = helper.make_node("Conv", ["x", "W"], ["y"], pads=[kernel // 2] * 4, kernel_shape=[kernel, kernel])
    graph = helper.make_graph([node], "conv", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


class TestConvWorkingBuffer:
    """MLAS's working buffer per convolution (``MlasConvPrepare``) in bytes, and the peak it adds while it runs."""

    @pytest.mark.parametrize("shape,threads,expected", [
        # several images: a whole im2col matrix (4096 positions x K = 8 * 9) per thread, one per image at most
        ((2, 8, 64, 16, 3), 1, 4096 * 72 * 4),
        ((2, 8, 64, 16, 3), 2, 2 * 4096 * 72 * 4),
        ((2, 8, 64, 16, 3), 16, 2 * 4096 * 72 * 4),
        # one image: each thread holds a 128 x 128 slice
        ((1, 8, 64, 16, 3), 2, 2 * 128 * 128 * 4),
        # pointwise: the GEMM reads the input directly
        ((2, 8, 64, 16, 1), 2, 0),
        # more filters than output positions: the whole matrix once
        ((1, 8, 2, 64, 3), 4, 4 * 72 * 4),
    ])
    def test_bytes_and_peak(self, shape, threads, expected):
        batch, channels, size, filters, _ = shape
        model = conv_model(*shape)
        light, weights = weightless(model)
        types = value_types(light, {})
        assert conv_working_bytes(light.graph.node[0], types, threads) == expected
        feeds = batch * channels * size * size * 4 + batch * filters * size * size * 4  # x and y, live at the Conv
        assert stage_liveness(model, {}, threads=threads).peak == feeds + expected


@pytest.fixture(scope="module")
def tiny_export(tiny_build: Any) -> tuple[Path, dict[str, Any]]:
    _, export_dir, _ = tiny_build
    return export_dir, read_manifest(export_dir)


class TestTinyExport:
    def test_estimate_grows_with_seconds(self, tiny_export):
        export_dir, manifest = tiny_export
        short, long = (estimate_generation_memory(export_dir, manifest, s) for s in (10, 80))
        assert long.weights == short.weights and long.total > short.total
        for name in ("unet", "vae_decoder"):
            assert long.stages[name].activations > short.stages[name].activations
        assert long.total == long.weights + max(s.activations for s in long.stages.values())

    def test_every_stage_has_a_known_size_peak(self, tiny_export):
        export_dir, manifest = tiny_export
        estimate = estimate_generation_memory(export_dir, manifest, 10)
        assert set(estimate.stages) == set(manifest["stages"])
        for name, stage in estimate.stages.items():
            assert stage.liveness.unknown == (), name
            inputs = {k: np.dtype(manifest["stages"][name]["inputs"][k]["dtype"]).itemsize * math.prod(shape)
                      for k, shape in stage.inputs.items()}
            assert stage.activations >= sum(inputs.values()) > 0, name  # feeds are live for the whole run
        unet = estimate.stages["unet"]
        assert unet.inputs["sample"][0] == 2 and estimate.stages["vae_decoder"].inputs["latents"][0] == 1
        # noise_pred has the sample's shape and is live at the last node, with every feed
        inputs = sum(np.dtype(d["dtype"]).itemsize * math.prod(unet.inputs[k])
                     for k, d in manifest["stages"]["unet"]["inputs"].items())
        assert unet.activations >= inputs + 4 * math.prod(unet.inputs["sample"])

    def test_estimate_is_the_built_engines_graph(self, tiny_export, tiny_build):
        # the estimate optimises the weightless export as the builder does: its liveness equals that of the engine
        # files the build wrote, at every stage
        export_dir, manifest = tiny_export
        engines = tiny_build[0]
        shapes = stage_input_shapes(export_dir, manifest, 80)
        for name in manifest["stages"]:
            light, weights = weightless(onnx.load(str(engines / f"{name}.onnx"), load_external_data=False))
            built = engine_liveness(light, shapes[name], weights, threads=2)
            estimated = stage_liveness(export_dir / f"{name}.onnx", shapes[name], threads=2)
            assert (estimated.peak, estimated.node) == (built.peak, built.node), name

    def test_weights_are_the_stage_files(self, tiny_export):
        export_dir, manifest = tiny_export
        estimate = estimate_generation_memory(export_dir, manifest, 1)
        for name, desc in manifest["stages"].items():
            files = [f for f in manifest["files"] if f in (desc["file"], desc["file"] + ".data")]
            assert estimate.stages[name].weights == sum((export_dir / f).stat().st_size for f in files) > 0

    def test_vocoder_is_sized_at_its_chunk(self, tiny_export):
        export_dir, manifest = tiny_export

        def vocoder(seconds: float, chunk: int) -> tuple[int, int]:
            shapes = stage_input_shapes(export_dir, manifest, seconds, chunk)["vocoder"]
            return shapes["mel"][2], stage_liveness(export_dir / "vocoder.onnx", shapes).peak

        field = VocoderField.from_stage(manifest["stages"]["vocoder"])
        chunk = 1000 + field.left + field.right
        (short, short_peak), (mid, mid_peak), (long, long_peak) = (vocoder(s, 1000) for s in (5, 20, 80))
        assert (short, mid, long) == (500, chunk, chunk)
        assert short_peak < mid_peak == long_peak
        whole, whole_peak = vocoder(80, 0)  # one shot: the whole clip
        assert whole == 8000 and whole_peak > long_peak


def build_cli(*args: str) -> Any:
    return CliRunner().invoke(main, ["build", "--seconds", "80", *args])


class TestBuildCheck:
    def test_refused_in_one_line_then_built_with_skip(self, tiny_build, tmp_path, monkeypatch):
        monkeypatch.setattr(memory, "available_memory_bytes", lambda: 10**6)
        out = tmp_path / "engines"
        refused = build_cli("--out", str(out))
        assert refused.exit_code == 1
        lines = refused.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: generating 80 s needs about "), refused.output
        assert lines[0].endswith("this machine has 1 MB available; build shorter profiles or pass --skip-memory-check")
        assert not out.exists() and not [p for p in tmp_path.rglob("*") if ".partial-" in p.name]
        built = build_cli("--out", str(out), "--skip-memory-check")
        assert built.exit_code == 0, built.output
        assert read_manifest(next(out.iterdir()))["kind"] == "engine"

    @pytest.mark.parametrize("quiet", [False, True])
    def test_one_info_line_unless_quiet(self, tiny_build, quiet):
        engines, _, _ = tiny_build
        args = [*(["-q"] if quiet else []), "build", "--seconds", "80", "--out", str(engines.parent)]
        run = subprocess.run([sys.executable, "-c", "from litefocus_export.cli import main; main()", *args],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        lines = [line for line in run.stderr.splitlines() if line.startswith("memory: ")]
        if quiet:
            assert lines == []
        else:
            assert len(lines) == 1 and lines[0].startswith("memory: generating 80 s needs about "), run.stderr
            assert "this machine has" in lines[0] and lines[0].endswith(" available")

    def test_skip_memory_check_is_a_flag(self):
        with pytest.raises(UsageError, match="skip_memory_check"):
            BuildSettings(skip_memory_check="yes")
