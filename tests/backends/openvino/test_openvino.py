"""OpenVINO engines: parity with ONNX Runtime, errors per precision in the manifest, CPU features, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from litefocus_export.artifacts.manifest import read_manifest
from litefocus_export.backends.openvino.cpu import (
    FEATURES_OFF_ENV,
    OPENVINO_PRECISIONS,
    CpuFeatures,
    check_runs_here,
    cpu_features,
    resolve_precision,
)
from litefocus_export.cli import main
from litefocus_export.core.errors import EngineError, UsageError
from litefocus_export.core.request import GenerationRequest
from litefocus_export.runtime import Sampler

pytest.importorskip("openvino")
HAS_BF16 = cpu_features().bf16
NO_UNITS = CpuFeatures(model="test CPU", amx=False, avx512_bf16=False, vnni=False)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def one_line_error(result) -> str:  # noqa: ANN001
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_fp32_engines_equal_onnx_runtime(openvino_fp32_engines, tiny_build):
    """The whole generation on OpenVINO fp32 equals the ONNX Runtime engines with the same seed."""
    request = GenerationRequest(prompt="a dog barking", seconds=2.0, steps=3, seed=7)
    expected = Sampler(tiny_build[0], progress=False)(request)
    got = Sampler(openvino_fp32_engines, progress=False)(request)
    assert got.shape == expected.shape and rel(got, expected) <= 1e-4


def test_manifest_records_precision_files_and_errors(openvino_fp32_engines):
    manifest = read_manifest(openvino_fp32_engines)
    backend = manifest["backend"]
    assert manifest["precision"] == "fp32" and backend["name"] == "openvino" and backend["activations"] == "fp32"
    assert backend["cpu_features_required"] == []
    for name, stage in manifest["stages"].items():
        assert stage["engine"].endswith(".xml") and stage["weights_file"] in manifest["files"], name
        error = stage["error_vs_fp32"]
        assert error["reference"] == "onnxruntime" and error["rms_rel"] <= 1e-4 and error["max_rel"] <= 1e-3, name
    # the UNet's LiteFocus layers and full-attention layers are fused attention: no dense scores
    assert manifest["stages"]["unet"]["openvino_rewrites"]["softmax_attention"] > 0


def test_a_batch_equals_each_request_alone_and_same_seed_same_audio(openvino_fp32_engines):
    sampler = Sampler(openvino_fp32_engines, progress=False)
    requests = [GenerationRequest(prompt="rain", seconds=1.5, steps=2, seed=1),
                GenerationRequest(prompt="a dog barking twice in a long hallway", seconds=1.5, steps=2, seed=2,
                                  negative_prompt="noisy", guidance=5.0)]
    batched = sampler.generate_batch(requests)
    for request, waveform in zip(requests, batched):
        alone = sampler(request)
        assert rel(waveform, alone) <= 1e-5, request
        assert np.array_equal(alone, sampler(request))


@pytest.mark.slow  # default run <= 8 min (issue 23): bf16 engines of every stage, validated: ~65 s
@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16 units (the refusal is tested below)")
def test_bf16_engines_show_their_error_and_keep_same_seed_same_audio(openvino_engines, openvino_fp32_engines):
    engines = openvino_engines("bf16")
    manifest = read_manifest(engines)
    assert manifest["precision"] == "bf16" and manifest["backend"]["cpu_features_required"] == ["bf16"]
    assert manifest["backend"]["weights"] == "fp16"  # stored half size; the CPU plugin converts them to bf16
    for name, stage in manifest["stages"].items():
        assert stage["activations"] == "bf16"
        assert 1e-5 < stage["error_vs_fp32"]["rms_rel"] <= 0.1, name  # bf16 really ran, within its tolerance
    request = GenerationRequest(prompt="wind", seconds=1.5, steps=2, seed=3)
    sampler = Sampler(engines, progress=False)
    got = sampler(request)
    assert np.array_equal(got, sampler(request))
    fp32 = Sampler(openvino_fp32_engines, progress=False)(request)
    assert np.linalg.norm(got - fp32) / np.linalg.norm(fp32) <= 0.2
    # batched: another compiled shape, so equal within bf16's rounding rather than bit for bit
    other = GenerationRequest(prompt="a long and windy night by the sea", seconds=1.5, steps=2, seed=4)
    for waveform, alone in zip(sampler.generate_batch([request, other]), (got, sampler(other))):
        assert np.linalg.norm(waveform - alone) / np.linalg.norm(alone) <= 0.05


@pytest.mark.slow  # default run <= 8 min (issue 23): NNCF compression of every stage: ~50 s
def test_int8_compresses_the_weights(openvino_engines, openvino_fp32_engines):
    pytest.importorskip("nncf")
    engines = openvino_engines("int8")
    manifest, fp32 = read_manifest(engines), read_manifest(openvino_fp32_engines)
    assert manifest["precision"] == "int8" and manifest["backend"]["weights"] == "int8"
    weights = manifest["stages"]["unet"]["weights_file"]
    # the tiny model keeps a larger share in what stays fp32 (norms, biases); the real-size ratio is in the README
    assert manifest["files"][weights]["bytes"] < 0.8 * fp32["files"][weights]["bytes"]
    assert manifest["stages"]["unet"]["error_vs_fp32"]["rms_rel"] <= 0.1
    waveform = Sampler(engines, progress=False)(GenerationRequest(prompt="sea", seconds=1.0, steps=2, seed=4))
    assert np.isfinite(waveform).all()


def test_inspect_says_precision_cpu_and_errors(openvino_fp32_engines):
    result = CliRunner().invoke(main, ["inspect", str(openvino_fp32_engines)])
    assert result.exit_code == 0, result.output
    assert "precision  fp32" in result.output and "fp32 activations; needs nothing beyond fp32" in result.output
    assert "unet.xml  fp32, error vs fp32 at 10 s" in result.output


def test_a_folder_for_bf16_units_is_refused_on_a_cpu_without_them(openvino_fp32_engines, tmp_path, monkeypatch):
    copy = tmp_path / "engines"
    shutil.copytree(openvino_fp32_engines, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["precision"] = "bf16"
    manifest["backend"].update(activations="bf16", cpu_features_required=["bf16"])
    (copy / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv(FEATURES_OFF_ENV, "bf16")
    result = CliRunner().invoke(main, ["generate", "--engines", str(copy), "--prompt", "rain", "--seconds", "1",
                                       "--out", str(tmp_path / "out.wav")])
    assert result.exit_code == 1 and "has none (AMX-BF16 or AVX512-BF16)" in one_line_error(result)
    assert not (tmp_path / "out.wav").exists()


@pytest.mark.parametrize("args,env,message", [
    (["--precision", "bf16"], "bf16", "bf16 needs a CPU with AMX-BF16 or AVX512-BF16"),
    (["--precision", "fp16"], "", "precision must be one of auto, fp32, bf16, int8 for the openvino backend"),
    (["--precision", "int4"], "", "'int4' is not one of"),
    (["--device", "cuda"], "", "builds for the CPU"),
    (["--precision", "fp32"], "amx,nosuch", "unknown feature 'nosuch'"),
])
def test_bad_openvino_builds_are_one_line_and_write_nothing(tmp_path, monkeypatch, args, env, message):
    monkeypatch.setenv(FEATURES_OFF_ENV, env)
    out = tmp_path / "engines"
    result = CliRunner().invoke(main, ["build", "--backend", "openvino", "--seconds", "5", "--out", str(out), *args])
    assert result.exit_code == 2 and message in one_line_error(result)
    assert not out.exists()


def test_openvino_precisions_on_other_backends_are_refused(tmp_path):
    result = CliRunner().invoke(main, ["build", "--precision", "bf16", "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "is for --backend openvino" in one_line_error(result)


def test_int8_without_its_extra_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a))
    out = tmp_path / "engines"
    result = CliRunner().invoke(main, ["build", "--backend", "openvino", "--precision", "int8", "--seconds", "5",
                                       "--out", str(out)])
    assert result.exit_code == 2 and "pip install 'litefocus-export[int8]'" in one_line_error(result)
    assert not out.exists()


def test_auto_precision_follows_the_cpu(caplog):
    with_units = CpuFeatures(model="test CPU", amx=False, avx512_bf16=True, vnni=True)
    assert resolve_precision(None, with_units) == "bf16" and resolve_precision("auto", with_units) == "bf16"
    assert resolve_precision("auto", NO_UNITS) == "fp32"
    assert "has no bf16 units" in caplog.text and "building fp32" in caplog.text
    with pytest.raises(UsageError, match="bf16 needs"):
        resolve_precision("bf16", NO_UNITS)
    assert resolve_precision("int8", NO_UNITS) == "int8"


def test_features_are_read_from_cpuinfo_and_can_be_forced_off(monkeypatch):
    text = "model name\t: Test Xeon\nflags\t\t: fpu avx512f amx_bf16 amx_tile avx512_bf16 avx512_vnni\n"
    monkeypatch.delenv(FEATURES_OFF_ENV, raising=False)
    assert cpu_features(text) == CpuFeatures("Test Xeon", amx=True, avx512_bf16=True, vnni=True)
    monkeypatch.setenv(FEATURES_OFF_ENV, "amx")
    assert cpu_features(text).bf16 and not cpu_features(text).amx
    monkeypatch.setenv(FEATURES_OFF_ENV, "bf16,vnni")
    assert cpu_features(text) == CpuFeatures("Test Xeon", amx=False, avx512_bf16=False, vnni=False)


@settings(max_examples=200, deadline=None)
@given(flags=st.lists(st.sampled_from(["amx_bf16", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx2", "sse4_2"])),
       off=st.text(max_size=30),
       requested=st.one_of(st.none(), st.text(max_size=8), st.sampled_from(OPENVINO_PRECISIONS)))
def test_any_cpu_and_any_precision_resolve_or_say_why(flags, off, requested):
    with pytest.MonkeyPatch.context() as env:
        env.setenv(FEATURES_OFF_ENV, off.replace("\x00", ""))
        resolve_any(flags, off, requested)


def resolve_any(flags: list[str], off: str, requested: str | None) -> None:
    try:
        features = cpu_features("flags\t: " + " ".join(flags) + "\n")
    except UsageError as exc:
        assert "unknown feature" in str(exc) and "\n" not in str(exc)
        return
    assert features.bf16 == ((("amx_bf16" in flags) and not features_hidden(off, "amx"))
                             or (("avx512_bf16" in flags) and not features_hidden(off, "avx512_bf16")))
    try:
        chosen = resolve_precision(requested, features)
    except UsageError as exc:
        assert "\n" not in str(exc)
        assert requested not in (None, "auto", "fp32", "int8")
        return
    assert chosen in OPENVINO_PRECISIONS and (chosen != "bf16" or features.bf16)
    backend = {"precision": chosen, "cpu_features_required": ["bf16"] if chosen == "bf16" else []}
    check_runs_here(backend, features)  # what was built here runs here
    if chosen == "bf16":
        with pytest.raises(EngineError, match="rebuild it here with --precision fp32"):
            check_runs_here(backend, NO_UNITS)


def features_hidden(off: str, name: str) -> bool:
    names = {n.strip().lower() for n in off.split(",")}
    return name in names or (name in ("amx", "avx512_bf16") and "bf16" in names)


def test_large_stages_compile_per_shape_and_equal_the_dynamic_model(openvino_fp32_engines):
    """Static per-shape compiles (what plans activation memory) give the dynamic model's outputs; the stage keeps
    only its most recent shapes."""
    from litefocus_export.backends.openvino.runner import OvStage

    manifest = read_manifest(openvino_fp32_engines)
    assert manifest["stages"]["unet"]["openvino_compile"] == "per_shape"
    assert manifest["stages"]["text_encoder"]["openvino_compile"] == "dynamic"
    path = openvino_fp32_engines / manifest["stages"]["vocoder"]["engine"]
    rng = np.random.default_rng(0)
    mels = [rng.standard_normal((1, 1, frames, 64), dtype=np.float32) for frames in (16, 24, 32, 16)]
    with OvStage(path, static_shapes=True) as static, OvStage(path, static_shapes=False) as dynamic:
        for mel in mels:
            got, want = static({"mel": mel})["waveform"], dynamic({"mel": mel})["waveform"]
            assert got.shape == want.shape and rel(got, want) <= 1e-5
        assert len(static.compiled) == 2 and len(dynamic.compiled) == 1
