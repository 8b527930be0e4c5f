"""litefocus_export.models: offline random pipelines, snapshot folders, specs and fingerprints."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from litefocus_export.core.errors import UsageError
from litefocus_export.models import (
    BUILTIN_SPECS,
    build_component,
    load_pipeline,
    load_unet,
    pipeline_kind,
    spec_fingerprint,
)

TINY = {kind: f"random:{kind}-tiny" for kind in ("audioldm2", "audioldm", "musicldm")}
REAL = [f"random:{kind}" for kind in TINY]
COMPONENTS = {
    "audioldm2": {
        "vae", "text_encoder", "text_encoder_2", "projection_model", "language_model", "tokenizer",
        "tokenizer_2", "feature_extractor", "unet", "scheduler", "vocoder",
    },
    "audioldm": {"vae", "text_encoder", "tokenizer", "unet", "scheduler", "vocoder"},
    "musicldm": {"vae", "text_encoder", "tokenizer", "feature_extractor", "unet", "scheduler", "vocoder"},
}  # fmt: skip
# Self-attention layers at the F = 8 level (down_blocks.1 + up_blocks.2), docs/design.md §6.
F8_SELF_ATTENTIONS = {"audioldm2": 20, "audioldm": 10, "musicldm": 10}



def _generate(pipe, seconds: float = 2.0) -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    return pipe("a dog barking", num_inference_steps=2, audio_length_in_s=seconds, generator=generator).audios


def _unet_inputs(pipe, kind: str) -> dict:
    generator = torch.Generator().manual_seed(1)
    inputs = {"sample": torch.randn(2, 8, 12, 16, generator=generator), "timestep": torch.tensor(500)}
    if kind == "audioldm2":
        gpt2, t5 = pipe.language_model.config.n_embd, pipe.text_encoder_2.config.d_model
        inputs["encoder_hidden_states"] = torch.randn(2, 8, gpt2, generator=generator)
        inputs["encoder_hidden_states_1"] = torch.randn(2, 5, t5, generator=generator)
    else:
        dim = pipe.unet.config.projection_class_embeddings_input_dim
        # As the pipelines call it: no text context, the CLAP embedding as class label.
        inputs["encoder_hidden_states"] = None
        inputs["class_labels"] = torch.randn(2, dim, generator=generator)
    return inputs


def _unet_out(unet, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return unet(**inputs, return_dict=False)[0]


class TestSpecs:
    def test_builtin_names(self):
        assert {*TINY.values(), *REAL} <= set(BUILTIN_SPECS)  # plus the other checkpoints (test_checkpoints.py)

    def test_fingerprint_stable_and_distinct(self):
        prints = [spec_fingerprint(spec) for spec in BUILTIN_SPECS]
        assert prints == [spec_fingerprint(spec) for spec in BUILTIN_SPECS]
        assert len(set(prints)) == len(BUILTIN_SPECS)

    def test_folder_fingerprint_tracks_configs(self, tmp_path):
        (tmp_path / "unet").mkdir()
        (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "AudioLDM2Pipeline"}))
        (tmp_path / "unet" / "config.json").write_text(json.dumps({"in_channels": 8}))
        first = spec_fingerprint(tmp_path)
        assert spec_fingerprint(str(tmp_path)) == first
        (tmp_path / "unet" / "config.json").write_text(json.dumps({"in_channels": 4}))
        assert spec_fingerprint(tmp_path) != first

    @pytest.mark.parametrize("entry", [spec_fingerprint, load_pipeline, load_unet])
    def test_unknown_spec(self, entry):
        with pytest.raises(UsageError, match=r"unknown model spec 'random:nope'.*random:audioldm2-tiny"):
            entry("random:nope")

    def test_missing_folder(self, tmp_path):
        with pytest.raises(UsageError, match="neither a built-in spec nor a folder.*random:musicldm"):
            load_pipeline(tmp_path / "absent")

    def test_folder_without_index(self, tmp_path):
        with pytest.raises(UsageError, match="has no model_index.json"):
            load_pipeline(tmp_path)

    def test_folder_with_other_pipeline(self, tmp_path):
        (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
        with pytest.raises(UsageError, match="supported pipelines: AudioLDM2Pipeline"):
            load_pipeline(tmp_path)

    def test_bad_component_and_dtype(self):
        with pytest.raises(UsageError, match="has no component 'language_model'"):
            build_component("random:audioldm-tiny", "language_model")
        with pytest.raises(UsageError, match="unknown dtype"):
            load_unet("random:audioldm-tiny", dtype="float7")

    def test_pipeline_kind_rejects_others(self):
        with pytest.raises(UsageError, match="unsupported pipeline"):
            pipeline_kind(object())


class TestRandomBuild:
    @pytest.mark.parametrize("kind", list(TINY))
    def test_deterministic_and_rng_neutral(self, kind):
        state = torch.random.get_rng_state()
        first, second = build_component(TINY[kind], "unet"), build_component(TINY[kind], "unet")
        assert torch.equal(state, torch.random.get_rng_state())
        a, b = first.state_dict(), second.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def test_tiny_build_time(self):
        start = time.perf_counter()
        load_pipeline("random:audioldm2-tiny")
        assert time.perf_counter() - start < 10

    @pytest.mark.parametrize("kind", list(TINY))
    def test_components_and_geometry(self, tiny_pipeline_factory, kind):
        pipe = tiny_pipeline_factory(TINY[kind])
        assert pipeline_kind(pipe) == kind
        assert {name for name, value in pipe.components.items() if value is not None} == COMPONENTS[kind]
        vocoder = pipe.vocoder.config
        hop = int(np.prod(vocoder.upsample_rates))
        assert (vocoder.model_in_dim, vocoder.sampling_rate, hop) == (64, 16000, 160)
        assert pipe.vae_scale_factor == 4 and pipe.unet.config.in_channels == 8
        assert len(pipe.unet.config.block_out_channels) == 4

    @pytest.mark.parametrize("kind", list(TINY))
    def test_attention_at_f8(self, tiny_pipeline_factory, kind):
        pipe = tiny_pipeline_factory(TINY[kind])
        widths = []
        hook = (
            pipe.unet.down_blocks[1]
            .attentions[0]
            .register_forward_pre_hook(lambda module, args: widths.append(args[0].shape[-1]))
        )
        _unet_out(pipe.unet, _unet_inputs(pipe, kind))
        hook.remove()
        assert widths == [8]
        self_attentions = [
            name
            for name, module in pipe.unet.named_modules()
            if name.startswith(("down_blocks.1.", "up_blocks.2."))
            and type(module).__name__ == "Attention"
            and (kind != "audioldm2" or not module.is_cross_attention)
        ]
        assert len(self_attentions) == F8_SELF_ATTENTIONS[kind]


class TestPipelines:
    @pytest.mark.parametrize("kind", list(TINY))
    def test_end_to_end(self, tiny_pipeline_factory, kind):
        audio = _generate(tiny_pipeline_factory(TINY[kind]))
        assert audio.shape == (1, 32000)
        assert np.isfinite(audio).all() and audio.std() > 1e-4

    @pytest.mark.parametrize("kind", list(TINY))
    def test_save_and_reload(self, tiny_pipeline_factory, tmp_path, kind):
        pipe = tiny_pipeline_factory(TINY[kind])
        pipe.save_pretrained(tmp_path)
        loaded = load_pipeline(tmp_path)
        loaded.set_progress_bar_config(disable=True)
        assert pipeline_kind(loaded) == kind
        inputs = _unet_inputs(pipe, kind)
        expected = _unet_out(pipe.unet, inputs)
        torch.testing.assert_close(_unet_out(loaded.unet, inputs), expected, rtol=0, atol=0)
        torch.testing.assert_close(_unet_out(load_unet(tmp_path), inputs), expected, rtol=0, atol=0)
        np.testing.assert_allclose(_generate(loaded), _generate(pipe), rtol=1e-4, atol=1e-5)
        assert spec_fingerprint(tmp_path) == spec_fingerprint(tmp_path)

    def test_snapshot_with_gpt2model(self, tiny_pipeline_factory, tmp_path):
        """The public AudioLDM2 checkpoints name GPT2Model; it must load as GPT2LMHeadModel and match."""
        from transformers import GPT2Model

        pipe = tiny_pipeline_factory()
        pipe.save_pretrained(tmp_path)
        base = GPT2Model(pipe.language_model.config)
        base.load_state_dict(pipe.language_model.transformer.state_dict())
        base.save_pretrained(tmp_path / "language_model")
        index = json.loads((tmp_path / "model_index.json").read_text())
        index["language_model"] = ["transformers", "GPT2Model"]
        (tmp_path / "model_index.json").write_text(json.dumps(index))
        loaded = load_pipeline(tmp_path)
        loaded.set_progress_bar_config(disable=True)
        assert type(loaded.language_model).__name__ == "GPT2LMHeadModel"
        np.testing.assert_allclose(_generate(loaded), _generate(pipe), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
class TestRealSize:
    def test_audioldm2_unet_only(self):
        unet = load_unet("random:audioldm2")
        assert 346e6 < sum(p.numel() for p in unet.parameters()) < 348e6
        assert list(unet.config.block_out_channels) == [128, 256, 384, 640]

    @pytest.mark.parametrize("spec", REAL)
    def test_pipeline_runs(self, spec):
        pipe = load_pipeline(spec)
        pipe.set_progress_bar_config(disable=True)
        audio = _generate(pipe, seconds=1.0)
        assert audio.shape == (1, 16000) and np.isfinite(audio).all()
