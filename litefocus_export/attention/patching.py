"""Install LiteFocus on a diffusers audio pipeline's UNet, and take it off again exactly.

The layer set is the reference's (docs/design.md §1, §6): every attention module at the chosen latent
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

from ..core.contract import CONTEXT_FREE_KINDS
from ..core.errors import UsageError
from ..core.geometry import level_width
from .config import LiteFocusConfig
from .processor import LiteFocusAttnProcessor
from .samples import RandomSamples, SampleSource

_STATE_ATTR = "_litefocus_state"
_BLOCK = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.|^(mid_block)\.")
_STAGE_ORDER = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}


@dataclass
class PatchedLayer:
    name: str
    level: int  # UNet resolution level: 0 = full latent resolution
    freq_bins: int

    def as_dict(self) -> dict[str, Any]:
        """As export manifests list patched layers (``litefocus_layers``): name, level, width."""
        return {"name": self.name, "level": self.level, "width": self.freq_bins}


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


def block_level(name: str, num_levels: int) -> tuple[int, int] | None:
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
        place = block_level(name, num_levels)
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
        pipe: an AudioLDM2Pipeline, AudioLDMPipeline or MusicLDMPipeline.
        config: settings (default ``LiteFocusConfig()``).
        samples: where layers take their samples from (default: drawn from ``config.seed``).

    Returns:
        Qualified names (as in ``pipe.unet.named_modules()``) of the patched layers, in execution order.

    Raises:
        UsageError: not a supported pipeline, or no self-attention exists at the requested levels.
    """
    from ..models import pipeline_geometry, pipeline_kind

    context_free = pipeline_kind(pipe) in CONTEXT_FREE_KINDS
    return patch_unet(pipe.unet, config, samples, freq_bins=pipeline_geometry(pipe).latent_freq_bins,
                      context_free=context_free)


def patch_unet(unet: Any, config: LiteFocusConfig | None = None, samples: SampleSource | None = None, *,
               freq_bins: int, context_free: bool) -> list[str]:
    """Install LiteFocus on a UNet alone (what ``patch`` does once it knows the pipeline).

    Args:
        unet: a diffusers UNet.
        config, samples: as for ``patch``.
        freq_bins: the latent's frequency bins ``F_lat`` (``AudioGeometry.latent_freq_bins``).
        context_free: whether the UNet is called without text context (AudioLDM, MusicLDM), so its
            ``attn2`` layers are self-attention too.

    Returns:
        The patched layers' qualified names, in execution order.

    Raises:
        UsageError: no self-attention exists at the requested levels.
    """
    config = config or LiteFocusConfig()
    if litefocus_state(unet) is not None:
        unpatch(unet)
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
    """Restore the exact processor objects that were there before ``patch`` (no-op if unpatched).

    ``pipe`` is a pipeline or a bare UNet patched with ``patch_unet``.
    """
    state = litefocus_state(pipe)
    if state is None:
        return
    unet = getattr(pipe, "unet", pipe)
    modules = dict(unet.named_modules())
    for name, original in state.originals.items():
        modules[name].set_processor(original)
    delattr(unet, _STATE_ATTR)


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
