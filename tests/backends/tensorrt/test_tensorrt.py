"""The TensorRT backend on CPU, without tensorrt: profiles, config objects, errors, and the build call chain
against a fake ``tensorrt`` module (what a GPU machine runs is scripts/device_check.sh)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import polygraphy.backend.trt as poly_trt
import pytest
from litefocus_export.plugins.tensorrt import dual_sparse_attention_plugin as plugin
from onnx import TensorProto, helper
from polygraphy.backend.trt import util as poly_trt_util
from polygraphy.exception import PolygraphyException

from litefocus_export.backends.tensorrt import builder as backend
from litefocus_export.backends.tensorrt import runner as runner
from litefocus_export.backends.tensorrt import shape_profiles, support
from litefocus_export.core.durations import DurationProfile
from litefocus_export.core.errors import BuildError, EngineError, UsageError

LITEFOCUS = {"same_frequency": True, "cross_frequency": True, "sparse_ratio": 0.1, "levels": [8], "seed": 0}
LAYERS = [{"name": f"layer{i}", "level": 1, "width": 8} for i in range(20)]


def unet_inputs(lm_dim: int, text_dim: int) -> dict:
    """The export manifest's UNet input descriptions (export/unet.py ``describe_input``, after JSON)."""
    def desc(dtype, shape):
        return {"dtype": dtype, "shape": shape,
                "dynamic_axes": {str(i): d for i, d in enumerate(shape) if isinstance(d, str)}}

    return {
        "sample": desc("float32", ["batch", 8, "latent_frames", 16]),
        "timestep": desc("float32", ["batch"]),
        "encoder_hidden_states": desc("float32", ["batch", "lm_tokens", lm_dim]),
        "encoder_hidden_states_1": desc("float32", ["batch", "text_tokens", text_dim]),
        "encoder_attention_mask_1": desc("int64", ["batch", "text_tokens"]),
        "litefocus_index_8": desc("int64", [20, "batch", "samples_8"]),
    }


TINY, REAL = unet_inputs(32, 48), unet_inputs(768, 1024)


class TestProfileShapes:
    @pytest.mark.parametrize("inputs", [TINY, REAL], ids=["tiny", "real"])
    @pytest.mark.parametrize(("seconds", "frames", "samples"), [(10, (25, 250, 250), (10, 100, 100)),
                                                                 (80, (25, 2000, 2000), (10, 800, 800))])
    def test_audioldm2_unet(self, inputs, seconds, frames, samples):
        latent = DurationProfile.for_seconds(seconds).latent_frames()
        assert latent == frames
        shapes = shape_profiles.profile_shapes("unet", inputs, latent, litefocus=LITEFOCUS, layers=LAYERS)
        lm_dim, text_dim = inputs["encoder_hidden_states"]["shape"][2], inputs["encoder_hidden_states_1"]["shape"][2]
        low, opt, high = frames
        assert shapes["sample"] == ((1, 8, low, 16), (2, 8, opt, 16), (2, 8, high, 16))
        assert shapes["timestep"] == ((1,), (2,), (2,))
        assert shapes["encoder_hidden_states"] == ((1, 8, lm_dim), (2, 8, lm_dim), (2, 8, lm_dim))
        assert shapes["encoder_hidden_states_1"] == ((1, 1, text_dim), (2, 64, text_dim), (2, 512, text_dim))
        assert shapes["encoder_attention_mask_1"] == ((1, 1), (2, 64), (2, 512))
        # M = floor(0.1 * ceil(T / 2) * 8): 25 -> 13 * 8 = 104 -> 10, 250 -> 1000 -> 100, 2000 -> 8000 -> 800
        # one sample per batch row (docs/design.md §2): the index's batch axis has the batch range
        assert shapes["litefocus_index_8"] == tuple((20, b, m) for b, m in zip((1, 2, 2), samples))
        assert list(shapes) == list(inputs)

    def test_level_from_latent_width_without_layers(self):
        with_layers = shape_profiles.profile_shapes("unet", TINY, (25, 250, 2000), litefocus=LITEFOCUS, layers=LAYERS)
        assert shape_profiles.profile_shapes("unet", TINY, (25, 250, 2000), litefocus=LITEFOCUS) == with_layers

    def test_layers_decide_the_level(self):
        inputs = {"litefocus_index_4": {"dtype": "int64", "shape": [2, "batch", "samples_4"]}}
        layers = [{"level": 2, "width": 4}] * 2
        shapes = shape_profiles.profile_shapes("unet", inputs, (25, 250, 2000), litefocus={"sparse_ratio": 0.25},
                                        layers=layers)
        # level 2: ceil(ceil(T / 2) / 2) frames x 4 bins, a quarter of them
        assert shapes["litefocus_index_4"] == ((2, 1, 7), (2, 2, 63), (2, 2, 500))

    def test_odd_lengths_and_zero_samples(self):
        shapes = shape_profiles.profile_shapes("unet", TINY, (1, 3, 7), litefocus={"sparse_ratio": 0.0}, layers=LAYERS)
        assert shapes["litefocus_index_8"] == ((20, 1, 0), (20, 2, 0), (20, 2, 0))
        shapes = shape_profiles.profile_shapes("unet", TINY, (1, 3, 7), litefocus={"sparse_ratio": 1.0}, layers=LAYERS)
        assert shapes["litefocus_index_8"] == ((20, 1, 8), (20, 2, 16), (20, 2, 32))

    def test_batch(self):
        fixed = shape_profiles.profile_shapes("unet", TINY, (25, 250, 250), batch=(2, 2, 2), litefocus=LITEFOCUS)
        assert fixed["sample"][0] == (2, 8, 25, 16)
        single = shape_profiles.profile_shapes("vae_decoder", {"latents": {"shape": ["batch", 8, "latent_frames", 16]}},
                                        (25, 250, 250), batch=1)
        assert single["latents"] == ((1, 8, 25, 16), (1, 8, 250, 16), (1, 8, 250, 16))

    def test_decoder_stages(self):
        vae = shape_profiles.profile_shapes("vae_decoder", {"latents": {"shape": ["batch", 8, "latent_frames", 16]}},
                                     (25, 250, 2000))
        assert vae["latents"] == ((1, 8, 25, 16), (2, 8, 250, 16), (2, 8, 2000, 16))
        vocoder = shape_profiles.profile_shapes("vocoder", {"mel": {"shape": ["batch", 1, "mel_frames", 64]}},
                                         (25, 250, 2000))
        assert vocoder["mel"] == ((1, 1, 100, 64), (2, 1, 1000, 64), (2, 1, 8000, 64))

    def test_text_stages(self):
        tokens = {name: {"shape": ["batch", "text_tokens"]} for name in ("input_ids", "attention_mask")}
        shapes = shape_profiles.profile_shapes("text_encoder_2", tokens, (25, 250, 250), text_tokens=(1, 32, 128))
        assert shapes["input_ids"] == shapes["attention_mask"] == ((1, 1), (2, 32), (2, 128))
        lm = shape_profiles.profile_shapes("language_model", {"inputs_embeds": {"shape": ["batch", "lm_tokens", 768]}},
                                    (25, 250, 250))
        # the prompt is text + 5 tokens (SOS/EOS around CLAP and T5) and grows by up to 7 while generating 8
        assert lm["inputs_embeds"] == ((1, 6, 768), (2, 72, 768), (2, 524, 768))

    def test_text_token_ranges_from_tokenizers(self, tmp_path):
        for folder, limit in (("tokenizer", 77), ("tokenizer_2", 128)):
            (tmp_path / folder).mkdir()
            (tmp_path / folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": limit}))
        ranges = shape_profiles.text_token_ranges(tmp_path)
        assert ranges["text_encoder"] == (1, 77, 77)  # CLAP pads to its maximum
        assert ranges["unet"] == ranges["text_encoder_2"] == ranges["language_model"] == (1, 64, 128)
        (tmp_path / "tokenizer_2" / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1e30}))
        assert shape_profiles.text_token_ranges(tmp_path, opt=600)["projection_model"] == (1, 512, 512)
        assert shape_profiles.text_token_ranges(tmp_path / "absent") == {}

    def test_dims_extend_and_override(self):
        inputs = {"x": {"shape": ["batch", "custom", "latent_frames"]}}
        dims = {"custom": (3, 4, 5), "latent_frames": [1, 1, 9]}
        shapes = shape_profiles.profile_shapes("s", inputs, (25, 250, 250), dims=dims)
        assert shapes["x"] == ((1, 3, 1), (2, 4, 1), (2, 5, 9))

    @pytest.mark.parametrize(("inputs", "kwargs", "message"), [
        ({"x": {"dtype": "float32", "dynamic_axes": {"0": "batch"}}}, {}, "input x has no 'shape'"),
        ({"x": {"shape": ["batch", "mystery"]}}, {}, r"no profile range for dimension 'mystery' \(axis 1 of x\)"),
        (TINY, {"litefocus": None}, "samples_8 needs the LiteFocus settings"),
        ({"i": {"shape": [2, "samples_5"]}}, {"litefocus": LITEFOCUS}, "which UNet level is 5 bins wide"),
        (TINY, {"frames": (250, 25, 250)}, "frames must be"),
        (TINY, {"batch": 0}, "batch must be"),
        (TINY, {"text_tokens": (1, 2)}, "text_tokens must be"),
    ])
    def test_errors(self, inputs, kwargs, message):
        frames = kwargs.pop("frames", (25, 250, 250))
        kwargs.setdefault("litefocus", LITEFOCUS)
        with pytest.raises(BuildError, match=message):
            shape_profiles.profile_shapes("unet", inputs, frames, **kwargs)


class TestPolygraphyObjects:
    def test_profile(self):
        shapes = shape_profiles.profile_shapes("unet", REAL, (25, 2000, 2000), litefocus=LITEFOCUS, layers=LAYERS)
        profile = shape_profiles.trt_profile(shapes)
        assert list(profile) == list(REAL)
        assert profile["sample"].min == (1, 8, 25, 16)
        assert profile["sample"].opt == profile["sample"].max == (2, 8, 2000, 16)
        assert tuple(profile["litefocus_index_8"]) == ((20, 1, 10), (20, 2, 800), (20, 2, 800))

    def test_create_config(self, tmp_path):
        shapes = shape_profiles.profile_shapes("unet", TINY, (25, 250, 250), litefocus=LITEFOCUS)
        config = shape_profiles.create_config(shapes, precision="fp16", timing_cache=tmp_path / "absent.cache",
                                       optimization_level=5)
        assert config.fp16 and not config.tf32 and config.builder_optimization_level == 5
        assert config.timing_cache_path is None  # a missing cache is created by the build, not loaded
        assert config.profiles[0]["timestep"].max == (2,)
        cache = tmp_path / "timing.cache"
        cache.write_bytes(b"x")
        config = shape_profiles.create_config(shapes, precision="fp32", timing_cache=cache)
        assert not config.fp16 and config.timing_cache_path == str(cache) and config.builder_optimization_level == 3
        with pytest.raises(UsageError, match="precision must be fp32 or fp16"):
            shape_profiles.create_config(shapes, precision="int8")


class TestRequireTensorRT:
    @pytest.mark.parametrize(("impl", "version"), [("plugin", "10.9"), ("native", "10.0")])
    def test_not_installed(self, monkeypatch, impl, version):
        monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
        expected = (f"the tensorrt backend needs TensorRT >= {version} and an NVIDIA GPU: tensorrt is not installed "
                    f"here (pip install 'litefocus-export[gpu]')")
        with pytest.raises(BuildError) as caught:
            support.require_tensorrt(impl, error=BuildError)
        assert str(caught.value) == expected and "\n" not in expected
        with pytest.raises(BuildError, match="not installed"):
            backend.tensorrt_backend_info(impl)

    def test_too_old_for_the_plugin(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.8.0.43"))
        monkeypatch.setattr(support, "cuda_devices", lambda: [("GPU", "sm_90")])
        with pytest.raises(BuildError, match=r"plugin: found TensorRT 10\.8\.0\.43 \(pip install -U 'tensorrt>=10\.9'"):
            support.require_tensorrt("plugin", error=BuildError)
        assert support.require_tensorrt("native", error=BuildError).__version__ == "10.8.0.43"

    def test_no_gpu(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.13.0"))
        monkeypatch.setattr(support, "cuda_devices", lambda: [])
        with pytest.raises(BuildError, match="no CUDA device is visible here"):
            support.require_tensorrt(error=BuildError)

    def test_bad_impl(self):
        with pytest.raises(UsageError, match="attention_impl must be plugin or native"):
            support.require_tensorrt("fast", error=BuildError)

    def test_runtime_raises_engine_error(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "tensorrt", None)
        with pytest.raises(EngineError, match="tensorrt is not installed here"):
            runner.TrtStage("missing.plan")



# --- the build call chain against a fake tensorrt ----------------------------------------------------
AOT_FLAG = 7


class FakeParser:
    error = None  # a test sets one to make parsing fail

    def __init__(self, network, logger):
        self.network, self.calls = network, network.calls
        self.num_errors = int(self.error is not None)

    def get_error(self, index):
        return self.error

    def parse_from_file(self, path):
        self.calls.append(("parse_from_file", path))
        return self.error is None

    def parse(self, model_bytes, path):
        self.calls.append(("parse", model_bytes, path))
        return True


class FakeNetwork:
    def __init__(self, flags, calls, inputs):
        self.flags, self.calls, self.names = flags, calls, inputs
        self.num_inputs = len(inputs)

    def get_input(self, index):
        return types.SimpleNamespace(name=self.names[index])


def fake_tensorrt(calls: list, inputs: list[str]) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.13.0.35"
    trt.QuickPluginCreationRequest = object
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(PREFER_AOT_PYTHON_PLUGINS=AOT_FLAG)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            calls.append(("create_network", flags))
            return FakeNetwork(flags, calls, inputs)

    trt.Builder, trt.OnnxParser = Builder, FakeParser
    trt.init_libnvinfer_plugins = lambda logger, namespace: None
    return trt


def save_model(path: Path, *, litefocus: bool, namespace: bool = True) -> Path:
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    if litefocus:
        attrs = {"freq_bins": 8, "scale": 0.5, "same_frequency": 1, "cross_frequency": 1}
        if namespace:
            attrs["plugin_namespace"] = plugin.PLUGIN_NAMESPACE
        node = helper.make_node(plugin.PLUGIN_NAME, ["y", "y", "y", "i"], ["z"], domain=plugin.ONNX_DOMAIN)
        node.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())  # in the plugin's order
        nodes.append(node)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4]),
                                           helper.make_tensor_value_info("i", TensorProto.INT64, ["m"])],
                              [helper.make_tensor_value_info("z" if litefocus else "y", TensorProto.FLOAT, ["b", 4])])
    onnx.save(helper.make_model(graph), path)
    return path


@pytest.fixture
def fake_build(monkeypatch):
    """A fake tensorrt plus recorders for plugin registration and polygraphy's engine build."""
    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(calls, ["x", "i"]))
    monkeypatch.setattr(support, "cuda_devices", lambda: [("NVIDIA H100 80GB HBM3", "sm_90")])
    monkeypatch.setattr(backend, "cuda_devices", lambda: [("NVIDIA H100 80GB HBM3", "sm_90")])
    monkeypatch.setattr(plugin, "register_plugins", lambda: calls.append(("register_plugins",)))
    monkeypatch.setattr(poly_trt_util, "get_trt_logger", lambda: "logger")

    def engine_bytes_from_network(network, config, save_timing_cache):
        calls.append(("build", network, config, save_timing_cache))
        return b"PLAN"

    monkeypatch.setattr(poly_trt, "engine_bytes_from_network", engine_bytes_from_network)
    return calls


SHAPES = {"x": ((1, 4), (2, 4), (2, 4)), "i": ((0,), (5,), (9,)), "unused": ((1,), (1,), (1,))}


class TestTrtEngineFromOnnx:
    def test_constructor_does_no_work(self, monkeypatch, tmp_path):
        monkeypatch.setitem(sys.modules, "tensorrt", None)
        step = backend.TrtEngineFromOnnx(tmp_path / "missing.onnx", tmp_path / "out.plan", SHAPES, precision="fp16",
                                         timing_cache=None, attention_impl="plugin")
        assert step.precision == "fp16" and not (tmp_path / "out.plan").exists()

    def test_plugin(self, fake_build, tmp_path):
        model = save_model(tmp_path / "unet.onnx", litefocus=True)
        cache = tmp_path / "cache" / "timing.cache"
        out = backend.TrtEngineFromOnnx(model, tmp_path / "e" / "unet.plan", SHAPES, precision="fp16",
                                        timing_cache=cache, attention_impl="plugin", optimization_level=4)()
        assert out.read_bytes() == b"PLAN" and [p.name for p in out.parent.iterdir()] == ["unet.plan"]
        names = [c[0] for c in fake_build]
        assert names == ["register_plugins", "create_network", "parse_from_file", "build"]
        assert fake_build[1] == ("create_network", 1 << AOT_FLAG)
        assert fake_build[2][1] == str(model.resolve())
        _, network, config, saved = fake_build[3]
        assert network[1].flags == 1 << AOT_FLAG and saved == str(cache) and cache.parent.is_dir()
        assert config.fp16 and config.builder_optimization_level == 4 and config.timing_cache_path is None
        profile = {name: tuple(shapes) for name, shapes in config.profiles[0].items()}
        assert profile == {"x": SHAPES["x"], "i": SHAPES["i"]}  # network inputs only

    def test_native_parses_the_function_body(self, fake_build, tmp_path):
        model = save_model(tmp_path / "unet.onnx", litefocus=True)
        backend.TrtEngineFromOnnx(model, tmp_path / "unet.plan", SHAPES, attention_impl="native")()
        names = [c[0] for c in fake_build]
        assert names == ["create_network", "parse", "build"]  # no plugin registration, no AOT flag
        assert fake_build[0] == ("create_network", 0)
        parsed = onnx.load_from_string(fake_build[1][1])
        node = next(n for n in parsed.graph.node if n.op_type == plugin.PLUGIN_NAME)
        assert [a.name for a in node.attribute] == list(plugin.PLUGIN_ATTRIBUTES)
        assert fake_build[1][2] == str(model.resolve())  # external weights resolve next to the original
        assert not fake_build[2][2].fp16

    def test_stage_without_the_op_ignores_plugin(self, fake_build, tmp_path):
        model = save_model(tmp_path / "vocoder.onnx", litefocus=False)
        backend.TrtEngineFromOnnx(model, tmp_path / "vocoder.plan", SHAPES, attention_impl="plugin")()
        assert [c[0] for c in fake_build] == ["create_network", "parse_from_file", "build"]
        assert fake_build[0] == ("create_network", 0)

    def test_plugin_needs_the_namespace_attribute(self, fake_build, tmp_path):
        model = save_model(tmp_path / "unet.onnx", litefocus=True, namespace=False)
        with pytest.raises(BuildError, match="lack plugin_namespace='litefocus'"):
            backend.TrtEngineFromOnnx(model, tmp_path / "unet.plan", SHAPES, attention_impl="plugin")()

    def test_missing_profile_input(self, fake_build, tmp_path):
        model = save_model(tmp_path / "unet.onnx", litefocus=False)
        with pytest.raises(BuildError, match="no profile shapes for input i"):
            backend.TrtEngineFromOnnx(model, tmp_path / "unet.plan", {"x": SHAPES["x"]})()

    def test_build_failure_is_one_line(self, fake_build, tmp_path, monkeypatch):
        def fail(*args, **kwargs):
            raise PolygraphyException("Invalid Engine. Please ensure the engine was built correctly\nmore")

        monkeypatch.setattr(poly_trt, "engine_bytes_from_network", fail)
        model = save_model(tmp_path / "unet.onnx", litefocus=False)
        with pytest.raises(BuildError, match=r"could not build unet.onnx: Invalid Engine. Please ensure the engine "
                                             r"was built correctly$"):
            backend.TrtEngineFromOnnx(model, tmp_path / "unet.plan", SHAPES)()
        assert not list(tmp_path.glob("*.plan*")) and not list(tmp_path.glob(".unet.plan*"))

    def test_parse_failure(self, fake_build, tmp_path, monkeypatch):
        error = types.SimpleNamespace(desc=lambda: "No importer registered for op: Foo\ndetails", node=lambda: 3,
                                      node_name=lambda: "foo_3", node_operator=lambda: "Foo")
        monkeypatch.setattr(FakeParser, "error", error)
        model = save_model(tmp_path / "unet.onnx", litefocus=False)
        with pytest.raises(BuildError, match=r"could not parse unet.onnx: No importer registered for op: Foo "
                                             r"\(node foo_3 Foo\)$"):
            backend.TrtEngineFromOnnx(model, tmp_path / "unet.plan", SHAPES)()

    def test_backend_info(self, fake_build):
        info = backend.tensorrt_backend_info("plugin")
        assert info == {"name": "tensorrt", "version": "10.13.0.35", "device": "NVIDIA H100 80GB HBM3",
                        "architecture": "sm_90", "attention_impl": "plugin", "min_version": "10.9",
                        "plugin_id": "litefocus::DualSparseAttention", "plugin_hash": plugin.plugin_hash()}
        native = backend.tensorrt_backend_info("native")
        assert native["min_version"] == "10.0" and "plugin_hash" not in native


# --- the runtime stage against fake engines ----------------------------------------------------------
class FakeEngine:
    def __init__(self):
        self.io = {"x": "INPUT", "i": "INPUT", "y": "OUTPUT"}
        self.num_io_tensors = len(self.io)

    def get_tensor_name(self, index):
        return list(self.io)[index]

    def get_tensor_mode(self, name):
        return self.io[name]

    def get_tensor_profile_shape(self, name, profile):
        return {"x": [(1, 4), (2, 4), (2, 4)], "i": [(0,), (5,), (9,)]}[name]


class FakeRunner:
    def __init__(self, engine, name=None):
        self.is_active, self.buffer = False, np.zeros((2, 4), np.float32)

    def activate(self):
        self.is_active = True

    def deactivate(self):
        self.is_active = False

    def get_input_metadata(self, use_numpy_dtypes=None):
        meta = {"x": np.float32, "i": np.int64}
        dtype = lambda value: types.SimpleNamespace(numpy=lambda: np.dtype(value))  # noqa: E731 - polygraphy DataType
        return {name: types.SimpleNamespace(dtype=dtype(value)) for name, value in meta.items()}

    def infer(self, feeds):
        self.fed = feeds
        self.buffer[: feeds["x"].shape[0]] = feeds["x"] + 1
        return {"y": self.buffer[: feeds["x"].shape[0]]}


@pytest.fixture
def fake_runtime(monkeypatch, tmp_path):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.13.0.35"
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(support, "cuda_devices", lambda: [("GPU", "sm_90")])
    monkeypatch.setattr(poly_trt, "TrtRunner", FakeRunner)
    state = {"loads": 0, "fail_first": False, "registered": 0}

    def engine_from_bytes(data):
        state["loads"] += 1
        if state["fail_first"] and state["loads"] == 1:
            raise PolygraphyException("Could not deserialize engine. See log for details.")
        return FakeEngine()

    monkeypatch.setattr(poly_trt, "engine_from_bytes", engine_from_bytes)
    monkeypatch.setattr(plugin, "register_plugins", lambda: state.__setitem__("registered", state["registered"] + 1))
    path = tmp_path / "unet.plan"
    path.write_bytes(b"PLAN")
    return path, state


class TestTrtStage:
    def test_feeds_and_outputs(self, fake_runtime):
        path, state = fake_runtime
        with runner.TrtStage(path) as stage:
            out = stage({"x": np.ones((2, 4), np.float64), "i": [1, 2, 3], "extra": np.zeros(3)})
            assert set(stage.runner.fed) == {"x", "i"}
            assert stage.runner.fed["x"].dtype == np.float32 and stage.runner.fed["i"].dtype == np.int64
            again = stage({"x": np.zeros((1, 4), np.float32), "i": np.arange(2)})
            assert np.array_equal(out["y"], np.full((2, 4), 2.0)) and np.array_equal(again["y"], np.ones((1, 4)))
        assert not stage.runner.is_active and state["registered"] == 0

    def test_profile_and_missing_inputs(self, fake_runtime):
        stage = runner.TrtStage(fake_runtime[0])
        with pytest.raises(EngineError, match=r"input i of shape \(10,\) is outside the engine's profile"):
            stage({"x": np.ones((2, 4)), "i": np.arange(10)})
        with pytest.raises(EngineError, match="input i missing"):
            stage({"x": np.ones((2, 4))})

    def test_registers_plugin_when_needed(self, fake_runtime):
        path, state = fake_runtime
        state["fail_first"] = True
        runner.TrtStage(path)
        assert state["registered"] == 1 and state["loads"] == 2

    def test_undeserializable(self, fake_runtime, monkeypatch):
        path, state = fake_runtime
        state["fail_first"] = True
        with pytest.raises(EngineError, match="could not deserialize it"):
            runner.TrtStage(path, plugins=False)
        with pytest.raises(EngineError, match="no such engine file"):
            runner.TrtStage(path.with_name("absent.plan"))
