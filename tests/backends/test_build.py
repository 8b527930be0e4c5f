"""Engine builds: atomic folders, clear errors for absent backends."""

from __future__ import annotations

from dataclasses import replace

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from litefocus_export.artifacts.manifest import read_manifest
from litefocus_export.backends.build import build_engines
from litefocus_export.backends.onnxruntime.builder import OnnxRuntimeBackend
from litefocus_export.cli import main
from litefocus_export.core.durations import DurationProfile, resolve_attention


def test_interrupted_build_leaves_earlier_engines_and_no_half_folder(tiny_build, monkeypatch):
    engines, _, settings = tiny_build
    before = read_manifest(engines)
    real_build = OnnxRuntimeBackend.build

    def build_then_interrupt(self, export_dir, export_manifest, out):
        real_build(self, export_dir, export_manifest, out)
        raise KeyboardInterrupt

    monkeypatch.setattr(OnnxRuntimeBackend, "build", build_then_interrupt)
    other = replace(settings, profile=DurationProfile(1, 5, 6))
    with pytest.raises(KeyboardInterrupt):
        build_engines(other, engines.parent)
    leftovers = [p.name for p in engines.parent.iterdir() if "5-6s" in p.name or ".partial-" in p.name]
    assert leftovers == []
    assert read_manifest(engines) == before


def test_tensorrt_without_tensorrt_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["build", "--backend", "tensorrt", "--seconds", "10", "--out", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "TensorRT" in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,message", [
    (["--seconds", "0"], "positive"),
    (["--profile", "10:5:20"], "min <= opt <= max"),
    (["--profile", "10"], "MIN:OPT:MAX"),
    (["--seconds", "10", "--profile", "1:2:3"], "not both"),
])
def test_bad_profiles(tmp_path, args, message):
    result = CliRunner().invoke(main, ["build", "--out", str(tmp_path), *args])
    assert result.exit_code == 2 and message in result.output


def test_engine_key_covers_litefocus_settings_and_stages(tiny_build):
    from litefocus_export.backends.build import engine_key

    _, export_dir, settings = tiny_build
    manifest = read_manifest(export_dir)
    backend = {"name": "onnxruntime"}
    key = engine_key(settings, manifest, backend)
    assert key == engine_key(settings, manifest, backend)
    other_ratio = {**manifest, "litefocus": {**manifest["litefocus"], "sparse_ratio": 0.2}}
    unet_only = {**manifest, "stages": {"unet": manifest["stages"]["unet"]}}
    assert len({key, engine_key(settings, other_ratio, backend), engine_key(settings, unet_only, backend)}) == 3
    # the CLI names the attention it was asked for; the API may leave it out: one folder, one key
    named = replace(settings, attention_policy={"requested": settings.export.attention})
    assert engine_key(named, manifest, backend) == key
    auto = replace(settings, attention_policy=resolve_attention("auto", settings.profile.max_s)[1])
    assert engine_key(auto, manifest, backend) != key  # the manifest records the policy that chose it


def test_onnxruntime_engine_runs_the_op_as_multihead_attention(tiny_build):
    """The engine's UNet runs every patched layer as MultiHeadAttention, keeps no contract node or work file."""
    import onnx

    engines, export_dir, _ = tiny_build
    manifest = read_manifest(engines)
    graph = onnx.load(str(engines / "unet.onnx"), load_external_data=False).graph
    ops = [(n.domain, n.op_type) for n in graph.node]
    layers = len(manifest["stages"]["unet"]["litefocus_layers"])
    assert layers > 0 and ops.count(("com.microsoft", "MultiHeadAttention")) >= layers
    assert ("ai.litefocus", "DualSparseAttention") not in ops
    assert manifest["stages"]["unet"]["ort_rewrites"]["dual_sparse_attention"] == layers
    assert manifest["backend"]["graph_rewrites"]["version"] >= 2
    assert not [p.name for p in engines.iterdir() if p.name.startswith(".rewritten-")]
    export_ops = [n.op_type for n in onnx.load(str(export_dir / "unet.onnx"), load_external_data=False).graph.node]
    assert export_ops.count("DualSparseAttention") == layers  # the export keeps the contract


@pytest.mark.parametrize("seconds, chosen", [
    # the full-attention export of every stage (~60 s): in the slow run (default run <= 8 min, issue 23)
    pytest.param("5", "full", marks=pytest.mark.slow),
    ("20", "litefocus"),
])
def test_attention_auto_follows_the_profile_and_is_recorded(tiny_build, tmp_path, request, seconds, chosen):
    """``--attention auto``: full attention for a profile within the training length, LiteFocus past it; the
    manifest says how it was chosen. (Both exports come from the session cache: ``tiny_full_export`` first, so the
    full-attention one there is the verified export other tests read.)"""
    from litefocus_export.core.durations import LITEFOCUS_FROM_SECONDS

    if chosen == "full":
        request.getfixturevalue("tiny_full_export")
    result = CliRunner().invoke(main, ["-q", "build", "--attention", "auto", "--seconds", seconds,
                                       "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    folder = next(p for p in tmp_path.iterdir() if p.name.startswith(f"audioldm2-tiny-{seconds}s-{chosen}-"))
    manifest = read_manifest(folder)
    assert manifest["attention"] == chosen
    assert manifest["attention_policy"] == {"requested": "auto", "litefocus_from_s": LITEFOCUS_FROM_SECONDS,
                                            "longest_s": float(seconds), "chosen": chosen}
    shown = CliRunner().invoke(main, ["inspect", str(folder)]).output
    assert f"-> {chosen}" in shown


@given(requested=st.one_of(st.sampled_from(["auto", "full", "litefocus"]), st.text(max_size=10)),
       seconds=st.floats(min_value=0.5, max_value=600, allow_nan=False))
def test_resolve_attention_decides_or_says_why(requested, seconds):
    from litefocus_export.core.durations import LITEFOCUS_FROM_SECONDS, resolve_attention
    from litefocus_export.core.errors import UsageError

    try:
        chosen, policy = resolve_attention(requested, seconds)
    except UsageError as exc:
        assert requested not in ("auto", "full", "litefocus") and "\n" not in str(exc)
        return
    if requested == "auto":
        assert chosen == ("litefocus" if seconds > LITEFOCUS_FROM_SECONDS else "full") == policy["chosen"]
    else:
        assert chosen == requested and policy == {"requested": requested}
