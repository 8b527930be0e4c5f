"""Engines + torch-free runtime: the main job end to end, parity with diffusers, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from litefocus_export.artifacts.manifest import read_manifest
from litefocus_export.backends.build import BuildSettings, build_engines
from litefocus_export.cli import main
from litefocus_export.core.errors import EngineError
from litefocus_export.core.request import GenerationRequest
from litefocus_export.runtime import Sampler


def test_build_writes_a_complete_manifest(tiny_build):
    engines, _, _ = tiny_build
    manifest = read_manifest(engines)
    assert manifest["kind"] == "engine" and manifest["backend"]["name"] == "onnxruntime"
    assert manifest["profiles"] == [{"min_s": 1.0, "opt_s": 80.0, "max_s": 80.0}]
    assert manifest["latent_frames"] == [25, 2000, 2000]
    assert {"unet", "text_encoder", "vae_decoder", "vocoder"} <= set(manifest["stages"])
    assert all(len(entry["sha256"]) == 64 for entry in manifest["files"].values())
    assert not [p for p in engines.parent.iterdir() if ".partial-" in p.name]


def test_rebuild_reuses_and_other_keys_do_not_collide(tiny_build, tiny_short_build):
    engines, _, settings = tiny_build
    before = (engines / "manifest.json").stat().st_mtime_ns
    assert build_engines(settings, engines.parent) == engines
    assert (engines / "manifest.json").stat().st_mtime_ns == before
    other = BuildSettings(profile=settings.profile, export=settings.export, device="cpu", backend="onnxruntime",
                          attention_impl="plugin")
    assert build_engines(other, engines.parent) == engines  # attention_impl is TensorRT-only: same key
    # another profile of the same export: its own folder and key
    assert tiny_short_build.name != engines.name
    assert read_manifest(tiny_short_build)["engine_key"] != read_manifest(engines)["engine_key"]


def test_main_job_generates_80_seconds_without_torch(tiny_build, tmp_path):
    engines, _, _ = tiny_build
    out = tmp_path / "out.wav"
    script = (
        "import sys\n"
        "from litefocus_export.cli import main\n"
        f"try:\n    main(['generate', '--engines', {str(engines)!r}, '--prompt', 'rain', '--seconds', '80',"
        f" '--steps', '2', '--out', {str(out)!r}])\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    audio, rate = soundfile.read(out, dtype="float32")
    assert rate == 16000 and audio.shape == (80 * 16000,) and np.isfinite(audio).all()


def test_runtime_matches_the_diffusers_pipeline(tiny_build, tiny_pipeline_factory):
    from litefocus_export.pytorch import generate_torch

    engines, _, _ = tiny_build
    request = GenerationRequest(prompt="a dog barking", seconds=2.0, steps=3, seed=7)
    expected = generate_torch(tiny_pipeline_factory(), request)
    got = Sampler(engines, progress=False)(request)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() / np.abs(expected).max() <= 1e-3


def test_a_batch_equals_each_request_alone(tiny_build):
    """Prompts of different lengths, negative prompts and guidance scales in one batch: every stage runs batched
    (text stages included), and each waveform equals the request alone."""
    engines, _, _ = tiny_build
    sampler = Sampler(engines, progress=False)
    requests = [GenerationRequest(prompt="rain", seconds=1.5, steps=2, seed=1),
                GenerationRequest(prompt="a dog barking twice in a long empty hallway", seconds=1.5, steps=2, seed=2,
                                  negative_prompt="low quality, noisy and muffled", guidance=5.0),
                GenerationRequest(prompt="wind", seconds=1.5, steps=2, seed=3, guidance=2.0)]
    batched = sampler.generate_batch(requests)
    for request, waveform in zip(requests, batched):
        alone = sampler(request)
        assert waveform.shape == alone.shape
        assert np.abs(waveform - alone).max() <= 1e-5 * np.abs(alone).max(), request


def test_engines_with_a_batch_limit_run_sub_batches(tiny_build, tmp_path):
    """Stages built for at most 2 rows (what a TensorRT build records): three guided requests run one at a
    time, each equal to the request alone; a bad limit is refused in one line."""
    engines, _, _ = tiny_build
    copy = tmp_path / "engines"
    shutil.copytree(engines, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for stage in manifest["stages"].values():
        stage["max_batch"] = 2
    (copy / "manifest.json").write_text(json.dumps(manifest))
    sampler = Sampler(copy, progress=False)
    assert Sampler(engines, progress=False).decoder.rows_per_run == 1  # ONNX Runtime on CPU: one row per run
    assert sampler.engines.max_batch == 2 and sampler.max_requests(True) == 1 and sampler.max_requests(False) == 2
    rows = []
    step = sampler.engines.unet_step
    sampler.engines.unet_step = lambda feeds, *a: rows.append(len(feeds["sample"])) or step(feeds, *a)
    requests = [GenerationRequest(prompt=p, seconds=1.5, steps=2, seed=i)
                for i, p in enumerate(["rain", "wind", "sea"])]
    batched = sampler.generate_batch(requests)
    assert rows == [2] * 6  # 3 sub-batches x 2 steps, never more than 2 rows
    for request, waveform in zip(requests, batched):
        alone = Sampler(engines, progress=False)(request)
        assert np.abs(waveform - alone).max() <= 1e-5 * np.abs(alone).max()
    manifest["stages"]["unet"]["max_batch"] = 0
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match="max_batch"):
        Sampler(copy, progress=False)


@pytest.mark.parametrize("scheduler", ["ddim", "dpm"])
def test_same_seed_same_audio(tiny_build, scheduler):
    engines, _, _ = tiny_build
    sampler = Sampler(engines, progress=False)
    make = lambda seed: GenerationRequest(prompt="wind", seconds=1.5, steps=2, seed=seed, scheduler=scheduler)  # noqa: E731
    a, b, c = sampler(make(1)), sampler(make(1)), sampler(make(2))
    assert np.array_equal(a, b) and not np.allclose(a, c)


@pytest.mark.parametrize("args,message", [
    (["--seconds", "0"], "positive"),
    (["--seconds", "-3"], "positive"),
    (["--seconds", "abc"], "must be a number"),
    (["--seconds", "81"], "outside every built profile (built: 1-80 s)"),
    (["--steps", "0"], "steps must be an integer in 1..1000"),
])
def test_bad_generate_input(tiny_build, tmp_path, args, message):
    engines, _, _ = tiny_build
    out = tmp_path / "x.wav"
    result = CliRunner().invoke(main, ["generate", "--engines", str(engines), "--prompt", "p", "--out", str(out),
                                       "--steps", "1", *args])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    assert not out.exists()


def corrupt(folder, tmp_path, how):
    copy = tmp_path / "engines"
    shutil.copytree(folder, copy)
    if how == "tamper":
        path = copy / "vocoder.onnx"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "missing":
        (copy / "vae_decoder.onnx").unlink()
    elif how == "broken":
        (copy / "manifest.json").write_text("{not json")
    elif how == "newer":
        manifest = json.loads((copy / "manifest.json").read_text())
        (copy / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    elif how == "older":  # format 1: engines that take one (L, M) sample for the whole batch
        manifest = json.loads((copy / "manifest.json").read_text())
        (copy / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    return copy


@pytest.mark.parametrize("how,message", [("tamper", "does not match its sha256"), ("missing", "is missing"),
                                         ("broken", "not valid JSON"), ("newer", "format version 99"),
                                         ("older", "built by an older version of litefocus-export")])
def test_damaged_engine_folders_are_refused(tiny_build, tmp_path, how, message):
    engines, _, _ = tiny_build
    with pytest.raises(EngineError, match=message):
        Sampler(corrupt(engines, tmp_path, how))
    result = CliRunner().invoke(main, ["inspect", str(corrupt(engines, tmp_path / "cli", how))])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_unwritable_wav_destination(tiny_build, tmp_path):
    engines, _, _ = tiny_build
    result = CliRunner().invoke(main, ["generate", "--engines", str(engines), "--prompt", "p", "--seconds", "1",
                                       "--steps", "1", "--out", str(tmp_path / "no" / "such" / "x.wav")])
    assert result.exit_code == 2 and "output folder does not exist" in result.output


def test_inspect_summarises(tiny_build):
    engines, _, _ = tiny_build
    result = CliRunner().invoke(main, ["inspect", str(engines)])
    assert result.exit_code == 0 and "onnxruntime" in result.output and "1-80 s" in result.output


def test_unet_step_gives_each_request_its_own_samples(tiny_build):
    """A guided batch of two requests, rows [uncond 0, uncond 1, cond 0, cond 1]: each request's rows get its own
    draw (both of its rows the same one), so its output is what it gets alone with its generator."""
    from litefocus_export.core.contract import example_unet_feeds
    from litefocus_export.runtime import EngineFolder

    engines, _, _ = tiny_build
    folder = EngineFolder(engines, stages=("unet",))
    feeds = example_unet_feeds(folder.stage("unet")["inputs"], 25, seed=2, batch=4)  # no index inputs
    batched = folder.unet_step(feeds, [np.random.default_rng(1), np.random.default_rng(2)], [0, 1, 0, 1])
    for request, seed in enumerate((1, 2)):
        rows = [request, request + 2]
        alone = folder.unet_step({k: v[rows] for k, v in feeds.items()}, np.random.default_rng(seed))
        assert np.abs(batched[rows] - alone).max() <= 1e-5 * np.abs(alone).max()
    same = folder.unet_step(feeds, [np.random.default_rng(1), np.random.default_rng(1)], [0, 1, 0, 1])
    assert np.abs(same[[1, 3]] - batched[[1, 3]]).max() > 1e-4 * np.abs(batched).max()  # samples matter
    default = folder.unet_step(feeds, [np.random.default_rng(1), np.random.default_rng(2)])  # guided layout
    assert np.array_equal(default, batched)
    with pytest.raises(EngineError, match="needs explicit rows"):
        folder.unet_step(feeds, [np.random.default_rng(1)] * 3)


def test_engine_folder_closes_its_runners(tiny_build):
    """The runner lifecycle: an engine folder used as a context manager closes every stage it opened."""
    from litefocus_export.runtime import EngineFolder

    engines, _, _ = tiny_build
    with EngineFolder(engines, stages=("vocoder",)) as folder:
        runner = folder.runner("vocoder")
        mel = np.zeros((1, 1, 8, 64), np.float32)
        assert folder.run("vocoder", {"mel": mel})["waveform"].shape[0] == 1
    with pytest.raises(EngineError, match="was closed"):
        runner({"mel": mel})
    with pytest.raises(EngineError, match=f"{folder.folder.name} was closed"):
        folder.run("vocoder", {"mel": mel})


def test_ort_stages_load_at_their_levels(tiny_build):
    """Only the VAE decoder loads with ORT's NCHWc layout transforms (ORT_ENABLE_ALL); the others at the saved
    graph's level, which keeps the UNet's long-audio memory down (backends/onnxruntime/runner.py)."""
    import platform

    import onnxruntime as ort

    from litefocus_export.core import heap
    from litefocus_export.runtime import EngineFolder

    engines, _, _ = tiny_build
    with EngineFolder(engines, stages=("unet", "vae_decoder", "vocoder")) as folder:
        levels = {name: folder.runner(name).session.get_session_options().graph_optimization_level
                  for name in ("unet", "vae_decoder", "vocoder")}
    level = ort.GraphOptimizationLevel
    assert levels == {"unet": level.ORT_ENABLE_EXTENDED, "vae_decoder": level.ORT_ENABLE_ALL,
                      "vocoder": level.ORT_ENABLE_EXTENDED}
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert heap._applied == (heap.threshold_from_env() or None)  # fixed as the stages opened
