"""``LiteFocusAttnProcessor``: a diffusers attention processor that runs the op on self-attention."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .config import LiteFocusConfig
from .op import dual_sparse_attention
from .samples import SampleSource


class LiteFocusAttnProcessor:
    """Self-attention through ``dual_sparse_attention``; anything else goes to the original processor.

    It takes its weights from the ``Attention`` module it is called with (like diffusers' own
    processors), so one instance per layer only holds the layer's name, frequency bins and settings.
    Calls with a text context, a mask or spatial/group norms are delegated to ``fallback`` unchanged.
    """

    def __init__(self, name: str, freq_bins: int, config: LiteFocusConfig, samples: SampleSource, fallback: Any):
        self.name = name
        self.freq_bins = freq_bins
        self.config = config
        self.samples = samples
        self.fallback = fallback
        self.impl = "op"  # or "reference" / "fast": see dual_sparse_attention

    def _handles(self, attn: Any, hidden_states: torch.Tensor, context: Any, mask: Any) -> bool:
        return (
            context is None
            and mask is None
            and hidden_states.ndim == 3
            and attn.spatial_norm is None
            and attn.group_norm is None
        )

    def sample_index(self, n_tokens: int, device: torch.device) -> torch.Tensor:
        if not self.config.cross_frequency:
            return torch.zeros((0,), dtype=torch.int64, device=device)
        index = self.samples(self.name, n_tokens)
        if isinstance(index, np.ndarray):
            index = torch.from_numpy(index)
        if device.type == "cuda" and index.device.type == "cpu":
            index = index.pin_memory()  # a copy from pageable memory would synchronise the stream at every call
        return index.to(device=device, dtype=torch.int64, non_blocking=True)

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        if not self._handles(attn, hidden_states, encoder_hidden_states, attention_mask):
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        residual = hidden_states
        batch, n_tokens, _ = hidden_states.shape
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (x.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        out = dual_sparse_attention(
            query, key, value, self.sample_index(n_tokens, query.device),
            freq_bins=self.freq_bins, scale=attn.scale,
            same_frequency=self.config.same_frequency, cross_frequency=self.config.cross_frequency, impl=self.impl,
        )
        out = out.transpose(1, 2).reshape(batch, n_tokens, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor
