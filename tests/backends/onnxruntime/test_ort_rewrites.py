"""ORT engine rewrites: each fires on its pattern, leaves look-alikes alone, and keeps the outputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from litefocus_export.backends.onnxruntime.rewrites import (
    fuse_erf_gelu,
    rewrite_for_onnxruntime,
    split_sequences_to_slices,
)
from litefocus_export.graphs.patterns import fuse_softmax_attention

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
    after = run(copy, feeds)
    assert len(after) == len(before)
    for want, got in zip(before, after):
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


def test_chained_attention_is_fused_once_per_node():
    """``MatMul -> Softmax -> MatMul -> Softmax -> MatMul``: the middle MatMul may belong to one match only."""
    nodes = [helper.make_node("MatMul", ["x", "y"], ["s1"]), helper.make_node("Softmax", ["s1"], ["w1"], axis=-1),
             helper.make_node("MatMul", ["w1", "v"], ["s2"]), helper.make_node("Softmax", ["s2"], ["w2"], axis=-1),
             helper.make_node("MatMul", ["w2", "u"], ["out"])]
    model = make_model(nodes, {"x": ["B", 3, 6, 5], "y": ["B", 3, 5, 7], "v": ["B", 3, 7, 7], "u": ["B", 3, 7, 4]},
                       ["out"])
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal(s).astype(np.float32)
             for n, s in {"x": (2, 3, 6, 5), "y": (2, 3, 5, 7), "v": (2, 3, 7, 7), "u": (2, 3, 7, 4)}.items()}
    assert rewritten_matches(model, fuse_softmax_attention, feeds) == 1


def test_softmax_before_opset_13_is_left_alone():
    model = attention_model(["B", 3, "S", 5], ["B", 3, 5, 7])
    model.opset_import[0].version = 11  # Softmax there normalises over the flattened trailing axes
    assert fuse_softmax_attention(model) == 0


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


def test_split_to_sequence_past_the_last_chunk_is_left_alone():
    model = split_model()
    next(n for n in model.graph.node if n.output[0] == "second").attribute[0].t.CopyFrom(
        numpy_helper.from_array(np.array(3, np.int64), "second"))  # chunk 3 of size 4 over 10 columns
    assert split_sequences_to_slices(model) == 0


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


def test_dual_sparse_attention_with_shared_keys_and_values_lowers():
    """k and v one tensor (names are by role), and a zero scale (MHA reads it as 1/sqrt(D)) is kept as is."""
    from litefocus_export.attention.onnx_function import attach_function, make_node
    from litefocus_export.backends.onnxruntime.rewrites import lower_dual_sparse_attention

    def model(scale: float) -> onnx.ModelProto:
        node = make_node(["q", "kv", "kv", "idx"], "out", freq_bins=3, scale=scale, same_frequency=True,
                         cross_frequency=True)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, F32, ["B", 2, "N", 4])
                                                for n in ("q", "kv")]
                                  + [helper.make_tensor_value_info("idx", onnx.TensorProto.INT64, ["M"])],
                                  [helper.make_tensor_value_info("out", F32, None)])
        return attach_function(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))

    rng = np.random.default_rng(0)
    feeds = {"q": rng.standard_normal((2, 2, 21, 4)).astype(np.float32),
             "kv": rng.standard_normal((2, 2, 21, 4)).astype(np.float32), "idx": np.array([0, 4, 4, 20])}
    assert rewritten_matches(model(0.5), lower_dual_sparse_attention, feeds) == 1
    assert rewritten_matches(model(0.0), lower_dual_sparse_attention, feeds) == 0


def test_gelu_look_alike_is_left_alone():
    x = np.linspace(-4, 4, 24, dtype=np.float32).reshape(3, 8)
    assert rewritten_matches(gelu_model(half=0.25), fuse_erf_gelu, {"x": x}) == 0


def rewritten_unet_matches(path, unet: dict, tol: float) -> dict[str, int]:
    """ORT on the exported UNet vs ORT on its rewritten copy (odd latent length); returns the rewrite counts."""
    from litefocus_export.core.contract import example_unet_feeds

    model = onnx.load(str(path))
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    counts = rewrite_for_onnxruntime(rewritten)
    feeds = example_unet_feeds(unet["inputs"], 27, seed=1, layers=unet.get("litefocus_layers", []), sparse_ratio=0.1,
                               tokens={"text_tokens": 7})
    (want,), (got,) = run(model, feeds), run(rewritten, feeds)
    assert np.abs(want - got).max() <= tol * np.abs(want).max()
    return counts


def test_tiny_unet_engine_rewrites_fire_and_keep_its_output(tiny_build):
    """The exported tiny UNet against its rewritten self in ORT, at an odd latent length."""
    from litefocus_export.artifacts.manifest import read_manifest

    _, export_dir, _ = tiny_build
    counts = rewritten_unet_matches(export_dir / "unet.onnx", read_manifest(export_dir)["stages"]["unet"], 1e-4)
    assert all(counts.values()), counts


def test_rewritten_model_with_weights_in_a_side_file_loads(tiny_build, tmp_path, monkeypatch):
    """The path real-size UNets take (weights over the inline limit go to one .data file beside it)."""
    from litefocus_export.graphs import files

    _, export_dir, _ = tiny_build
    monkeypatch.setattr(files, "WEIGHTS_INLINE_LIMIT", 0)
    path = tmp_path / "unet.onnx"
    (path.parent / "unet.onnx.data").write_bytes(b"stale bytes of a killed build")
    counts = files.rewrite_to_file(export_dir / "unet.onnx", path, rewrite_for_onnxruntime, "ONNX Runtime")
    assert counts["dual_sparse_attention"] == 20
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert any(i.name.startswith("litefocus_index") for i in session.get_inputs())


def test_failed_engine_build_is_one_line_and_leaves_no_work_files(tiny_build, tmp_path, monkeypatch):
    from litefocus_export.backends.onnxruntime.builder import OrtEngineFromOnnx
    from litefocus_export.core.errors import BuildError

    _, export_dir, _ = tiny_build

    def refuse(*args, **kwargs):
        raise RuntimeError("no memory left\nsecond line")

    monkeypatch.setattr(ort, "InferenceSession", refuse)
    with pytest.raises(BuildError, match="could not build unet.onnx: no memory left$"):
        OrtEngineFromOnnx(export_dir / "unet.onnx", tmp_path / "unet.onnx", ["CPUExecutionProvider"])()
    assert list(tmp_path.iterdir()) == []
