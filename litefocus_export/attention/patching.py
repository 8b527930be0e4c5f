"""Install LiteFocus on a diffusers audio pipeline's UNet, and take it off again exactly.

The layer set is the reference's (DESIGN.md §1, §6): every attention module at the chosen latent
widths that runs as self-attention. ``attn1`` always does; ``attn2`` does when it has no text context
(AudioLDM2's context-free transformer; every ``attn2`` in AudioLDM and MusicLDM, whose pipelines call
the UNet without ``encoder_hidden_states``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..geometry import level_width
from .config import LiteFocusConfig
from .processor import LiteFocusAttnProcessor
from .samples import RandomSamples, SampleSource

# Pipelines whose UNet never sees a text context: their attn2 layers are self-attention too.
CONTEXT_FREE_PIPELINES = ("AudioLDMPipeline", "MusicLDMPipeline")
_STATE_ATTR = "_litefocus_state"
_BLOCK = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.|^(mid_block)\.")
_STAGE_ORDER = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}


@dataclass
class PatchedLayer:
    name: str
    level: int  # UNet resolution level: 0 = full latent resolution
    freq_bins: int


@dataclass
class LiteFocusState:
    """What ``patch`` installed: layers in execution order, their original processors, the sample source."""

    config: LiteFocusConfig
    layers: list[PatchedLayer]
    originals: dict[str, Any]
    processors: dict[str, LiteFocusAttnProcessor]
    samples: SampleSource

    def set_samples(self, samples: SampleSource) -> None:
        """Swap the sample source of every patched layer (e.g. to replay an engine's samples)."""
        self.samples = samples
        for processor in self.processors.values():
            processor.samples = samples


def latent_freq_bins(pipe: Any) -> int:
    """``F_lat`` of a pipeline: mel bins of its vocoder over the VAE factor (64 / 4 = 16)."""
    return int(pipe.vocoder.config.model_in_dim) // int(pipe.vae_scale_factor)


def _level_of(name: str, num_levels: int) -> tuple[int, int] | None:
    """(execution stage, resolution level) of a UNet module name, or None outside the blocks."""
    match = _BLOCK.match(name)
    if not match:
        return None
    if match.group(3):
        return _STAGE_ORDER["mid_block"], num_levels - 1
    stage, index = match.group(1), int(match.group(2))
    level = index if stage == "down_blocks" else num_levels - 1 - index
    return _STAGE_ORDER[stage], level


def find_self_attention_layers(
    unet: Any, freq_bins: int, widths: tuple[int, ...], context_free: bool
) -> list[PatchedLayer]:
    """Self-attention modules of ``unet`` at the given latent widths, in execution order."""
    from diffusers.models.attention_processor import Attention

    num_levels = len(unet.down_blocks)
    found: list[tuple[int, int, PatchedLayer]] = []
    for order, (name, module) in enumerate(unet.named_modules()):
        if not isinstance(module, Attention):
            continue
        place = _level_of(name, num_levels)
        if place is None:
            continue
        stage, level = place
        width = level_width(freq_bins, level)
        is_self = name.endswith("attn1") or (name.endswith("attn2") and (context_free or not module.is_cross_attention))
        if is_self and width in widths:
            found.append((stage, order, PatchedLayer(name, level, width)))
    return [layer for _, _, layer in sorted(found, key=lambda item: item[:2])]


def patch(pipe: Any, config: LiteFocusConfig | None = None, samples: SampleSource | None = None) -> list[str]:
    """Install LiteFocus on every self-attention of ``pipe.unet`` at ``config.levels``.

    Args:
        pipe: an AudioLDM2Pipeline, AudioLDMPipeline or MusicLDMPipeline (anything with ``unet``,
            ``vocoder`` and ``vae_scale_factor``).
        config: settings (default ``LiteFocusConfig()``).
        samples: where layers take their samples from (default: drawn from ``config.seed``).

    Returns:
        Qualified names (as in ``pipe.unet.named_modules()``) of the patched layers, in execution order.

    Raises:
        UsageError: no self-attention exists at the requested levels.
    """
    config = config or LiteFocusConfig()
    if litefocus_state(pipe) is not None:
        unpatch(pipe)
    unet = pipe.unet
    freq_bins = latent_freq_bins(pipe)
    context_free = type(pipe).__name__ in CONTEXT_FREE_PIPELINES
    layers = find_self_attention_layers(unet, freq_bins, config.levels, context_free)
    if not layers:
        raise UsageError(f"no self-attention at latent widths {list(config.levels)} in this UNet")
    samples = samples or RandomSamples(config.sparse_ratio, seed=config.seed)
    modules = dict(unet.named_modules())
    originals, processors = {}, {}
    for layer in layers:
        module = modules[layer.name]
        originals[layer.name] = module.processor
        processors[layer.name] = LiteFocusAttnProcessor(layer.name, layer.freq_bins, config, samples, module.processor)
        module.set_processor(processors[layer.name])
    setattr(unet, _STATE_ATTR, LiteFocusState(config, layers, originals, processors, samples))
    return [layer.name for layer in layers]


def unpatch(pipe: Any) -> None:
    """Restore the exact processor objects that were there before ``patch`` (no-op if unpatched)."""
    state = litefocus_state(pipe)
    if state is None:
        return
    modules = dict(pipe.unet.named_modules())
    for name, original in state.originals.items():
        modules[name].set_processor(original)
    delattr(pipe.unet, _STATE_ATTR)


def litefocus_state(pipe: Any) -> LiteFocusState | None:
    """The installed ``LiteFocusState`` of a pipeline (or of a bare UNet), None if not patched."""
    unet = getattr(pipe, "unet", pipe)
    return getattr(unet, _STATE_ATTR, None)


@contextlib.contextmanager
def patched(
    pipe: Any, config: LiteFocusConfig | None = None, samples: SampleSource | None = None
) -> Iterator[list[str]]:
    """Context manager: LiteFocus inside the block, the original processors after it."""
    names = patch(pipe, config, samples)
    try:
        yield names
    finally:
        unpatch(pipe)
