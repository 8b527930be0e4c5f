"""Torch-free text conditioning and decoding against the diffusers pipelines' own encode and decode."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from litefocus_export.backends.onnxruntime import OrtStage
from litefocus_export.core.contract import MAX_NEW_TOKENS_KEY
from litefocus_export.core.errors import EngineError, UsageError
from litefocus_export.runtime.conditioning import TextConditioner, TextTokenizer
from litefocus_export.runtime.decode import AudioDecoder, trim_waveform

torch = pytest.importorskip("torch")
# The AudioLDM2 pipeline's own generation loop passes past_key_values (transformers 5 deprecation): not ours.
pytestmark = pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")

TINY = ["random:audioldm2-tiny", "random:audioldm-tiny", "random:musicldm-tiny"]
# (prompt, negative prompt, guidance): default negative, a long negative (truncated to the prompt's T5 length
# / CLAP width), no guidance, an empty prompt, and prompts past the tokenizers' maximum lengths.
CASES = [
    ("a dog barking in the rain", None, 3.5),
    ("techno beat", "low quality, noisy, distorted, muffled, quiet, with far too many words", 2.0),
    ("piano and violin", "noise", 1.0),
    ("", "wind", 3.0),
    ("rain " * 80, "bird " * 60, 2.5),
]
CASE_IDS = ["default-negative", "long-negative", "no-guidance", "empty-prompt", "truncated"]



class StageFiles:
    """``(stage, feeds) -> outputs`` over ``folder/<stage>.onnx`` (what ``EngineFolder.run`` is to an engine
    folder), recording which stages ran."""

    def __init__(self, folder):
        self.folder, self.stages, self.calls = folder, {}, []

    def __call__(self, stage, feeds):
        self.calls.append(stage)
        if stage not in self.stages:
            self.stages[stage] = OrtStage(self.folder / f"{stage}.onnx")
        return self.stages[stage](feeds)


@pytest.fixture(scope="module", params=TINY, ids=lambda spec: spec.split(":")[1])
def engine(request, tiny_pipeline_factory, tmp_path_factory):
    """``(pipe, kind, folder, max_new_tokens)``: a tiny pipeline with its non-UNet stages exported, once per module."""
    from litefocus_export.export.stages import export_stages
    from litefocus_export.models import pipeline_kind

    pipe = tiny_pipeline_factory(request.param)
    folder = tmp_path_factory.mktemp(request.param.split(":")[1])
    stages = export_stages(pipe, folder)
    max_new = stages.get("language_model", {}).get("metadata", {}).get(MAX_NEW_TOKENS_KEY)
    return pipe, pipeline_kind(pipe), folder, None if max_new is None else int(max_new)


def conditioner(engine, **kwargs) -> TextConditioner:
    _, kind, folder, max_new = engine
    return TextConditioner(folder, kind, kwargs.pop("run", None) or StageFiles(folder),
                           max_new_tokens=kwargs.pop("max_new_tokens", max_new), **kwargs)


def pipeline_conditioning(
    pipe, kind: str, prompt: str, negative: str | None, guidance: float, **kwargs
) -> dict[str, np.ndarray]:
    """The pipeline's own encode_prompt / _encode_prompt, named as the UNet arguments they feed."""
    cfg = guidance > 1.0
    with torch.no_grad():
        if kind == "audioldm2":
            embeds, mask, generated = pipe.encode_prompt(
                prompt, "cpu", 1, cfg, negative_prompt=negative, **kwargs
            )
            return {
                "encoder_hidden_states": generated.numpy(),
                "encoder_hidden_states_1": embeds.numpy(),
                "encoder_attention_mask_1": mask.numpy(),
            }
        return {"class_labels": pipe._encode_prompt(prompt, "cpu", 1, cfg, negative_prompt=negative).numpy()}


def assert_close(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], rel: float = 1e-4) -> None:
    assert list(actual) == list(expected)
    for name, want in expected.items():
        got = actual[name]
        assert got.shape == want.shape and got.dtype == want.dtype, (name, got.shape, want.shape, got.dtype)
        assert np.abs(got - want).max() <= rel * np.abs(want).max(), name


class TestTextConditioner:
    @pytest.mark.parametrize("prompt, negative, guidance", CASES, ids=CASE_IDS)
    def test_matches_the_pipeline(self, engine, prompt, negative, guidance):
        pipe, kind, _, _ = engine
        actual = conditioner(engine).encode(prompt, negative, guidance)
        assert_close(actual, pipeline_conditioning(pipe, kind, prompt, negative, guidance))

    def test_default_guidance_doubles_the_batch(self, engine):
        kind = engine[1]
        out = conditioner(engine).encode("a cat")
        assert all(v.shape[0] == 2 for v in out.values())
        if kind == "audioldm2":
            assert out["encoder_attention_mask_1"].dtype == np.int64
            assert out["encoder_hidden_states"].shape[1] == 8

    def test_every_stage_runs_through_the_given_runner(self, engine):
        kind, folder = engine[1], engine[2]
        run = StageFiles(folder)
        conditioner(engine, run=run).encode("a cat", "noise", 3.0)
        # AudioLDM2: one CLAP call for both rows (both padded to the maximum); AudioLDM / MusicLDM pad the
        # negative prompt to another width, so two
        assert run.calls.count("text_encoder") == (1 if kind == "audioldm2" else 2)
        assert run.calls.count("language_model") == (8 if kind == "audioldm2" else 0)

    def test_a_batch_equals_each_request_alone(self, engine):
        """Every case of CASES in one batch (different prompt lengths, guided and not): each result equals the
        request encoded alone, and each text stage runs once per distinct input shape, the LM once per step."""
        kind, folder = engine[1], engine[2]
        run = StageFiles(folder)
        batched = conditioner(engine, run=run).encode_batch(CASES)
        for case, got in zip(CASES, batched):
            alone = conditioner(engine).encode(*case)
            assert_close(got, alone, rel=1e-5)
        if kind == "audioldm2":
            assert run.calls.count("language_model") == 8 and run.calls.count("text_encoder_2") == 1

    def test_without_position_ids_the_lm_runs_per_row(self, engine):
        """Engine folders exported before the LM step took position_ids: rows run one at a time, same result."""
        kind, folder = engine[1], engine[2]
        if kind != "audioldm2":
            pytest.skip("only AudioLDM2 has a language model")
        files = StageFiles(folder)

        def old_runner(stage, feeds):  # an LM without the input: what it computes is arange positions
            if stage == "language_model":
                assert "position_ids" not in feeds
                feeds = {**feeds, "position_ids": np.tile(np.arange(feeds["attention_mask"].shape[1]),
                                                          (len(feeds["attention_mask"]), 1))}
            return files(stage, feeds)

        old = conditioner(engine, run=old_runner, lm_position_ids=False).encode_batch(CASES[:2])
        for got, want in zip(old, conditioner(engine).encode_batch(CASES[:2])):
            assert_close(got, want, rel=1e-5)
        assert files.calls.count("language_model") == 8 * 4  # four rows, each alone

    def test_max_new_tokens_override(self, engine):
        pipe, kind, _, _ = engine
        if kind != "audioldm2":
            pytest.skip("only AudioLDM2 has a language model")
        actual = conditioner(engine, max_new_tokens=3).encode("a cat", None, 3.5)
        assert actual["encoder_hidden_states"].shape[1] == 3
        assert_close(actual, pipeline_conditioning(pipe, kind, "a cat", None, 3.5, max_new_tokens=3))

    def test_bad_input(self, engine):
        _, kind, folder, _ = engine
        with pytest.raises(
            UsageError, match="unknown pipeline kind 'sd'; valid: audioldm2, audioldm, musicldm"
        ):
            TextConditioner(folder, "sd", StageFiles(folder))
        with pytest.raises(UsageError, match="prompt must be a string"):
            conditioner(engine).encode(["a", "b"])
        if kind == "audioldm2":
            with pytest.raises(EngineError, match="needs max_new_tokens"):
                TextConditioner(folder, kind, StageFiles(folder))


class TestTextTokenizer:
    @pytest.mark.parametrize(
        "text",
        ["", "a dog", "Ünïcode — ♪ music 123!", "word " * 200],
        ids=["empty", "short", "unicode", "long"],
    )
    @pytest.mark.parametrize("padding", ["max_length", "longest"])
    def test_matches_transformers(self, engine, text, padding):
        pipe, kind, folder, _ = engine
        names = ["tokenizer", "tokenizer_2"] if kind == "audioldm2" else ["tokenizer"]
        for name in names:
            reference = getattr(pipe, name)
            for max_length in (reference.model_max_length, 5):
                ids, mask = TextTokenizer.from_folder(folder / name)(
                    text, max_length=max_length, padding=padding
                )
                want = reference(
                    text,
                    padding=True if padding == "longest" else padding,
                    max_length=max_length,
                    truncation=True,
                    return_tensors="np",
                )
                np.testing.assert_array_equal(ids, want.input_ids)
                np.testing.assert_array_equal(mask, want.attention_mask)


class TestAudioDecoder:
    @pytest.mark.parametrize("rows_per_run", [None, 1])
    def test_matches_the_pipeline(self, engine, rows_per_run):
        pipe, _, folder, _ = engine
        latents = np.random.default_rng(0).standard_normal((2, 8, 13, 16)).astype(np.float32)
        with torch.no_grad():
            mel = pipe.vae.decode(1 / pipe.vae.config.scaling_factor * torch.from_numpy(latents)).sample
            if hasattr(pipe, "decode_latents"):
                torch.testing.assert_close(
                    pipe.decode_latents(torch.from_numpy(latents)), mel, rtol=0, atol=0
                )
            want = pipe.mel_spectrogram_to_waveform(mel).numpy()
        run = StageFiles(folder)
        got = AudioDecoder(run, rows_per_run=rows_per_run).decode(latents)
        assert run.calls.count("vae_decoder") == (2 if rows_per_run == 1 else 1)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()

    def test_trim(self):
        waveform = np.zeros((2, 16032), dtype=np.float32)
        assert trim_waveform(waveform, 16000).shape == (2, 16000)
        with pytest.raises(UsageError, match="num_samples must be positive"):
            trim_waveform(waveform, 0)


def test_runtime_is_torch_free(engine):
    """Encode and decode in a fresh interpreter without torch, transformers or diffusers loading."""
    _, kind, folder, max_new = engine
    code = f"""
import sys
import numpy as np
from litefocus_export.backends.onnxruntime import OrtStage
from litefocus_export.runtime.conditioning import TextConditioner
from litefocus_export.runtime.decode import AudioDecoder
run = lambda stage, feeds: OrtStage({str(folder)!r} + "/" + stage + ".onnx")(feeds)
out = TextConditioner({str(folder)!r}, {kind!r}, run, max_new_tokens={max_new!r}).encode("a dog barking", "noise", 3.0)
AudioDecoder(run).decode(np.zeros((1, 8, 5, 16), dtype=np.float32))
loaded = sorted(m for m in ("torch", "transformers", "diffusers") if m in sys.modules)
assert not loaded, loaded
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
