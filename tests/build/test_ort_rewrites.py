"""ORT engine rewrites: each fires on its pattern, leaves look-alikes alone, and keeps the outputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from litefocus_export.build.ort_rewrites import (
    fuse_erf_gelu,
    fuse_softmax_attention,
    rewrite_for_onnxruntime,
    split_sequences_to_slices,
)

F32 = onnx.TensorProto.FLOAT


def make_model(nodes: list[onnx.NodeProto], inputs: dict[str, list], outputs: list[str],
               initializers: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, F32, s) for n, s in inputs.items()],
                              [helper.make_tensor_value_info(n, F32, None) for n in outputs],
                              [numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def rewritten_matches(model: onnx.ModelProto, rewrite, feeds: dict[str, np.ndarray], tol: float = 1e-5) -> int:
    """Apply ``rewrite`` to a copy; assert the outputs are unchanged; return how often it fired."""
    before = run(model, feeds)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    fired = rewrite(copy)
    for want, got in zip(before, run(copy, feeds)):
        assert np.abs(want - got).max() <= tol * max(np.abs(want).max(), 1e-6)
    return fired


def attention_model(x_shape: list, y_shape: list, mask: bool = False) -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "y"], ["scores"])]
    if mask:
        nodes.append(helper.make_node("Add", ["scores", "mask"], ["masked"]))
    nodes += [helper.make_node("Softmax", ["masked" if mask else "scores"], ["weights"], axis=-1),
              helper.make_node("MatMul", ["weights", "v"], ["out"])]
    inputs = {"x": x_shape, "y": y_shape, "v": ["B", 3, 7, 5]}
    return make_model(nodes, {**inputs, "mask": [7]} if mask else inputs, ["out"])


def attention_feeds(x_shape: tuple, y_shape: tuple, mask: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal(x_shape), "y": rng.standard_normal(y_shape),
             "v": rng.standard_normal((2, 3, 7, 5))}
    if mask:
        feeds["mask"] = np.where(np.arange(7) < 5, 0.0, -1e4)
    return {k: v.astype(np.float32) for k, v in feeds.items()}


def test_unmasked_attention_becomes_multihead_attention():
    model = attention_model(["B", 3, "S", 5], ["B", 3, 5, 7])
    assert rewritten_matches(model, fuse_softmax_attention, attention_feeds((2, 3, 6, 5), (2, 3, 5, 7))) == 1


@pytest.mark.parametrize("case", ["masked", "broadcast keys", "rank 3", "unknown shape", "weights read outside"])
def test_attention_look_alikes_are_left_alone(case):
    x, y, mask = ["B", 3, "S", 5], ["B", 3, 5, 7], False
    if case == "masked":
        mask = True
    elif case == "broadcast keys":
        y = [1, 3, 5, 7]  # folding batch would pair queries with the wrong keys
    elif case == "rank 3":
        x, y = ["B", "S", 5], ["B", 5, 7]
    else:
        x = None
    model = attention_model(x, y, mask)
    if case == "weights read outside":
        model.graph.output.append(helper.make_tensor_value_info("weights", F32, None))
    if case == "rank 3":
        model.graph.input[2].CopyFrom(helper.make_tensor_value_info("v", F32, ["B", 7, 5]))
        assert fuse_softmax_attention(model) == 0
        return
    feeds = attention_feeds((2, 3, 6, 5), tuple(d if isinstance(d, int) else 2 for d in y), mask)
    assert rewritten_matches(model, fuse_softmax_attention, feeds) == 0


def split_model(index_input: bool = False) -> onnx.ModelProto:
    const = lambda name, value: helper.make_node("Constant", [], [name], value=numpy_helper.from_array(  # noqa: E731
        np.array(value, np.int64), name))
    nodes = [const("size", 4), helper.make_node("SplitToSequence", ["x", "size"], ["seq"], axis=-1),
             const("first", 0),
             helper.make_node("SequenceAt", ["seq", "first"], ["a"]),
             helper.make_node("SequenceAt", ["seq", "i" if index_input else "second"], ["b"])]
    if not index_input:
        nodes.insert(3, const("second", 2))
    inputs = [helper.make_tensor_value_info("x", F32, [2, 10])]
    if index_input:
        inputs.append(helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []))
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(n, F32, None) for n in ("a", "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_split_to_sequence_becomes_slices_including_a_short_last_chunk():
    x = np.arange(20, dtype=np.float32).reshape(2, 10)
    model = split_model()
    assert run(model, {"x": x})[1].shape == (2, 2)  # chunk 2 of size 4 over 10 columns: the last 2
    assert rewritten_matches(model, split_sequences_to_slices, {"x": x}) == 1


def test_split_to_sequence_with_a_runtime_index_is_left_alone():
    feeds = {"x": np.ones((2, 10), np.float32), "i": np.array(1, np.int64)}
    assert rewritten_matches(split_model(index_input=True), split_sequences_to_slices, feeds) == 0


def gelu_model(half: float = 0.5, swap: bool = False) -> onnx.ModelProto:
    nodes = [helper.make_node("Div", ["x", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["one", "e"] if swap else ["e", "one"], ["a"]),
             helper.make_node("Mul", ["a", "half"] if swap else ["half", "a"], ["h"]),
             helper.make_node("Mul", ["h", "x"] if swap else ["x", "h"], ["out"])]
    consts = {"sqrt2": np.array(2 ** 0.5, np.float32), "one": np.array(1.0, np.float32),
              "half": np.array(half, np.float32)}
    return make_model(nodes, {"x": [3, 8]}, ["out"], consts)


@pytest.mark.parametrize("swap", [False, True])
def test_erf_gelu_becomes_one_gelu(swap):
    x = np.linspace(-4, 4, 24, dtype=np.float32).reshape(3, 8)
    model = gelu_model(swap=swap)
    assert rewritten_matches(model, fuse_erf_gelu, {"x": x}, tol=1e-6) == 1


def test_gelu_look_alike_is_left_alone():
    x = np.linspace(-4, 4, 24, dtype=np.float32).reshape(3, 8)
    assert rewritten_matches(gelu_model(half=0.25), fuse_erf_gelu, {"x": x}) == 0


def rewritten_unet_matches(path, unet: dict, tol: float) -> dict[str, int]:
    """ORT on the exported UNet vs ORT on its rewritten copy (odd latent length); returns the rewrite counts."""
    from litefocus_export.runtime.sampler import example_unet_feeds

    model = onnx.load(str(path))
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    counts = rewrite_for_onnxruntime(rewritten)
    feeds = example_unet_feeds(unet, 27, seed=1, token_counts={"text_tokens": 7})
    (want,), (got,) = run(model, feeds), run(rewritten, feeds)
    assert np.abs(want - got).max() <= tol * np.abs(want).max()
    return counts


def test_tiny_unet_engine_rewrites_fire_and_keep_its_output(tiny_build):
    """The exported tiny UNet against its rewritten self in ORT, at an odd latent length."""
    from litefocus_export.manifest import read_manifest

    _, export_dir, _ = tiny_build
    counts = rewritten_unet_matches(export_dir / "unet.onnx", read_manifest(export_dir)["stages"]["unet"], 1e-4)
    assert all(counts.values()), counts


def test_rewritten_model_with_weights_in_a_side_file_loads(tiny_build, tmp_path, monkeypatch):
    """The path real-size UNets take (weights over the inline limit go to one .data file beside it)."""
    from litefocus_export.build import onnxruntime as ort_build

    _, export_dir, _ = tiny_build
    monkeypatch.setattr(ort_build, "WEIGHTS_INLINE_LIMIT", 0)
    path = ort_build.rewritten_model(export_dir / "unet.onnx", tmp_path)
    assert path is not None and path.with_name(path.name + ".data").stat().st_size > 0
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert any(i.name.startswith("litefocus_index") for i in session.get_inputs())
