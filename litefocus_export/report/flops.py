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

import functools
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ..core.geometry import AudioGeometry, downsampled_length, level_width
from ..core.seeds import num_samples
from ..models.facts import ModelFacts, model_facts

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



# --- Per-stage FLOPs of the decode stages (convolutions, linears, attention), counted on the meta device ---
DECODE_FORMULA = ("2 * output elements * (input channels / groups) * kernel size per convolution (transposed: per "
                  "input element and output channel), 2 * output elements * input width per linear, 4*B*H*N*K*D per "
                  "attention; norms, activations and elementwise ops are not counted. VAE decoder batch 1, vocoder "
                  "batch 1 (the decoded waveform of one request).")


class FlopCounter:
    """``with FlopCounter() as c: module(...)``: FLOPs of the convolutions, linears and attention it calls.

    Counted from the shapes of each call (a ``TorchFunctionMode``), so it runs on the meta device: no weights,
    no time. ``c.by_kind``: ``{"conv": ..., "linear": ..., "attention": ...}``.
    """

    def __init__(self) -> None:
        self.by_kind: dict[str, int] = defaultdict(int)

    def __enter__(self) -> FlopCounter:
        import torch
        import torch.nn.functional as F
        from torch.overrides import TorchFunctionMode

        counter = self

        def prod(values: Any) -> int:
            out = 1
            for v in values:
                out *= int(v)
            return out

        def count(func: Any, args: tuple, kwargs: dict, out: Any) -> None:
            if func in (F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d):
                weight = args[1] if len(args) > 1 else kwargs["weight"]
                counter.by_kind["conv"] += 2 * out.numel() * prod(weight.shape[1:])
            elif func in (F.conv_transpose1d, F.conv_transpose2d, torch.conv_transpose1d, torch.conv_transpose2d):
                x, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
                counter.by_kind["conv"] += 2 * x.numel() * prod(weight.shape[1:])
            elif func in (F.linear, torch._C._nn.linear):
                weight = args[1] if len(args) > 1 else kwargs["weight"]
                counter.by_kind["linear"] += 2 * out.numel() * int(weight.shape[-1])
            elif func is F.scaled_dot_product_attention:
                q, k = args[0], args[1]
                counter.by_kind["attention"] += 4 * prod(q.shape[:-1]) * int(k.shape[-2]) * int(q.shape[-1])
            elif func in (torch.baddbmm, torch.bmm, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__):
                a, b = (args[1], args[2]) if func is torch.baddbmm else (args[0], args[1])
                if a.dim() >= 2 and b.dim() >= 2:
                    counter.by_kind["attention" if a.dim() >= 3 else "linear"] += 2 * out.numel() * int(a.shape[-1])

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                if isinstance(out, torch.Tensor):
                    count(func, args, kwargs, out)
                return out

        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


def _random_config(spec: str, name: str) -> dict[str, Any]:
    from ..models.specs import RANDOM_PREFIX, random_spec, snapshot_folder

    if str(spec).startswith(RANDOM_PREFIX):
        return dict(random_spec(str(spec)).config(name)["config"])
    import json

    return json.loads((snapshot_folder(spec) / name / "config.json").read_text())


@functools.lru_cache(maxsize=32)
def decode_flops(spec: str, seconds: float) -> dict[str, dict[str, float]]:
    """GFLOP of the VAE decoder and the vocoder for ``seconds`` of audio (batch 1), by kind and in total.

    Both are built on the meta device from the model's configs and run once under :class:`FlopCounter`.
    """
    import torch
    from diffusers import AutoencoderKL
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    geometry = model_facts(spec).geometry
    vae_config = {k: v for k, v in _random_config(spec, "vae").items() if not k.startswith("_")}
    voc_config = {k: v for k, v in _random_config(spec, "vocoder").items() if not k.startswith("_")}
    frames = geometry.latent_frames(seconds)
    out: dict[str, dict[str, float]] = {}
    with torch.device("meta"), torch.no_grad():
        vae = AutoencoderKL(**vae_config)
        vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(**voc_config))
        latents = torch.empty(1, vae.config.latent_channels, frames, geometry.latent_freq_bins)
        with FlopCounter() as vae_count:
            mel = vae.decode(latents).sample
        with FlopCounter() as voc_count:
            vocoder(mel.squeeze(1))
    for name, counter in (("vae_decoder", vae_count), ("vocoder", voc_count)):
        out[name] = {**{f"{k}_gflop": v / 1e9 for k, v in sorted(counter.by_kind.items())},
                     "total_gflop": counter.total / 1e9}
    return out


@functools.lru_cache(maxsize=32)
def unet_step_flops(spec: str, seconds: float, sparse_ratio: float, levels: tuple[int, ...]) -> dict[str, float]:
    """GFLOP of one UNet evaluation (batch 2) by kind, counted on the meta device with the stock attention, and
    the LiteFocus total: the stock total less the self-attention the patched levels skip (``step_flops``).
    The cross-attention context is the example feeds' (``contract.example_unet_feeds``)."""
    import diffusers
    import torch

    from ..core.contract import example_unet_feeds, unet_call_arguments, unet_inputs

    facts = model_facts(spec)
    frames = facts.geometry.latent_frames(seconds)
    feeds = example_unet_feeds(unet_inputs(facts.kind, facts.unet_config, facts.geometry.latent_freq_bins), frames, 0)
    with torch.device("meta"), torch.no_grad():
        unet = getattr(diffusers, facts.unet_class)(**facts.unet_config)
        sample, timestep, kwargs = unet_call_arguments({k: torch.from_numpy(v).to("meta") for k, v in feeds.items()})
        with FlopCounter() as count:
            unet(sample, timestep, **kwargs, return_dict=False)
    analytic = step_flops(attention_layers(facts, levels), facts.geometry, seconds, sparse_ratio)
    saved = analytic["full_gflop"] - analytic["litefocus_gflop"]
    total = count.total / 1e9
    return {**{f"{k}_gflop": v / 1e9 for k, v in sorted(count.by_kind.items())},
            "full_total_gflop": total, "litefocus_total_gflop": total - saved}
