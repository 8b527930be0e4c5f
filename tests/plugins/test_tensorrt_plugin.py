"""The TensorRT plugin module (plugins/tensorrt) on CPU, without tensorrt: hashes, errors, launch math."""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
from litefocus_export.plugins.tensorrt import dual_sparse_attention_plugin as plugin
from litefocus_export.plugins.triton import dual_sparse_attention as fused

from litefocus_export.core.errors import BuildError

REPO = Path(__file__).resolve().parents[2]


class TestPluginHash:
    def test_files(self):
        names = [f"{p.parent.name}/{p.name}" for p in plugin.plugin_files()]
        assert names == ["tensorrt/dual_sparse_attention_plugin.py", "triton/dual_sparse_attention.py"]
        assert all(p.is_file() for p in plugin.plugin_files())

    def test_stable_and_hex(self):
        digest = plugin.plugin_hash()
        assert digest == plugin.plugin_hash() and len(digest) == 64 and int(digest, 16) >= 0

    def test_independent_of_install_location(self, tmp_path):
        copies = []
        for source in plugin.plugin_files():
            target = tmp_path / "elsewhere" / source.parent.name / source.name
            target.parent.mkdir(parents=True)
            copies.append(Path(shutil.copy(source, target)))
        assert plugin.plugin_hash(copies) == plugin.plugin_hash()
        copies[1].write_text(copies[1].read_text() + "\n# changed\n")
        assert plugin.plugin_hash(copies) != plugin.plugin_hash()


class TestTensorRTRequired:
    def test_missing(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
        monkeypatch.setattr(plugin, "_registered", False)
        with pytest.raises(BuildError, match=r"tensorrt is not installed \(need >= 10\.9\)"):
            plugin.register_plugins()
        with pytest.raises(BuildError, match="not installed"):
            plugin.network_creation_flags()

    def test_too_old(self, monkeypatch):
        old = types.ModuleType("tensorrt")
        old.__version__ = "10.8.0.43"
        monkeypatch.setitem(sys.modules, "tensorrt", old)
        monkeypatch.setattr(plugin, "_registered", False)
        with pytest.raises(BuildError, match=r"tensorrt 10\.8\.0\.43 is too old, need >= 10\.9"):
            plugin.register_plugins()

    @pytest.mark.parametrize(
        ("version", "parsed"),
        [("10.9.0.34", (10, 9, 0, 34)), ("11.0.0rc1", (11, 0, 0)), ("10.15.1+cu13", (10, 15, 1)), ("x", ())],
    )
    def test_version_tuple(self, version, parsed):
        assert plugin.version_tuple(version) == parsed



class TestAttributes:
    def test_valid(self):
        plugin.check_attributes(8, 32**-0.5, 1, 0)

    @pytest.mark.parametrize(
        "values",
        [(32**-0.5, 8, 1, 1), (8, 0.17, 2, 1), (0, 0.17, 1, 1), (8, 1, 1, 1)],
        ids=["swapped", "flag-not-bool", "no-bins", "int-scale"],
    )
    def test_wrong_kind_or_order(self, values):
        with pytest.raises(BuildError, match="freq_bins, scale, same_frequency, cross_frequency"):
            plugin.check_attributes(*values)

    def test_both_flags_off(self):
        with pytest.raises(BuildError, match="both off"):
            plugin.check_attributes(8, 0.17, 0, 0)

    def test_plugin_identity(self):
        assert plugin.PLUGIN_ID == "litefocus::DualSparseAttention" and "." not in plugin.PLUGIN_NAMESPACE
        assert plugin.ONNX_DOMAIN == "ai.litefocus"


class TestAotLaunch:
    @pytest.mark.parametrize("per_row", [False, True], ids=["(M,)", "(B, M)"])
    @pytest.mark.parametrize(("shape", "samples"), [((2, 8, 8000, 32), 800), ((1, 2, 27, 40), 0)])
    def test_matches_the_pytorch_launcher(self, shape, samples, per_row):
        """The symbolic AOT launch, evaluated on ints, is what the launcher passes for contiguous tensors,
        for one shared sample and for one sample per batch row."""
        bins = 8 if shape[2] == 8000 else 3
        config = fused.block_config(shape[3], "fp16")
        index_shape = (shape[0], samples) if per_row else (samples,)
        grid, args = plugin.aot_launch(shape, index_shape, bins, config.block_t, fused.triton.cdiv, fused)
        q = torch.empty(shape)
        expected = fused.torch_scalar_args((q, q, q, q), samples, bins, samples if per_row else 0)
        del expected[8::4]  # the head-dim strides, compiled into the AOT kernel
        assert args == expected
        assert grid == fused.launch_grid(shape, bins, config.block_t)
        assert grid == (-(-(shape[2] // bins) // config.block_t), bins, shape[0] * shape[1])

    def test_cuda_array_interface(self):
        desc = plugin.cuda_array_interface(4096, (2, 8, 16, 32), (4096, 512, 32, 1), "BF16")
        assert desc["typestr"] == "<i2" and desc["strides"] == (8192, 1024, 64, 2)
        assert desc["data"] == (4096, False) and desc["version"] == 3
        assert plugin.cuda_array_interface(0, (5,), (1,), "INT64")["strides"] == (8,)
