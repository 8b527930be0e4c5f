"""The LiteFocus op in its dense form: frequency folded into batch, one SDPA over T + M keys.

docs/design.md §1: ``q' = (B, H*F, T, D)``; keys/values are the T same-frequency tokens of the query's bin
followed by the M sampled tokens. The fold stays 4-D because CPU SDPA drops to its slow math path on
5-D inputs. No N x N (or N x (T + M)) matrix is kept beyond what SDPA itself does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .reference import check_inputs, gather_samples


def fold_frequency(x: torch.Tensor, freq_bins: int) -> torch.Tensor:
    """(B, H, T*F, D) time-major tokens -> (B, H, F, T, D)."""
    batch, heads, n_tokens, dim = x.shape
    return x.view(batch, heads, n_tokens // freq_bins, freq_bins, dim).transpose(2, 3)


def dual_sparse_attention_fast(
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
    """Dual sparse attention, dense form. Same contract as the reference."""
    check_inputs(q, k, v, sample_index, freq_bins, same_frequency, cross_frequency)
    batch, heads, n_tokens, dim = q.shape
    frames = n_tokens // freq_bins
    sampled = cross_frequency and sample_index.numel() > 0

    if not same_frequency:
        # every query sees the same M keys: no fold needed
        return F.scaled_dot_product_attention(
            q, gather_samples(k, sample_index), gather_samples(v, sample_index), scale=scale
        )

    def keys_for_each_bin(x: torch.Tensor) -> torch.Tensor:
        per_bin = fold_frequency(x, freq_bins)
        if sampled:
            shared = gather_samples(x, sample_index).unsqueeze(2).expand(batch, heads, freq_bins, -1, dim)
            per_bin = torch.cat([per_bin, shared], dim=3)
        return per_bin.reshape(batch, heads * freq_bins, -1, dim)

    q_folded = fold_frequency(q, freq_bins).reshape(batch, heads * freq_bins, frames, dim)
    out = F.scaled_dot_product_attention(q_folded, keys_for_each_bin(k), keys_for_each_bin(v), scale=scale)
    return out.view(batch, heads, freq_bins, frames, dim).transpose(2, 3).reshape(batch, heads, n_tokens, dim)
