"""patch/unpatch on the three pipeline kinds: the layer set, outputs, exact restoration."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from litefocus_export.attention import (
    LiteFocusConfig,
    QueuedSamples,
    litefocus_state,
    patch,
    patch_unet,
    patched,
    unpatch,
)
from litefocus_export.attention.reference import dual_sparse_attention_reference
from litefocus_export.core.contract import CONTEXT_FREE_KINDS, unet_call_arguments
from litefocus_export.core.errors import UsageError
from litefocus_export.export.unet import unet_signature

KINDS = {"random:audioldm2-tiny": 20, "random:audioldm-tiny": 10, "random:musicldm-tiny": 10}


def unet_inputs(pipe, frames=13):
    return unet_call_arguments(unet_signature(pipe, frames=frames).inputs)


def run_unet(pipe, frames=13):
    sample, timestep, cond = unet_inputs(pipe, frames)
    with torch.no_grad():
        return pipe.unet(sample, timestep, **cond, return_dict=False)[0]


@pytest.mark.parametrize("spec,count", KINDS.items())
def test_patch_set_output_and_exact_unpatch(tiny_pipeline_factory, spec, count):
    pipe = tiny_pipeline_factory(spec)
    before = {name: proc for name, proc in pipe.unet.attn_processors.items()}
    stock = run_unet(pipe)

    names = patch(pipe)
    assert len(names) == count
    pattern = re.compile(r"^(down_blocks\.1|up_blocks\.2)\.attentions\.\d\.transformer_blocks\.0\.attn[12]$")
    assert all(pattern.match(n) for n in names), names
    assert sum(n.endswith("attn1") for n in names) == {20: 15, 10: 5}[count]
    assert not torch.equal(run_unet(pipe), stock)

    unpatch(pipe)
    assert litefocus_state(pipe) is None
    after = pipe.unet.attn_processors
    assert all(after[name] is proc for name, proc in before.items())
    assert torch.equal(run_unet(pipe), stock)


@pytest.mark.parametrize("spec", KINDS)
def test_patch_unet_on_a_bare_unet_is_patch(tiny_pipeline_factory, spec):
    """``patch_unet`` with the pipeline's geometry and context rule patches the same layers, the same way."""
    from litefocus_export.models import pipeline_geometry, pipeline_kind

    pipe = tiny_pipeline_factory(spec)
    stock = run_unet(pipe)
    names = patch(pipe, LiteFocusConfig(seed=3))
    patched_out = run_unet(pipe)
    unpatch(pipe)
    unet = pipe.unet
    bare = patch_unet(unet, LiteFocusConfig(seed=3), freq_bins=pipeline_geometry(pipe).latent_freq_bins,
                      context_free=pipeline_kind(pipe) in CONTEXT_FREE_KINDS)
    assert bare == names and litefocus_state(unet) is not None
    assert torch.equal(run_unet(pipe), patched_out)
    unpatch(unet)
    assert litefocus_state(unet) is None and torch.equal(run_unet(pipe), stock)


def test_processor_matches_reference_semantics(tiny_pipeline_factory):
    pipe = tiny_pipeline_factory()
    names = patch(pipe, LiteFocusConfig(sparse_ratio=0.25))
    attn = dict(pipe.unet.named_modules())[names[0]]
    frames, bins = 11, 8
    hidden = torch.randn(2, frames * bins, attn.to_q.in_features)
    index = np.array([3, 3, 40, 87], dtype=np.int64)
    attn.processor.samples = QueuedSamples({names[0]: [index]})
    with torch.no_grad():
        got = attn(hidden)
        heads = attn.heads
        q, k, v = (p(hidden).view(2, -1, heads, attn.to_q.out_features // heads).transpose(1, 2)
                   for p in (attn.to_q, attn.to_k, attn.to_v))
        ref = dual_sparse_attention_reference(q, k, v, torch.from_numpy(index), freq_bins=bins, scale=attn.scale)
        ref = attn.to_out[0](ref.transpose(1, 2).reshape(2, frames * bins, -1))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_samples_follow_the_seed(tiny_pipeline_factory):
    pipe = tiny_pipeline_factory()
    outputs = {}
    for seed in (0, 0, 1):
        with patched(pipe, LiteFocusConfig(seed=seed)):
            outputs.setdefault(seed, []).append(run_unet(pipe, frames=21))
    assert torch.equal(outputs[0][0], outputs[0][1])
    assert not torch.equal(outputs[0][0], outputs[1][0])


@pytest.mark.parametrize("frames", [9, 22, 37])
def test_any_duration_runs(tiny_pipeline_factory, frames):
    pipe = tiny_pipeline_factory()
    with patched(pipe):
        out = run_unet(pipe, frames=frames)
    assert out.shape[2] == frames and torch.isfinite(out).all()


def test_levels_select_other_widths(tiny_pipeline_factory):
    pipe = tiny_pipeline_factory()
    names = patch(pipe, LiteFocusConfig(levels=(8, 4)))
    assert any(n.startswith("down_blocks.2") for n in names) and any(n.startswith("up_blocks.1") for n in names)
    # execution order: every down block layer before the up blocks
    stages = [n.split(".")[0] for n in names]
    assert stages == sorted(stages, key=["down_blocks", "mid_block", "up_blocks"].index)
    with pytest.raises(UsageError, match="no self-attention at latent widths"):
        patch(pipe, LiteFocusConfig(levels=(3,)))


def test_config_rejects_bad_settings():
    with pytest.raises(UsageError, match="both are off"):
        LiteFocusConfig(same_frequency=False, cross_frequency=False)
    with pytest.raises(UsageError, match="sparse_ratio"):
        LiteFocusConfig(sparse_ratio=1.5)


@pytest.mark.parametrize("attention", ["litefocus", "full"])
def test_generate_with_torch_writes_a_wav_of_the_right_length(tmp_path, attention):
    import soundfile
    from click.testing import CliRunner

    from litefocus_export.cli import main

    out = tmp_path / "dog.wav"
    result = CliRunner().invoke(main, ["generate", "--backend", "torch", "--prompt", "a dog barking", "--seconds",
                                       "1.5", "--steps", "2", "--attention", attention, "--out", str(out)])
    assert result.exit_code == 0, result.output
    audio, rate = soundfile.read(out, dtype="float32")
    assert rate == 16000 and audio.shape == (24000,) and np.isfinite(audio).all()
