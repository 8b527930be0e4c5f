"""The OpenVINO lowering of DualSparseAttention: equal to the reference op, one fused SDPA, no dense scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from litefocus_export.attention import dual_sparse_attention
from litefocus_export.attention.onnx_function import attach_function, make_node

ov = pytest.importorskip("openvino")
FREQ_BINS, SCALE = 4, 0.3


def op_file(folder: Path, index_rank: int, same: bool = True, cross: bool = True) -> Path:
    """One DualSparseAttention node with dynamic batch, tokens and sample count, its function body attached."""
    qkv = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", "H", "N", "D"]) for n in "qkv"]
    index = helper.make_tensor_value_info("index", TensorProto.INT64, ["B", "M"][-index_rank:])
    node = make_node(["q", "k", "v", "index"], "out", freq_bins=FREQ_BINS, scale=SCALE, same_frequency=same,
                     cross_frequency=cross)
    graph = helper.make_graph([node], "op", [*qkv, index],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    path = folder / f"op-{index_rank}-{int(same)}{int(cross)}.onnx"
    onnx.save(attach_function(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])), path)
    return path


def lowered(path: Path):  # noqa: ANN201
    from litefocus_export.backends.openvino.lowering import conversion_extensions

    converted = ov.convert_model(path, extension=conversion_extensions())
    return converted, ov.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def reference(arrays: list[np.ndarray], same: bool = True, cross: bool = True) -> np.ndarray:
    return dual_sparse_attention(*(torch.from_numpy(a) for a in arrays), freq_bins=FREQ_BINS, scale=SCALE,
                                 same_frequency=same, cross_frequency=cross).numpy()


@pytest.mark.parametrize("same,cross,samples", [(True, True, 5), (True, True, 0), (True, False, 5), (False, True, 5)])
@pytest.mark.parametrize("index_rank", [1, 2])
def test_lowering_equals_the_reference(tmp_path, same, cross, samples, index_rank):
    rng = np.random.default_rng(samples + index_rank)
    batch, heads, frames, dim = 2, 3, 6, 8
    tokens = frames * FREQ_BINS
    q, k, v = (rng.standard_normal((batch, heads, tokens, dim), dtype=np.float32) for _ in range(3))
    index = rng.integers(0, tokens, size=(samples,) if index_rank == 1 else (batch, samples), dtype=np.int64)
    converted, compiled = lowered(op_file(tmp_path, index_rank, same, cross))
    got = compiled({"q": q, "k": k, "v": v, "index": index})[0]
    np.testing.assert_allclose(got, reference([q, k, v, index], same, cross), rtol=1e-5, atol=1e-5)
    # one fused attention: no MatMul/Softmax scores, whatever the frames (the same model serves other lengths)
    types = {op.get_type_name() for op in converted.get_ops()}
    assert "ScaledDotProductAttention" in types and not types & {"Softmax", "MatMul"}
    longer = [rng.standard_normal((batch, heads, 3 * tokens, dim), dtype=np.float32) for _ in range(3)]
    got = compiled({"q": longer[0], "k": longer[1], "v": longer[2], "index": index})[0]
    np.testing.assert_allclose(got, reference([*longer, index], same, cross), rtol=1e-5, atol=1e-5)


def test_duplicated_sample_counts_twice(tmp_path):
    """A sampled key that is also a same-frequency key is scored twice (docs/design.md §1), as in the reference."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((1, 1, 8, 4), dtype=np.float32) for _ in range(3))
    index = np.array([0, 0, 4], dtype=np.int64)  # token 0 twice; token 4 shares bin 0 with token 0
    _, compiled = lowered(op_file(tmp_path, 1))
    got = compiled({"q": q, "k": k, "v": v, "index": index})[0]
    np.testing.assert_allclose(got, reference([q, k, v, index]), rtol=1e-5, atol=1e-5)
