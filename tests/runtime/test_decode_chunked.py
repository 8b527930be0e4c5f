"""Exact chunked vocoder: margins from the HiFi-GAN config, chunks stitched into the one-shot waveform on
PyTorch and ONNX Runtime for any chunk length; ORT stages without a CPU arena."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from litefocus_export.backends.onnxruntime.runner import OrtStage
from litefocus_export.core.contract import VOCODER_FIELD_KEY
from litefocus_export.core.errors import EngineError, UsageError
from litefocus_export.core.vocoder_field import VocoderField
from litefocus_export.export.stages import export_stage
from litefocus_export.models.specs import VOCODER
from litefocus_export.runtime.decode import AudioDecoder, chunked_torch_vocoder, chunked_vocode

CHUNKS = [2, 7, 23, 64, 159, 160, 1000]  # around the margins (23), the clip (160 frames), past it


def relative(got, want) -> float:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.fixture(scope="module")
def vocoder(tiny_pipeline_factory):
    return tiny_pipeline_factory("random:audioldm2-tiny").vocoder.eval()


@pytest.fixture(scope="module")
def vocoder_onnx(tiny_pipeline_factory, tmp_path_factory):
    """The tiny AudioLDM2 vocoder stage exported alone (~1 s) and its description."""
    pipe = tiny_pipeline_factory("random:audioldm2-tiny")
    folder = tmp_path_factory.mktemp("vocoder")
    description = export_stage(pipe, "audioldm2", "vocoder", folder)
    return folder / description["file"], description


def test_field_is_computed_from_the_config():
    # AudioLDM's HiFi-GAN: 160 samples per mel frame, 23 frames each side (the widest residual block, kernel 11
    # dilations 1, 3, 5, at 1/5 frame, dominates).
    assert VocoderField.from_config(VOCODER) == VocoderField(160, 23, 23)
    narrow = {**VOCODER, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1]]}
    assert VocoderField.from_config(narrow).left < 23
    with pytest.raises(UsageError):
        VocoderField.from_config({"upsample_rates": [2]})


def test_field_covers_the_measured_receptive_field(vocoder):
    """An impulse at one mel frame changes samples no further than the margins (float64, so nothing hides)."""
    model = dataclasses.replace(VocoderField.from_config(vocoder.config.to_dict()))
    voc = type(vocoder)(vocoder.config).double().eval()
    mel = torch.randn(1, 120, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    bumped = mel.clone()
    bumped[0, 60] += 1
    with torch.no_grad():
        changed = torch.nonzero((voc(bumped) - voc(mel))[0] != 0).flatten()
    reach_left = (60 * model.hop - int(changed.min())) / model.hop
    reach_right = (int(changed.max()) + 1 - 61 * model.hop) / model.hop
    assert reach_left <= model.left and reach_right <= model.right
    assert model.left <= reach_left + 2 and model.right <= reach_right + 2  # computed, not padded by guesswork


@pytest.mark.parametrize("frames", [1, 45, 160])
def test_torch_chunks_equal_one_shot(vocoder, frames):
    field = VocoderField.from_config(vocoder.config.to_dict())
    mel = torch.randn(2, frames, 64, generator=torch.Generator().manual_seed(frames))
    with torch.no_grad():
        want = vocoder(mel)
        for chunk in CHUNKS:
            got = chunked_vocode(vocoder, mel, field, chunk, concat=lambda p: torch.cat(p, -1))
            assert relative(got, want) <= 1e-5, chunk
        with chunked_torch_vocoder(vocoder, chunk_frames=50):
            assert relative(vocoder(mel), want) <= 1e-5
    assert "forward" not in vars(vocoder)  # the pipeline's vocoder is itself again


def test_generate_torch_chunks_the_vocoder_by_default(tiny_pipeline_factory, monkeypatch):
    """The PyTorch path decodes in chunks unless told 0 (the stock pipeline), with the same waveform."""
    from litefocus_export import pytorch
    from litefocus_export.core.request import GenerationRequest
    from litefocus_export.runtime import decode

    pipe = tiny_pipeline_factory("random:audioldm2-tiny")
    request = GenerationRequest(prompt="rain", seconds=2.0, steps=2, seed=3)  # 200 mel frames
    calls = []
    forward = pipe.vocoder.forward
    monkeypatch.setattr(pipe.vocoder, "forward", lambda mel, *a, **k: calls.append(mel.shape[1]) or forward(mel))
    stock = pytorch.generate_torch(pipe, request, vocoder_chunk_frames=0)
    assert calls == [200]
    monkeypatch.setattr(decode, "DEFAULT_CHUNK_FRAMES", 64)
    chunked = pytorch.generate_torch(pipe, request)
    assert len(calls) > 2 and max(calls[1:]) <= 64 + 2 * 23
    assert relative(chunked, stock) <= 1e-5


def test_ort_chunks_equal_one_shot_and_torch(vocoder, vocoder_onnx):
    path, description = vocoder_onnx
    field = VocoderField.from_json(description["metadata"][VOCODER_FIELD_KEY])
    assert field == VocoderField.from_config(vocoder.config.to_dict())
    stage = OrtStage(path, threads=1)
    mel = np.random.default_rng(0).standard_normal((2, 1, 160, 64), dtype=np.float32)
    one_shot = AudioDecoder(lambda name, feeds: stage(feeds)).vocode(mel)
    with torch.no_grad():
        reference = vocoder(torch.from_numpy(mel[:, 0])).numpy()
    assert relative(one_shot, reference) <= 1e-5
    for chunk in CHUNKS:
        decoder = AudioDecoder(lambda name, feeds: stage(feeds), field, chunk_frames=chunk)
        assert relative(decoder.vocode(mel), one_shot) <= 1e-5, chunk


def test_engine_folder_without_a_field_decodes_one_shot():
    calls = []

    class Engines:
        manifest = {"backend": {"name": "onnxruntime", "device": "cpu"}, "stages": {"vocoder": {"metadata": {}}}}

        def stage(self, name):
            return self.manifest["stages"][name]

        def run(self, name, feeds):
            calls.append(feeds["mel"].shape)
            return {"waveform": np.zeros((feeds["mel"].shape[0], 160 * feeds["mel"].shape[2]), np.float32)}

    decoder = AudioDecoder.for_engines(Engines(), chunk_frames=10)
    assert decoder.vocoder_field is None
    assert decoder.vocode(np.zeros((1, 1, 95, 64), np.float32)).shape == (1, 95 * 160)
    assert calls == [(1, 1, 95, 64)]
    Engines.manifest["stages"]["vocoder"]["metadata"] = {VOCODER_FIELD_KEY: VocoderField(160, 3, 3).to_json()}
    calls.clear()
    AudioDecoder.for_engines(Engines(), chunk_frames=10).vocode(np.zeros((1, 1, 95, 64), np.float32))
    assert len(calls) == 10 and calls[0] == (1, 1, 13, 64) and calls[-1] == (1, 1, 8, 64)


def test_bad_fields_and_chunks_are_refused():
    with pytest.raises(EngineError):
        VocoderField.from_json('{"hop": 0, "left": 1, "right": 1}')
    with pytest.raises(EngineError):
        VocoderField.from_json("not json")
    with pytest.raises(UsageError):
        AudioDecoder(lambda name, feeds: {}, chunk_frames=-1)


def test_ort_stages_keep_no_arena(vocoder_onnx):
    path, _ = vocoder_onnx
    stage = OrtStage(path, threads=1)
    assert stage.arena is False and stage.run_options is None
    assert stage.session.get_session_options().enable_cpu_mem_arena is False
    shrinking = OrtStage(path, threads=1, arena=True)
    assert shrinking.session.get_session_options().enable_cpu_mem_arena is True
    mel = np.zeros((1, 1, 20, 64), np.float32)
    np.testing.assert_array_equal(shrinking({"mel": mel})["waveform"], stage({"mel": mel})["waveform"])
