"""Every supported public checkpoint as a known architecture, checked on random weights.

Real sizes are built on torch's ``meta`` device (structure and parameter counts, no memory, no init); the
tiny variant of each UNet layout builds for real, is patched and runs one UNet forward.

Published values and where they come from:
- cvssp/audioldm2, cvssp/audioldm2-music: their unet/config.json (block_out_channels [128, 256, 384, 640],
  layers_per_block 2, cross_attention_dim [None, 768, 1024] per level, transformer_layers_per_block 1); the
  model cards' table: UNet 350M, total 1.1B for both.
- cvssp/audioldm2-large: the model card's table (UNet 750M, total 1.5B) and the large settings of diffusers'
  convert_original_audioldm2_to_diffusers.py / haoheliu/AudioLDM2 utils.py (see models/specs.py).
- cvssp/audioldm-s-full-v2, -m-full, -l-full: the model cards' table ("UNet dim" 128, 192, 256; Params 421M,
  652M, 975M); m-full's unet/config.json (block_out_channels [192, 384, 576, 960], attention_head_dim 8,
  projection_class_embeddings_input_dim 512).
- ucsd-reach/musicldm: diffusers' convert_original_musicldm_to_diffusers.py (AudioLDM's UNet).
- The CLAP of AudioLDM2 (all three) and MusicLDM: their text_encoder/config.json (audio branch hidden size 1024,
  depths [2, 2, 12, 2], patch_embeds_hidden_size 128).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from litefocus_export.attention import LiteFocusConfig, patch, unpatch
from litefocus_export.attention.patching import find_self_attention_layers
from litefocus_export.core.contract import CONTEXT_FREE_KINDS, example_unet_feeds, unet_call_arguments, unet_inputs
from litefocus_export.models import build_component, pipeline_geometry, pipeline_kind
from litefocus_export.models.specs import HUB_ARCHITECTURES, PIPELINE_CLASSES, RANDOM_SPECS

CROSS_2 = [None, 768, 1024]
# id -> (pipeline class, UNet class, block_out_channels, transformer layers, cross_attention_dim of a level,
#        F = 8 self-attentions, UNet parameters (M, rounded), all parameters (M, rounded))
PUBLISHED: dict[str, tuple[Any, ...]] = {
    "cvssp/audioldm2": ("AudioLDM2Pipeline", "AudioLDM2UNet2DConditionModel", [128, 256, 384, 640], 1, CROSS_2,
                        20, 347, 1118),
    "cvssp/audioldm2-large": ("AudioLDM2Pipeline", "AudioLDM2UNet2DConditionModel", [128, 256, 384, 640], 2,
                              [*CROSS_2, None], 60, 718, 1489),
    "cvssp/audioldm2-music": ("AudioLDM2Pipeline", "AudioLDM2UNet2DConditionModel", [128, 256, 384, 640], 1,
                              CROSS_2, 20, 347, 1118),
    "cvssp/audioldm-s-full-v2": ("AudioLDMPipeline", "UNet2DConditionModel", [128, 256, 384, 640], 1, None,
                                 10, 185, 421),
    "cvssp/audioldm-m-full": ("AudioLDMPipeline", "UNet2DConditionModel", [192, 384, 576, 960], 1, None,
                              10, 416, 652),
    "cvssp/audioldm-l-full": ("AudioLDMPipeline", "UNet2DConditionModel", [256, 512, 768, 1280], 1, None,
                              10, 739, 975),
    "ucsd-reach/musicldm": ("MusicLDMPipeline", "UNet2DConditionModel", [128, 256, 384, 640], 1, None,
                            10, 185, 490),
}
# the tiny variant with each UNet layout (AudioLDM medium and large share audioldm-tiny's: only widths differ)
TINY_LAYOUT = {"audioldm2": "audioldm2-tiny", "audioldm2-large": "audioldm2-large-tiny", "audioldm": "audioldm-tiny",
               "audioldm-m": "audioldm-tiny", "audioldm-l": "audioldm-tiny", "musicldm": "musicldm-tiny"}


def meta_pipeline(name: str) -> Any:
    """The real-size pipeline of built-in spec ``name`` on the meta device (no weights allocated)."""
    import diffusers

    spec = RANDOM_SPECS[name]
    with torch.device("meta"):
        components = {c: build_component(spec, c) for c in spec.components}
    cls = next(cls for cls, kind in PIPELINE_CLASSES.items() if kind == spec.kind)
    return getattr(diffusers, cls)(**components)


def millions(module: torch.nn.Module) -> int:
    return round(sum(p.numel() for p in module.parameters()) / 1e6)


def test_the_table_covers_every_published_checkpoint():
    assert set(HUB_ARCHITECTURES) == set(PUBLISHED)
    assert set(HUB_ARCHITECTURES.values()) <= set(RANDOM_SPECS) and set(TINY_LAYOUT) == set(HUB_ARCHITECTURES.values())


@pytest.mark.parametrize("repo_id", list(PUBLISHED))
def test_real_size_structure(repo_id):
    pipeline_class, unet_class, channels, depth, cross, f8, unet_m, total_m = PUBLISHED[repo_id]
    name = HUB_ARCHITECTURES[repo_id]
    pipe = meta_pipeline(name)
    assert type(pipe).__name__ == pipeline_class and type(pipe.unet).__name__ == unet_class
    config = pipe.unet.config
    assert list(config.block_out_channels) == channels and config.layers_per_block == 2
    assert config.transformer_layers_per_block == depth
    if cross is not None:
        assert [list(level) for level in config.cross_attention_dim] == [cross] * 4
    else:  # AudioLDM / MusicLDM: no text context, CLAP embedding as class label
        assert list(config.cross_attention_dim) == channels and config.projection_class_embeddings_input_dim == 512
    geometry = pipeline_geometry(pipe)
    assert (geometry.sample_rate, geometry.latent_freq_bins) == (16000, 16)
    layers = find_self_attention_layers(pipe.unet, geometry.latent_freq_bins, (8,),
                                        pipeline_kind(pipe) in CONTEXT_FREE_KINDS)
    assert len(layers) == f8 and {layer.freq_bins for layer in layers} == {8}
    assert {layer.name.split(".")[0] + "." + layer.name.split(".")[1] for layer in layers} == \
        {"down_blocks.1", "up_blocks.2"}
    assert millions(pipe.unet) == unet_m
    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    assert sum(sum(p.numel() for p in m.parameters()) for m in modules) / 1e6 == pytest.approx(total_m, abs=1)


@pytest.mark.parametrize("layout", sorted(set(TINY_LAYOUT.values())))
def test_tiny_layout_builds_patches_and_runs(tiny_pipeline_factory, layout):
    pipe = tiny_pipeline_factory(f"random:{layout}")
    kind = pipeline_kind(pipe)
    real = next(name for name, tiny in TINY_LAYOUT.items() if tiny == layout)
    expected = next(v[5] for k, v in PUBLISHED.items() if HUB_ARCHITECTURES[k] == real)
    geometry = pipeline_geometry(pipe)
    inputs = unet_inputs(kind, pipe.unet.config, geometry.latent_freq_bins)
    feeds = {k: torch.from_numpy(v) for k, v in example_unet_feeds(inputs, frames=16, seed=0).items()}
    sample, timestep, kwargs = unet_call_arguments(feeds)

    def forward() -> np.ndarray:
        with torch.inference_mode():
            return pipe.unet(sample, timestep, **kwargs, return_dict=False)[0].numpy()

    full = forward()
    names = patch(pipe, LiteFocusConfig(levels=(8,), seed=0))
    assert len(names) == expected
    sparse = forward()
    unpatch(pipe)
    assert sparse.shape == full.shape == tuple(sample.shape[:1]) + (8, 16, 16)
    assert np.isfinite(sparse).all() and not np.array_equal(sparse, full)
    np.testing.assert_array_equal(forward(), full)  # unpatched: the stock UNet again


@pytest.mark.slow
def test_export_follows_the_large_layout(tmp_path):
    """One UNet export of the AudioLDM2-large layout: 60 patched layers in one index input, verified against
    PyTorch (minutes on 2 busy cores, hence slow)."""
    from litefocus_export.export import ExportSettings, export_pipeline

    manifest = export_pipeline("random:audioldm2-large-tiny", tmp_path / "export",
                               ExportSettings(stages=("unet",), verify=True))
    assert manifest["stages"]["unet"]["inputs"]["litefocus_index_8"]["shape"][0] == 60
    assert all(v["max_rel"] < 1e-3 for v in manifest["verification"].values())
