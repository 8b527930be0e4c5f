"""Analytic attention FLOPs per UNet step, full vs LiteFocus, from a model's UNet config.

Per attention layer, with B = 2 (one UNet evaluation with classifier-free guidance), H heads of width D,
N query tokens at the layer's resolution level (``T_l * F_l``) and K keys, the two matmuls (``Q K^T`` and
``A V``) cost ``2 * B * H * N * K * D`` multiply-adds each, so ``4 * B * H * N * K * D`` FLOPs:

- self-attention, full:          K = N
- self-attention, LiteFocus:     K = T_l + M, ``M = floor(sparse_ratio * N)`` (patched levels only)
- cross-attention (unchanged):   K = L context tokens (``CONTEXT_TOKENS``, an assumption: it depends on
  the prompt; the term is the same in both columns and small)

Projections, softmax, norms, feed-forwards and convolutions are not counted, so the whole-UNet ratio is
smaller than this one. The UNet is instantiated on torch's ``meta`` device: structure only, no weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..geometry import AudioGeometry, downsampled_length, level_width
from ..models.facts import ModelFacts, model_facts
from ..sampling import num_samples

BATCH = 2  # classifier-free guidance: [uncond, cond] in one UNet evaluation
CONTEXT_TOKENS = 64
FORMULA = ("4*B*H*N*K*D per attention layer (QK^T and AV), B = 2 (CFG); self-attention K = N (full) or "
           "K = T_l + M with M = floor(ratio*N) at the patched levels (LiteFocus); cross-attention K = "
           f"{CONTEXT_TOKENS} context tokens (assumed) in both")


@dataclass(frozen=True)
class AttentionLayer:
    name: str
    level: int
    heads: int
    head_dim: int
    self_attention: bool
    patched: bool


def attention_layers(facts: ModelFacts, levels: tuple[int, ...]) -> list[AttentionLayer]:
    """Every attention module of the UNet (structure on the meta device) and whether LiteFocus patches it."""
    import diffusers
    import torch
    from diffusers.models.attention_processor import Attention

    from ..attention.patching import block_level, find_self_attention_layers

    with torch.device("meta"):
        unet = getattr(diffusers, facts.unet_class)(**facts.unet_config)
    bins = facts.geometry.latent_freq_bins
    widths = tuple(level_width(bins, level) for level in range(len(unet.down_blocks)))
    self_layers = find_self_attention_layers(unet, bins, widths, facts.context_free)
    self_names = {layer.name for layer in self_layers}
    patched = {layer.name for layer in self_layers if layer.freq_bins in levels}
    layers = []
    for name, module in unet.named_modules():
        place = block_level(name, len(unet.down_blocks)) if isinstance(module, Attention) else None
        if place is not None:
            layers.append(AttentionLayer(name, place[1], module.heads, module.inner_dim // module.heads,
                                         name in self_names, name in patched))
    return layers


def step_flops(layers: list[AttentionLayer], geometry: AudioGeometry, seconds: float,
               sparse_ratio: float) -> dict[str, Any]:
    """Attention FLOPs of one UNet evaluation (batch 2) at ``seconds`` of audio, full and LiteFocus."""
    frames = geometry.latent_frames(seconds)
    full = lite = cross = 0
    tokens_patched = 0
    for layer in layers:
        t_l = downsampled_length(frames, layer.level)
        n = t_l * level_width(geometry.latent_freq_bins, layer.level)
        per_key = 4 * BATCH * layer.heads * n * layer.head_dim
        if not layer.self_attention:
            cross += per_key * CONTEXT_TOKENS
            continue
        full += per_key * n
        lite += per_key * (t_l + num_samples(n, sparse_ratio)) if layer.patched else per_key * n
        tokens_patched = max(tokens_patched, n if layer.patched else 0)
    return {"seconds": seconds, "latent_frames": frames, "patched_tokens": tokens_patched,
            "patched_layers": sum(layer.patched for layer in layers),
            "self_attention_layers": sum(layer.self_attention for layer in layers),
            "cross_attention_layers": sum(not layer.self_attention for layer in layers),
            "full_gflop": (full + cross) / 1e9, "litefocus_gflop": (lite + cross) / 1e9,
            "ratio": (full + cross) / (lite + cross) if lite + cross else None}


def flops_table(spec: str, seconds: list[float], sparse_ratio: float, levels: tuple[int, ...]) -> list[dict[str, Any]]:
    """``step_flops`` for every duration of the report."""
    facts = model_facts(spec)
    layers = attention_layers(facts, levels)
    return [step_flops(layers, facts.geometry, s, sparse_ratio) for s in seconds]

