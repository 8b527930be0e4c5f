"""The op: reference vs dense SDPA form vs custom op, on the docs/design.md §1 semantics."""

from __future__ import annotations

import pytest
import torch

from litefocus_export.attention import dual_sparse_attention
from litefocus_export.attention.reference import dual_sparse_attention_reference
from litefocus_export.core.errors import UsageError

FLAGS = [(True, True), (True, False), (False, True)]


def qkv(batch: int, heads: int, frames: int, bins: int, dim: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, frames * bins, dim, generator=gen) for _ in range(3)]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def naive(q, k, v, index, bins, scale, same, cross):
    """Per-query loop straight from the definition: the keys of one query, one softmax."""
    batch, heads, n_tokens, dim = q.shape
    out = torch.empty_like(q)
    for n in range(n_tokens):
        keys = [t * bins + n % bins for t in range(n_tokens // bins)] if same else []
        keys += index.tolist() if cross else []
        w = torch.softmax(q[:, :, n : n + 1] @ k[:, :, keys].transpose(-1, -2) * scale, dim=-1)
        out[:, :, n] = (w @ v[:, :, keys])[:, :, 0]
    return out


@pytest.mark.parametrize("same,cross", FLAGS)
def test_reference_matches_definition_with_duplicates(same, cross):
    q, k, v = qkv(1, 2, 5, 3, 4)
    index = torch.tensor([0, 4, 4, 7, 14])  # 4 twice; 7 and 4 are also same-frequency keys of bin 1
    got = dual_sparse_attention_reference(
        q, k, v, index, freq_bins=3, scale=0.3, same_frequency=same, cross_frequency=cross
    )
    torch.testing.assert_close(got, naive(q, k, v, index, 3, 0.3, same, cross), rtol=1e-5, atol=1e-6)


GRIDS = [(7, 8), (13, 3), (5, 1), (1, 8), (33, 16)]
# every legal case: without same-frequency keys the sample must not be empty (that is an error, tested below)
CASES = [(t, f, same, cross, ratio) for t, f in GRIDS for same, cross in FLAGS for ratio in (0.0, 0.1, 0.5)
         if same or int(t * f * ratio) > 0]


@pytest.mark.parametrize("frames,bins,same,cross,ratio", CASES)
@pytest.mark.parametrize("impl", ["fast", "op"])
def test_fast_forms_match_reference(frames, bins, same, cross, ratio, impl):
    q, k, v = qkv(2, 3, frames, bins, 16, seed=frames * bins)
    n_tokens = frames * bins
    m = int(n_tokens * ratio)
    index = torch.randperm(n_tokens, generator=torch.Generator().manual_seed(1))[:m]
    kwargs = dict(freq_bins=bins, same_frequency=same, cross_frequency=cross)
    expected = dual_sparse_attention_reference(q, k, v, index, **kwargs)
    got = dual_sparse_attention(q, k, v, index, impl=impl, **kwargs)
    assert got.shape == q.shape
    assert rel_err(got, expected) <= 1e-5


def per_row_samples(batch: int, n_tokens: int, m: int, seed: int = 1) -> torch.Tensor:
    """(batch, m) samples, a different one per row."""
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n_tokens, generator=gen)[:m] for _ in range(batch)])


@pytest.mark.parametrize("same,cross", FLAGS)
@pytest.mark.parametrize("impl", ["reference", "fast", "op"])
def test_per_row_samples(same, cross, impl):
    """(B, M): row b uses its own sample, so it equals the (M,) call of that row alone."""
    frames, bins = 7, 8
    q, k, v = qkv(3, 2, frames, bins, 16, seed=5)
    index = per_row_samples(3, frames * bins, 11)
    assert not torch.equal(index[0], index[1])
    kwargs = dict(freq_bins=bins, same_frequency=same, cross_frequency=cross)
    got = dual_sparse_attention(q, k, v, index, impl=impl, **kwargs)
    expected = dual_sparse_attention_reference(q, k, v, index, **kwargs)
    assert rel_err(got, expected) <= 1e-5
    for b in range(3):
        alone = dual_sparse_attention_reference(q[b:b + 1], k[b:b + 1], v[b:b + 1], index[b], **kwargs)
        assert rel_err(got[b:b + 1], alone) <= 1e-5
    if cross:  # rows really differ: not what one shared sample gives
        shared = dual_sparse_attention_reference(q, k, v, index[0], **kwargs)
        assert rel_err(got[1:], shared[1:]) > 1e-3


@pytest.mark.parametrize("impl", ["reference", "fast", "op"])
def test_identical_rows_equal_one_shared_sample(impl):
    q, k, v = qkv(2, 2, 5, 4, 8, seed=2)
    index = per_row_samples(1, 20, 6)[0]
    kwargs = dict(freq_bins=4)
    shared = dual_sparse_attention(q, k, v, index, impl=impl, **kwargs)
    rows = dual_sparse_attention(q, k, v, index.expand(2, -1).contiguous(), impl=impl, **kwargs)
    torch.testing.assert_close(rows, shared, rtol=1e-6, atol=1e-6)
    empty = dual_sparse_attention(q, k, v, torch.zeros(2, 0, dtype=torch.int64), impl=impl, **kwargs)
    torch.testing.assert_close(empty, dual_sparse_attention(q, k, v, torch.zeros(0, dtype=torch.int64), **kwargs))


def test_default_scale_is_inverse_sqrt_dim():
    q, k, v = qkv(1, 1, 4, 2, 9)
    index = torch.tensor([1, 2])
    a = dual_sparse_attention(q, k, v, index, freq_bins=2)
    b = dual_sparse_attention(q, k, v, index, freq_bins=2, scale=1 / 3)
    torch.testing.assert_close(a, b)


def test_same_frequency_only_ignores_sample():
    q, k, v = qkv(1, 2, 6, 4, 8)
    a = dual_sparse_attention(q, k, v, torch.tensor([0, 3]), freq_bins=4, cross_frequency=False)
    b = dual_sparse_attention(q, k, v, torch.zeros(0, dtype=torch.int64), freq_bins=4)
    torch.testing.assert_close(a, b)


def test_op_is_one_node_under_export_tracing():
    q, k, v = qkv(1, 2, 4, 2, 8)

    class Layer(torch.nn.Module):
        def forward(self, q, k, v, index):
            return dual_sparse_attention(q, k, v, index, freq_bins=2)

    for index in (torch.tensor([0, 5]), torch.tensor([[0, 5]])):
        program = torch.export.export(Layer(), (q, k, v, index))
        targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
        assert targets == ["litefocus.dual_sparse_attention.default"]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(freq_bins=2, same_frequency=False, cross_frequency=False), "both off"),
        (dict(freq_bins=3), "not a multiple"),
        (dict(freq_bins=2, same_frequency=False, index=torch.zeros(0, dtype=torch.int64)), "no keys"),
        (dict(freq_bins=2, index=torch.tensor([0.0])), "int64"),
        (dict(freq_bins=2, index=torch.tensor([[0], [1]])), r"\(M,\) or \(B, M\) with B=1"),
        (dict(freq_bins=2, index=torch.zeros(1, 1, 1, dtype=torch.int64)), "int64"),
    ],
)
def test_bad_inputs_raise_one_line_errors(kwargs, match):
    q, k, v = qkv(1, 1, 4, 2, 8)
    index = kwargs.pop("index", torch.tensor([1]))
    with pytest.raises(UsageError, match=match):
        dual_sparse_attention(q, k, v, index, **kwargs)


def test_mismatched_shapes_raise():
    q, k, v = qkv(1, 1, 4, 2, 8)
    with pytest.raises(UsageError, match="share one"):
        dual_sparse_attention(q, k[:, :, :4], v, torch.tensor([1]), freq_bins=2)

