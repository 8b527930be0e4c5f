"""The LiteFocus op written the way the paper's code writes it (einsum over the T x F grid).

This is the semantic reference every other implementation is tested against (docs/design.md §1). It
materialises the (N, T + M) score matrix, so it is for tests and small shapes, not for speed.
"""

from __future__ import annotations

import torch

from ..core.errors import UsageError


def check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sample_index: torch.Tensor,
    freq_bins: int,
    same_frequency: bool,
    cross_frequency: bool,
) -> None:
    """Raise ``UsageError`` for shapes or flags that the op does not define."""
    if not (same_frequency or cross_frequency):
        raise UsageError("dual_sparse_attention: same_frequency and cross_frequency are both off")
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise UsageError(
            f"dual_sparse_attention: q, k, v must share one (B, H, N, D) shape, got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    n_tokens = q.shape[2]
    if freq_bins <= 0 or n_tokens % freq_bins:
        raise UsageError(f"dual_sparse_attention: N={n_tokens} tokens is not a multiple of freq_bins={freq_bins}")
    if sample_index.dtype != torch.int64 or sample_index.dim() not in (1, 2) or (
        sample_index.dim() == 2 and sample_index.shape[0] != q.shape[0]
    ):
        raise UsageError(
            f"dual_sparse_attention: sample_index must be int64 (M,) or (B, M) with B={q.shape[0]}, got "
            f"{sample_index.dtype} {tuple(sample_index.shape)}"
        )
    if not same_frequency and sample_index.numel() == 0:
        raise UsageError("dual_sparse_attention: cross_frequency alone with an empty sample has no keys")


def gather_samples(x: torch.Tensor, sample_index: torch.Tensor) -> torch.Tensor:
    """The sampled tokens of ``x`` ``(B, H, N, D)``: ``(B, H, M, D)``.

    ``sample_index`` ``(M,)`` is one sample for every batch row; ``(B, M)`` gives row ``b`` its own.
    """
    if sample_index.dim() == 1:
        return x[:, :, sample_index]
    batch, heads, _, dim = x.shape
    rows = sample_index[:, None, :, None].expand(batch, heads, sample_index.shape[-1], dim)
    return torch.gather(x, 2, rows)


def dual_sparse_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sample_index: torch.Tensor,
    *,
    freq_bins: int,
    scale: float | None = None,
    same_frequency: bool = True,
    cross_frequency: bool = True,
) -> torch.Tensor:
    """Dual sparse attention, reference form. Shapes: q, k, v ``(B, H, N, D)``, index ``(M,)`` or ``(B, M)``."""
    check_inputs(q, k, v, sample_index, freq_bins, same_frequency, cross_frequency)
    batch, heads, n_tokens, dim = q.shape
    frames = n_tokens // freq_bins
    scale = dim**-0.5 if scale is None else scale
    grid = (batch, heads, frames, freq_bins, dim)

    scores = []
    if same_frequency:
        # query (t, f) against key (y, f) for every frame y: (B, H, T, F, T) -> (B, H, N, T)
        same = torch.einsum("bhtfd,bhyfd->bhtfy", q.view(grid), k.view(grid)) * scale
        scores.append(same.reshape(batch, heads, n_tokens, frames))
    if cross_frequency:
        scores.append(q @ gather_samples(k, sample_index).transpose(-2, -1) * scale)
    weights = torch.softmax(torch.cat(scores, dim=-1), dim=-1)

    out = torch.zeros_like(q)
    if same_frequency:
        w_same = weights[..., :frames].reshape(batch, heads, frames, freq_bins, frames)
        out = out + torch.einsum("bhtfy,bhyfd->bhtfd", w_same, v.view(grid)).reshape(q.shape)
    if cross_frequency:
        w_cross = weights[..., frames:] if same_frequency else weights
        out = out + w_cross @ gather_samples(v, sample_index)
    return out
